"""Fixtures for storage and publisher tests: kubo helpers and real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from computenode.storage.ipfs_client import KuboClient

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
def ipfs_add(ipfs_bin: str) -> Callable[..., str]:
    """Add a path (recursively) with the ipfs CLI; the root CID. only_hash=True: a CID kubo lacks."""

    def add(path: Path, *, only_hash: bool = False) -> str:
        cmd = [ipfs_bin, "add", "-Q", "-r", "--pin=false", str(path)]
        if only_hash:
            cmd.insert(2, "--only-hash")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60, env=os.environ)
        return out.stdout.strip()

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
    await client.close()


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


class OnlineKubo:
    """A private kubo that runs online (not --offline) yet can reach no one but loopback.

    The test bed's kubo is --offline, where a missing block fails at once; here
    bitswap waits for a peer that never comes, as on a real network. No
    bootstrap peers, no MDNS, no routing, no NAT port mapping, no relay, swarm
    on 127.0.0.1 only: it never contacts a non-loopback address.
    """

    def __init__(self, ipfs_bin: str, root: Path) -> None:
        self.bin, self.root = ipfs_bin, root
        self.env = {"IPFS_PATH": str(root / "repo"), "PATH": "/usr/bin:/bin", "HOME": str(root)}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.api = f"/ip4/127.0.0.1/tcp/{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        out = subprocess.run([self.bin, *args], env=self.env, check=True, capture_output=True, timeout=60)
        return out.stdout.decode().strip()

    def start(self) -> None:
        self.cli("init", "--profile", "test")
        for key, value in (
            ("Addresses.API", f'"{self.api}"'),
            ("Addresses.Gateway", "[]"),
            ("Addresses.Swarm", '["/ip4/127.0.0.1/tcp/0"]'),
            ("Bootstrap", "[]"),
            ("Discovery.MDNS.Enabled", "false"),
            ("Routing.Type", '"none"'),
            ("Swarm.DisableNatPortMap", "true"),
            ("Swarm.RelayClient.Enabled", "false"),
            ("Swarm.Transports.Network.Relay", "false"),
            ("AutoNAT.ServiceMode", '"disabled"'),
        ):
            self.cli("config", "--json", key, value)
        log = open(self.root / "kubo.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.bin, "daemon"], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v0/version", method="POST")
                with urllib.request.urlopen(req, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError(
            "private online kubo did not start: " + (self.root / "kubo.log").read_text()[-2000:]
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


@pytest.fixture(scope="module")
def online_kubo(ipfs_bin: str) -> Iterator[OnlineKubo]:
    """An isolated online kubo for this module's tests, stopped (and its repo removed) after them."""
    root = Path(tempfile.mkdtemp(prefix="cnk-", dir="/tmp"))  # short: kubo's repo holds unix sockets
    kubo = OnlineKubo(ipfs_bin, root)
    try:
        kubo.start()
        yield kubo
    finally:
        kubo.stop()
        shutil.rmtree(root, ignore_errors=True)
