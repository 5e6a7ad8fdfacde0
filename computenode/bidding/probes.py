"""External job-selection probes: an HTTP endpoint or a shell command asked whether to bid.

Both get Bacalhau's payload `{"node_id", "job_id", "spec", "execution_plan"}`. Unlike Bacalhau,
both are bounded by probe_timeout, and a probe that cannot be reached, crashes or hangs is a
rejection with its reason, never an error out of the bid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Any

import httpx

from computenode.bidding.strategies import Verdict
from computenode.model import Job

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # of a probe's answer; an answer is a small JSON object
MAX_STDERR_BYTES = 64 * 1024  # kept of an exec probe's stderr
MAX_REASON_CHARS = 500  # of a probe's reason in a bid answer
REAP_TIMEOUT_S = 5.0
ENV_NAMES = ("COMPUTENODE_JOB_SELECTION_PROBE_DATA", "BACALHAU_JOB_SELECTION_PROBE_DATA")


def probe_payload(node_id: str, job: Job) -> bytes:
    """The JSON Bacalhau v0.3.23 sends to probes (pkg/bidstrategy/type.go)."""
    spec = job.spec.to_wire()
    return json.dumps(
        {
            "node_id": node_id,
            "job_id": job.id,
            "spec": spec,
            "execution_plan": {"ShardsTotal": job.spec.execution_plan.shards_total},
        }
    ).encode()


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _answer(body: bytes) -> tuple[bool, str] | None:
    """(ShouldBid, Reason) from a JSON answer, matching keys case-insensitively as Go does; None if not one."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    folded = {str(k).lower(): v for k, v in data.items()}
    if not isinstance(folded.get("shouldbid"), bool):
        return None
    reason = folded.get("reason")
    return folded["shouldbid"], reason if isinstance(reason, str) else ""


async def _read_capped(resp: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            break
    return bytes(body[:MAX_BODY_BYTES])


async def http_probe(client: httpx.AsyncClient, url: str, payload: bytes, timeout_s: float) -> Verdict:
    """POST the payload: 200 bids unless a JSON `{"ShouldBid": false, "Reason"}` says no; any other status does not."""
    name, where = "probe_http", f"job_selection.probe_http {url}"
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", url, content=payload, headers={"Content-Type": "application/json"}
            ) as resp:
                body = await _read_capped(resp)
    except TimeoutError:
        return Verdict(name, False, f"{where} did not answer within {timeout_s:g}s")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Verdict(name, False, f"{where} could not be reached: {type(exc).__name__}: {_clip(str(exc))}")
    answer = _answer(body)
    said = f": {_clip(answer[1])}" if answer and answer[1] else ""
    if resp.status_code != 200:
        return Verdict(name, False, f"{where} answered status {resp.status_code}{said}")
    if answer is not None and not answer[0]:
        return Verdict(name, False, f"{where} answered ShouldBid false{said}")
    return Verdict(name, True, f"{where} answered 200{said}")


async def exec_probe(command: str, payload: bytes, timeout_s: float) -> Verdict:
    """`bash -c command` with the payload on stdin and in the environment; exit 0 bids, stderr is the reason.

    The probe runs in its own session; on timeout or cancellation its whole process group is
    killed, so a script's children do not outlive it or hold its pipes open.
    """
    name, where = "probe_exec", "job_selection.probe_exec"
    # Only PATH and the payload, as Bacalhau: the daemon's environment (tokens) stays private.
    env = {"PATH": os.environ.get("PATH", os.defpath)} | dict.fromkeys(ENV_NAMES, payload.decode())
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            env=env,
            start_new_session=True,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    )
    try:
        # Shielded: cancelled mid-spawn, asyncio would kill only bash, then wait for every pipe
        # to close, i.e. for the probe's children to finish on their own.
        proc = await asyncio.shield(spawn)
    except OSError as exc:  # e.g. E2BIG: a spec too large for one environment variable
        return Verdict(name, False, f"{where} could not be started: {exc.strerror or exc}")
    except asyncio.CancelledError:
        spawn.add_done_callback(_kill_spawned)
        raise
    try:
        async with asyncio.timeout(timeout_s):
            stderr, code = await _communicate(proc, payload)
    except TimeoutError:
        return Verdict(name, False, f"{where} did not finish within {timeout_s:g}s and was killed")
    finally:
        await _kill_group(proc)
    said = _clip(stderr.decode(errors="replace"))
    if code == 0:
        return Verdict(name, True, said or f"{where} exited 0")
    status = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return Verdict(name, False, f"{where} {status}" + (f": {said}" if said else ""))


async def _communicate(proc: asyncio.subprocess.Process, payload: bytes) -> tuple[bytes, int]:
    assert proc.stdin is not None and proc.stderr is not None

    async def exit_then_kill_group() -> None:
        await _exited(proc)
        # A child the probe left behind (`cmd &`) would hold stderr open and outlive the bid.
        _signal_group(proc)

    _, stderr, _ = await asyncio.gather(
        _feed(proc.stdin, payload), _drain(proc.stderr), exit_then_kill_group()
    )
    return stderr, await proc.wait()


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Wait for the probe itself to exit. Process.wait() cannot: on Python 3.11 it also waits
    until every pipe is closed, which a left-behind child may never do."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return  # exited and reaped already
    except OSError:  # no pidfd (kernel < 5.3): fall back to the pipes closing
        await proc.wait()
        return
    done: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the probe need not read its stdin
    finally:
        stdin.close()


async def _drain(stream: asyncio.StreamReader) -> bytes:
    """Read to EOF, keeping the first MAX_STDERR_BYTES: a chatty probe must not fill memory or block."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < MAX_STDERR_BYTES:
            kept += chunk[: MAX_STDERR_BYTES - len(kept)]
    return bytes(kept)


def _kill_spawned(spawn: asyncio.Future[asyncio.subprocess.Process]) -> None:
    """Kill a probe whose bid was abandoned while it was being started."""
    if not spawn.cancelled() and spawn.exception() is None:
        proc = spawn.result()
        _signal_group(proc)
        if proc.stdin is not None:
            proc.stdin.close()  # so the transport closes once the group is gone


def _signal_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the probe's process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone already
    except PermissionError:
        log.warning("could not kill probe process group", extra={"pid": proc.pid})


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill what is left of the probe and reap it; bounded, as a child that left the
    session could hold a pipe open forever."""
    _signal_group(proc)
    if proc.returncode is None:
        try:
            async with asyncio.timeout(REAP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            log.warning("probe's pipes still open after kill", extra={"pid": proc.pid})
