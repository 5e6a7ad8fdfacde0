"""A node with docker, wasm and noop, and the official SDK (in .venv-sdk) to drive it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.conftest import RunningNode, node_settings, start_node
from tests.requester.keys import client_key

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("sdk_driver.py")


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """.venv-sdk's python, made (idempotently) by scripts/sdk-venv.sh."""
    script = ROOT / "scripts" / "sdk-venv.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"the Bacalhau SDK virtualenv is missing: run {script}\n{done.stderr[-2000:]}", pytrace=False
        )
    return ROOT / ".venv-sdk" / "bin" / "python"


@pytest.fixture(scope="session", autouse=True)
def _client_keys_made_outside_the_loop() -> None:
    # RSA key generation takes ~50 ms of CPU each: made here (cached) rather than
    # in an async test, where it would block the test's loop (tests/loopblock.py).
    client_key(0), client_key(1)


@pytest.fixture
async def node(tmp_path: Path, ipfs_api: str, docker_host: str) -> AsyncIterator[RunningNode]:
    engines = {"docker": {"enabled": True, "host": docker_host}, "wasm": {"enabled": True},
               "noop": {"enabled": True}}  # fmt: skip
    rn = await start_node(node_settings(tmp_path, ipfs_api, engines=engines))
    yield rn
    if not rn.task.done():
        await rn.stop()


class Sdk:
    """One SDK client (its own BACALHAU_DIR, hence its own key and ClientID)."""

    def __init__(self, python: Path, rn: RunningNode, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        host, port = rn.url.removeprefix("http://").rsplit(":", 1)
        self.python = python
        self.env = {
            **os.environ,
            "BACALHAU_API_HOST": host,
            "BACALHAU_API_PORT": port,
            "BACALHAU_DIR": str(home),
        }
        self.env.pop("PYTHONPATH", None)

    async def __call__(self, op: str, *args: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            str(self.python), str(DRIVER), op, *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 110)
        assert proc.returncode == 0, f"sdk_driver {op} failed:\n{err.decode()[-3000:]}"
        return json.loads(out.decode().strip().splitlines()[-1])

    async def ok(self, op: str, *args: str) -> Any:
        answer = await self(op, *args)
        assert answer["ok"], answer
        return answer["result"]


@pytest.fixture
def sdk(sdk_python: Path, node: RunningNode, tmp_path: Path) -> Sdk:
    return Sdk(sdk_python, node, tmp_path / "client-a")


@pytest.fixture
def other_sdk(sdk_python: Path, node: RunningNode, tmp_path: Path) -> Sdk:
    return Sdk(sdk_python, node, tmp_path / "client-b")
