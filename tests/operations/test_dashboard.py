"""The dashboard as a person sees it: rendered by headless Chromium while an execution runs."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.node.conftest import RunningNode

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
    shot = tmp_path / "dashboard.png"
    dom = await render(rn.url + "/", shot)
    assert "n-test" in dom and ex["ExecutionID"] in dom and "Running" in dom
    assert shot.exists() and shot.stat().st_size > 1000
    await rn.http.post(f"/api/v1/jobs/{job_id}/cancel")
