"""A real Go Bacalhau v0.3.23 requester for one test (the test bed builds the binary).

``Requester`` runs ``bacalhau serve --node-type requester --peer none`` on loopback with a
BACALHAU_PATH of its own (so its peer ID stays the same across ``restart()``), free ports
and the test bed's kubo (``--ipfs-connect``), and drives the bacalhau CLI against it.

Everything that waits is async and never blocks the event loop (the test suite fails a
test whose loop is blocked): the process is spawned with ``subprocess.Popen`` (a fork and
exec, and it may outlive the loop of the test that started it), its readiness is polled
with ``asyncio.sleep``, the CLI runs as an asyncio subprocess.

The requester listens on every interface whatever ``--host`` says, and advertises them
all: a worker under test must dial only ``Requester.multiaddr`` (loopback).

CLI note: without BACALHAU_ENVIRONMENT the binary assumes "production", whose IPFS swarm
is public; ``bacalhau get`` must therefore be given ``--ipfs-swarm-addrs`` with a
loopback address (the other commands only talk to the requester's API).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0
_HOST_ID = re.compile(rb"host-id:([A-Za-z0-9]+)")


class RequesterError(AssertionError):
    """The requester or its CLI did not do what the test needed (fails the test)."""


def free_port(taken: Iterable[int] = ()) -> int:
    """A port free for TCP and UDP on every interface (the swarm also listens on QUIC)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("0.0.0.0", 0))
            port = int(tcp.getsockname()[1])
            if port in taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("0.0.0.0", port))
                except OSError:
                    continue
            return port
    raise RequesterError("no free port found")


