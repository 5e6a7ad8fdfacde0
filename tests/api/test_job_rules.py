"""Spec errors and counts over the node's limits are 400s naming the field, at submission and at
bid time, and nothing is stored or run for them."""

from __future__ import annotations

from typing import Any

import pytest

BUSYBOX = "127.0.0.1:5000/busybox:1"


def docker(**spec: Any) -> dict[str, Any]:
    return {"Spec": {"Engine": "Docker", "Docker": {"Image": BUSYBOX, "Entrypoint": ["true"]}, **spec}}


def with_docker(**section: Any) -> dict[str, Any]:
    return {"Spec": {"Engine": "Docker", "Docker": {"Image": BUSYBOX, **section}}}


def out(name: str, path: str) -> dict[str, str]:
    return {"StorageSource": "IPFS", "Name": name, "path": path}


def inline(path: str) -> dict[str, str]:
    return {"StorageSource": "Inline", "URL": "data:text/plain,hi", "path": path}


CASES = [
    (
        "Spec.Deal.Concurrency",
        "1000000 is over the maximum 16 (limits.max_concurrency)",
        docker(Deal={"Concurrency": 1_000_000}),
    ),
    (
        "Spec.inputs",
        "is over the maximum 100 (limits.max_inputs)",
        docker(inputs=[inline(f"/in/{i}") for i in range(101)]),
    ),
    (
        "Spec.outputs",
        "is over the maximum 100 (limits.max_outputs)",
        docker(outputs=[out(f"o{i}", f"/o/{i}") for i in range(101)]),
    ),
    ("Spec.Docker.Entrypoint", "it is empty", with_docker(Entrypoint=[])),
    ("Spec.Docker.Entrypoint", "it is empty", with_docker(Entrypoint=[""])),
    (
        "Spec.Docker.Image",
        "is not a valid image reference",
        {"Spec": {"Engine": "Docker", "Docker": {"Image": "UPPER CASE!"}}},
    ),
    ("Spec.inputs.0.path", "would hide the job's own /", docker(inputs=[inline("/")])),
    ("Spec.inputs.0.path", "would hide the job's own /proc", docker(inputs=[inline("/proc/self")])),
    ("Spec.outputs.0.path", "is not an absolute path", docker(outputs=[out("o", "relative/dir")])),
    ("Spec.outputs.0.Name", "would leave the results dir", docker(outputs=[out("../etc", "/o")])),
    (
        "Spec.outputs.1.Name",
        "is the Name of another output",
        docker(outputs=[out("o", "/a"), out("o", "/b")]),
    ),
    (
        "Spec.outputs.1.path",
        "is the path of another output",
        docker(outputs=[out("a", "/o"), out("b", "/o/")]),
    ),
]


@pytest.mark.parametrize(("field", "message", "job"), CASES, ids=[f"{c[0]}:{c[1][:24]}" for c in CASES])
async def test_broken_rule_is_a_400_naming_the_field(
    make_node: Any, field: str, message: str, job: dict[str, Any]
) -> None:
    rn = await make_node(engines={"docker": {"enabled": False}})
    for path, body in (
        ("/api/v1/jobs", job),
        (
            "/api/v1/compute/ask_for_bid",
            {"Job": job, "ShardIndexes": [0], "CallbackURL": "http://127.0.0.1:9/r"},
        ),
    ):
        resp = await rn.http.post(path, json=body)
        assert resp.status_code == 400, (path, resp.text)
        errors = resp.json()["errors"]
        assert any(e["field"] == field and message in e["message"] for e in errors), (path, errors)
    assert await rn.node.store.jobs() == [] and await rn.node.store.executions() == []


async def test_limits_are_the_operators(make_node: Any) -> None:
    rn = await make_node(limits={"max_concurrency": 2})
    noop = {"Spec": {"Engine": "Noop", "Publisher": "Noop", "Deal": {"Concurrency": 3}}}
    resp = await rn.http.post("/api/v1/jobs", json=noop)
    assert resp.status_code == 400 and "over the maximum 2" in resp.json()["errors"][0]["message"]
    noop["Spec"]["Deal"] = {"Concurrency": 2}
    created = await rn.http.post("/api/v1/jobs", json=noop)
    assert created.status_code == 201 and len(created.json()["Executions"]) == 2
