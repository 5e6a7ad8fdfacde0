"""Parsing costs stay bounded: each bomb is a 400 naming the problem, on every endpoint that
reads a body, and the node keeps answering /healthz meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

POST_PATHS = [
    "/api/v1/jobs",
    "/api/v1/node/drain",
    *(f"/api/v1/compute/{n}" for n in ("ask_for_bid", "bid_accepted", "bid_rejected", "cancel")),
    *(f"/api/v1/compute/{n}" for n in ("result_accepted", "result_rejected")),
    *(f"/requester/{n}" for n in ("submit", "states", "results", "list", "events", "cancel")),
]
DEEP_JSON = "[" * 10_000 + "]" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
YAML_BOMB = LAUGHS + "Spec: {Engine: Noop, Annotations: *i}\n"


def resources(**r: str) -> dict[str, Any]:
    return {"Spec": {"Engine": "Noop", "Resources": r}}


QUANTITY_BOMBS = {
    "Spec.Resources.CPU": resources(CPU="1e999999"),
    "Spec.Resources.Memory": resources(Memory="1e999999"),
    "Spec.Resources.Disk": resources(Disk="1e400"),
    "Spec.Resources.GPU": resources(GPU="9" * 16_000),
    "Spec.Resources.CPU ": resources(CPU="1" * 16_000),
}


async def _healthz_while(rn: Any, work: Any) -> float:
    """Run `work` while polling /healthz; the slowest /healthz answer, in seconds."""
    slowest = 0.0
    task = asyncio.ensure_future(work)
    while not task.done():
        start = time.monotonic()
        assert (await rn.http.get("/healthz")).status_code == 200
        slowest = max(slowest, time.monotonic() - start)
        await asyncio.sleep(0.01)
    await task
    return slowest


@pytest.mark.parametrize("body", [DEEP_JSON, DEEP_OBJECT], ids=["deep-array", "deep-object"])
async def test_deep_json_is_a_400_on_every_endpoint(make_node: Any, body: str) -> None:
    rn = await make_node()

    async def bombard() -> None:
        for path in POST_PATHS:
            resp = await rn.http.post(path, content=body, headers={"Content-Type": "application/json"})
            assert resp.status_code == 400, (path, resp.status_code, resp.text)
            assert resp.json()["errors"], path

    assert await _healthz_while(rn, bombard()) < 1.0


async def test_yaml_alias_bomb_is_refused(make_node: Any) -> None:
    rn = await make_node()

    async def bombard() -> None:
        resp = await rn.http.post(
            "/api/v1/jobs", content=YAML_BOMB, headers={"Content-Type": "application/yaml"}
        )
        assert resp.status_code == 400, resp.text
        assert "aliases are not accepted" in resp.json()["errors"][0]["message"]

    assert await _healthz_while(rn, bombard()) < 1.0


async def test_quantity_bombs_name_their_field(make_node: Any) -> None:
    rn = await make_node()

    async def bombard() -> None:
        for field, job in QUANTITY_BOMBS.items():
            for path, body in (
                ("/api/v1/jobs", job),
                ("/api/v1/compute/ask_for_bid", {"Job": job, "ShardIndexes": [0]}),
            ):
                resp = await rn.http.post(path, content=json.dumps(body))
                assert resp.status_code == 400, (path, resp.text)
                assert [e["field"] for e in resp.json()["errors"]] == [field.strip()], resp.text

    assert await _healthz_while(rn, bombard()) < 1.0
    assert (await rn.http.get("/api/v1/executions")).json()["Executions"] == []