class Requester:
    """One Go requester on loopback; ``await start()``, ``await stop()`` (always)."""

    def __init__(
        self,
        bin: str,
        root: Path,
        ipfs_api: str,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        node_type: str = "requester",
    ) -> None:
        self.bin = bin
        self.node_type = node_type
        self.root = root
        self.ipfs_api = ipfs_api
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.path = root / "path"  # BACALHAU_PATH of the server: its key, so its peer ID
        self.cli_path = root / "cli"  # BACALHAU_PATH of the CLI (its user key)
        self.home = root / "home"
        self.log_path = root / "requester.log"
        for d in (self.path, self.cli_path, self.home):
            d.mkdir(parents=True, exist_ok=True)
        self.swarm_port = free_port()
        self.api_port = free_port(taken=(self.swarm_port,))
        self.peer_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses ------------------------------------------------------------------------------
    @property
    def multiaddr(self) -> str:
        """``/ip4/127.0.0.1/tcp/P/p2p/<peer id>``: the only address a worker may dial."""
        if not self.peer_id:
            raise RequesterError("the requester has not started yet")
        return f"/ip4/{HOST}/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def log_text(self) -> str:
        """The whole log (every start, appended)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def _env(self, bacalhau_path: Path) -> dict[str, str]:
        # HOME: the v0.3.23 CLI prints nothing and exits 1 without it.
        env = {
            "HOME": str(self.home),
            "BACALHAU_PATH": str(bacalhau_path),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        env.update(self.extra_env)
        return env

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start it and wait until its log names its peer ID and GET /node_info answers."""
        if self.running:
            raise RequesterError("the requester is already running")
        argv = [
            self.bin, "serve", "--node-type", self.node_type, "--peer", "none",
            "--host", HOST, "--swarm-port", str(self.swarm_port), "--api-port", str(self.api_port),
            "--ipfs-connect", self.ipfs_api, *self.extra_args,
        ]  # fmt: skip
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"==== start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, env=self._env(self.path), cwd=self.root, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        try:
            await self._wait_ready(offset, timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, offset: int, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        peer_id = ""
        async with httpx.AsyncClient(base_url=self.api_url, timeout=2.0, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RequesterError(
                        f"the requester exited with {self.proc.returncode} before it was ready; "
                        f"log {self.log_path}:\n{self._tail()}"
                    )
                if not peer_id:
                    with open(self.log_path, "rb") as f:
                        f.seek(offset)
                        m = _HOST_ID.search(f.read())
                    peer_id = m.group(1).decode() if m else ""
                if peer_id:
                    try:
                        r = await client.get("/node_info")
                        if r.status_code == 200:
                            self.peer_id = peer_id
                            return
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    raise RequesterError(
                        f"the requester was not ready after {timeout:.0f}s (peer id {peer_id or 'not logged'}); "
                        f"log {self.log_path}:\n{self._tail()}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """TERM, then KILL after ``timeout``; the process is always reaped."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                self._signal(proc, signal.SIGKILL)
                while proc.poll() is None:
                    await asyncio.sleep(0.05)
        proc.wait()  # reaped already (poll), closes nothing else

    def kill(self) -> None:
        """Synchronous last resort (fixture finalizers): KILL and reap."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal(proc, signal.SIGKILL)
            proc.wait(30)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:  # its own session: signal the group (it starts no children, but be sure)
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    async def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop and start again with the same BACALHAU_PATH and ports: the same peer ID."""
        await self.stop()
        await self.start(timeout)

    # -- the CLI --------------------------------------------------------------------------------
    async def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> tuple[int, str, str]:
        """Run ``bacalhau --api-host 127.0.0.1 --api-port Q ARGS...``: (exit code, stdout, stderr).

        The API flags are root flags, placed first (so before any ``--``). Errors of the
        v0.3.23 CLI go to stdout, with exit code 1.
        """
        argv = [self.bin, "--api-host", HOST, "--api-port", str(self.api_port), *args]
        proc = await asyncio.create_subprocess_exec(
            *argv, env=self._env(self.cli_path), cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def cli_ok(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """``cli`` that must exit 0; its stdout."""
        rc, out, err = await self.cli(*args, timeout=timeout)
        if rc != 0:
            raise RequesterError(f"bacalhau {' '.join(args)} exited {rc}:\n{out}{err}")
        return out

    async def submit(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """Submit a job without waiting; its ID.

        ``args`` start with the engine: ``submit("docker", "run", IMAGE, "--", "echo", "hi")``
        or ``submit("wasm", "run", MODULE, ...)``.
        """
        if len(args) < 2 or args[1] != "run":
            raise ValueError(f"submit takes ENGINE run ...: got {args!r}")
        rest = list(args[2:])
        cut = rest.index("--") if "--" in rest else len(rest)
        argv = [args[0], "run", "--wait=false", "--id-only", *rest[:cut], *rest[cut:]]
        out = (await self.cli_ok(*argv, timeout=timeout)).strip()
        job_id = out.splitlines()[-1].strip() if out else ""
        if not re.fullmatch(r"[0-9a-f-]{8,}", job_id):
            raise RequesterError(f"bacalhau {' '.join(argv)} printed no job ID: {out!r}")
        return job_id

    async def describe(self, job_id: str) -> dict[str, Any]:
        """``bacalhau describe --json ID``: ``{Job, State: {State, Shards: {...}}}``."""
        out = await self.cli_ok("describe", "--json", job_id)
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise RequesterError(
                f"bacalhau describe --json {job_id} printed no JSON: {out[:2000]!r}"
            ) from exc
        if not isinstance(data, dict):
            raise RequesterError(f"bacalhau describe --json {job_id}: {out[:2000]!r}")
        return data

    async def wait_state(
        self, job_id: str, states: str | Iterable[str], timeout: float = 60.0, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll ``describe`` until the job's State.State is one of ``states``; the last describe."""
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while True:
            last = await self.describe(job_id)
            state = (last.get("State") or {}).get("State")
            if state in wanted:
                return last
            if time.monotonic() > deadline:
                raise RequesterError(
                    f"job {job_id} is {state!r} after {timeout:.0f}s, not one of {sorted(wanted)}; "
                    f"describe: {json.dumps(last)[:3000]}\nrequester log {self.log_path}:\n{self._tail()}"
                )
            await asyncio.sleep(interval)
