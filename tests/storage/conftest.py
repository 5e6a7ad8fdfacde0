"""Fixtures for storage and publisher tests: kubo helpers and real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from computenode.storage.ipfs_client import KuboClient
from tests.services import PrivateKubo

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
def ipfs_add(ipfs_bin: str) -> Callable[..., Awaitable[str]]:
    """Add a path (recursively) with the ipfs CLI; the root CID. only_hash=True: a CID kubo lacks.

    A coroutine: adding a big tree takes seconds the test's loop must not spend blocked
    (tests/loopblock.py).
    """

    async def add(path: Path, *, only_hash: bool = False) -> str:
        cmd = [ipfs_bin, "add", "-Q", "-r", "--pin=false", str(path)]
        if only_hash:
            cmd.insert(2, "--only-hash")
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=os.environ
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    return add


@pytest.fixture
def ipfs_cli(ipfs_bin: str) -> Callable[..., bytes]:
    def run(*args: str) -> bytes:
        return subprocess.run([ipfs_bin, *args], check=True, capture_output=True, timeout=60).stdout

    return run


@pytest_asyncio.fixture
async def kubo(ipfs_api: str) -> AsyncIterator[KuboClient]:
    client = KuboClient(ipfs_api)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp app on 127.0.0.1 (a free port); its base URL. Stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(scope="module")
def online_kubo(ipfs_bin: str) -> Iterator[PrivateKubo]:
    """An isolated online kubo for this module's tests, stopped (and its repo removed) after them."""
    root = Path(tempfile.mkdtemp(prefix="cnk-", dir="/tmp"))  # short: kubo's repo holds unix sockets
    kubo = PrivateKubo(ipfs_bin, root)
    try:
        kubo.start()
        yield kubo
    finally:
        kubo.stop()
        shutil.rmtree(root, ignore_errors=True)
