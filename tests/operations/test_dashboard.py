"""The dashboard as a person sees it: rendered by headless Chromium while an execution runs."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.node.conftest import RunningNode

REPO = Path(__file__).resolve().parents[2]

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/testbed.sh up (it installs Debian's chromium)")
    return path


async def render(url: str, screenshot: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        shot = await asyncio.create_subprocess_exec(
            chromium(), *flags, f"--screenshot={screenshot}", "--window-size=1200,900", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(shot.wait(), 60)
        dom = await asyncio.create_subprocess_exec(
            chromium(),
            *flags,
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(dom.communicate(), 60)
    return out.decode()


async def test_dashboard_shows_node_and_running_execution(make_node, tmp_path: Path) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "60s"}})
    job_id = (await rn.http.post("/api/v1/jobs", json={"Spec": {"Engine": "Noop"}})).json()["JobID"]
    [ex] = (await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]
    await rn.wait_execution(ex["ExecutionID"], {"Running"})
    # A finished job too, published by the local publisher: its row links to the results.
    hello = (REPO / "examples" / "hello-wasm.yaml").read_bytes()
    done_id = (await rn.http.post("/api/v1/jobs", content=hello)).json()["JobID"]
    assert (await rn.wait_job(done_id))["State"] == "Completed"
    [done] = (await rn.http.get(f"/api/v1/executions?job_id={done_id}")).json()["Executions"]
    shot = tmp_path / "dashboard.png"
    dom = await render(rn.url + "/", shot)
    assert "n-test" in dom and ex["ExecutionID"] in dom and "Running" in dom
    assert shot.exists() and shot.stat().st_size > 1000
    # Units and words, not raw numbers and Python booleans.
    assert "2 cores" in dom and "2.0 GiB" in dom and "10.0 GiB" in dom
    assert "Draining no" in dom and "False" not in dom and "True" not in dom
    # The running execution's latest progress, from the event bus.
    assert "<b>running</b>" in dom
    # Links to logs and results.
    eid, did = ex["ExecutionID"], done["ExecutionID"]
    assert f'href="/api/v1/executions/{eid}/logs"' in dom
    assert f'href="/api/v1/executions/{eid}/logs?stream=stderr"' in dom
    results = done["PublishedResults"]["URL"]
    assert results and f'href="{results}"' in dom
    assert (await rn.http.get(f"/api/v1/executions/{did}/logs")).text == "hello from wasm\n"
    # Readable without JavaScript: the node sends none.
    page = (await rn.http.get("/")).text
    assert "<script" not in page.lower()
    await rn.http.post(f"/api/v1/jobs/{job_id}/cancel")
