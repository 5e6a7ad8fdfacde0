"""Spike for issue 12: can py-libp2p (trio, on its own thread) act as a Bacalhau
v0.3.23 compute node toward an unmodified Go requester?

Not part of the package or the tests. Runs in its own venv:

    python3 -m venv .venv-net && .venv-net/bin/pip install libp2p==0.8.1
    eval "$(scripts/bacalhau.sh serve)"      # a requester on loopback
    .venv-net/bin/python spikes/libp2p_probe.py --requester "$COMPUTENODE_TEST_REQUESTER" \
        --api 127.0.0.1:11234 --bacalhau "$COMPUTENODE_TEST_BACALHAU_BIN" [--phase identify|gossip|both]

What it does (each step prints one `[probe] STEP ...` line with timing):
  1. starts a py-libp2p host (Ed25519, Noise+TLS, yamux, TCP on 127.0.0.1) in a
     trio thread, with handlers for the six /bacalhau/compute/* protocols that
     call into the asyncio loop of the main thread (the bridge the daemon will use);
  2. dials the requester, runs identify toward it and prints its protocols;
  3. phase "identify": submits a job with no selector and waits for an
     ask_for_bid stream from the requester (identify-only discovery, i.e. the
     requester identified us); the fake compute side accepts, answers
     bid_accepted, calls back on_run_complete, answers result_accepted and calls
     back on_publish_complete, and the job should reach Completed;
  5. phase "dialback": publishes NodeInfo, hangs up, and submits a job: the requester
     has to dial our listen address (inbound to py-libp2p).
  4. phase "gossip": publishes NodeInfo with a label on bacalhau-node-info and
     submits a job with `-s spike=gossip`: only a requester that received the
     NodeInfo can rank us (labels come only from NodeInfo).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS
from libp2p.security.tls.transport import TLSTransport
from libp2p.tools.anyio_service import background_trio_service

T0 = time.monotonic()


def say(step: str, msg: str) -> None:
    print(f"[probe {time.monotonic() - T0:7.2f}s] {step}: {msg}", flush=True)


COMPUTE = {
    name: TProtocol(f"/bacalhau/compute/{name}/1.0.0")
    for name in (
        "ask_for_bid",
        "bid_accepted",
        "bid_rejected",
        "result_accepted",
        "result_rejected",
        "cancel",
    )
}
CALLBACK = {
    name: TProtocol(f"/bacalhau/callback/{name}/1.0.0")
    for name in ("on_run_complete", "on_publish_complete", "on_cancel_complete", "on_compute_failure")
}
NODE_INFO_TOPIC = "bacalhau-node-info"
GOSSIPSUB = [TProtocol(f"/meshsub/{v}") for v in ("1.1.0", "1.0.0")]


def muxer_option(name: str) -> Any:
    """yamux: py-libp2p's default (yamux, then mplex). mplex: mplex only (its own option
    create_mplex_muxer_option still falls back to yamux)."""
    if name == "mplex":
        from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex

        return {TProtocol(MPLEX_PROTOCOL_ID): Mplex}
    return create_yamux_muxer_option()


# ----------------------------------------------------------------- the bridge
class TrioThread:
    """py-libp2p's host on its own thread with a trio loop; the asyncio side
    calls into it with `call` (never blocks the asyncio loop) and the trio side
    calls asyncio handlers with `to_asyncio` (never blocks the trio loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.ready = threading.Event()
        self.stop_event: trio.Event | None = None
        self.thread: threading.Thread | None = None

    def start(self, main: Callable[[TrioThread], Awaitable[None]]) -> None:
        async def runner() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self.stop_event = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(main, self)
                await self.stop_event.wait()
                nursery.cancel_scope.cancel()

        self.thread = threading.Thread(target=trio.run, args=(runner,), name="libp2p-trio", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.token is not None and self.stop_event is not None:
            self.token.run_sync_soon(self.stop_event.set)
        if self.thread is not None:
            self.thread.join(10)

    async def call(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """From asyncio: run afn(*args) as a trio task; await its result."""
        fut: asyncio.Future[Any] = self.loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        async def task() -> None:
            try:
                value = await afn(*args)
            except BaseException as exc:  # noqa: BLE001 - carried to the caller
                self.loop.call_soon_threadsafe(settle, False, exc)
                if isinstance(exc, trio.Cancelled):
                    raise
            else:
                self.loop.call_soon_threadsafe(settle, True, value)

        assert self.token is not None and self.nursery is not None
        nursery = self.nursery
        self.token.run_sync_soon(lambda: nursery.start_soon(task))
        return await fut

    async def to_asyncio(self, coro: Awaitable[Any]) -> Any:
        """From trio: run a coroutine on the asyncio loop; await its result
        without a thread (the done-callback wakes the trio task)."""
        cfut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        cfut.add_done_callback(lambda _f: token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            cfut.cancel()
            raise
        return cfut.result()


# ----------------------------------------------------------------- framing
async def read_one_json(stream: Any, limit: int = 16 << 20) -> Any:
    """The requester writes one JSON value and keeps its side open: decode
    incrementally, do not wait for EOF."""
    buf = b""
    dec = json.JSONDecoder()
    while True:
        try:
            chunk = await stream.read(65536)
        except StreamEOF:
            chunk = b""
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ValueError("request too large")
        text = buf.decode("utf-8", errors="strict") if _utf8_complete(buf) else None
        if text is None or not text.strip():
            continue
        try:
            value, _end = dec.raw_decode(text.lstrip())
            return value
        except json.JSONDecodeError:
            continue
    return json.loads(buf)  # EOF: whole body (raises if incomplete)


def _utf8_complete(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ----------------------------------------------------------------- the node
class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.bridge = TrioThread(self.loop)
        self.host: Any = None
        self.pubsub: Any = None
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.executions: dict[str, dict[str, Any]] = {}
        self.host_ready = asyncio.Event()
        self.requester_pid: Any = None

    # --- trio side
    async def trio_main(self, bridge: TrioThread) -> None:
        kp = ed25519_key_pair()
        sec: dict[TProtocol, Any] = {}
        for name in self.args.security.split(","):
            if name == "noise":
                sec[NOISE] = NoiseTransport(kp, noise_privkey=x25519_key_pair().private_key)
            elif name == "tls":
                sec[TLS] = TLSTransport(kp)
        listen = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{self.args.port}")
        host = new_host(
            key_pair=kp,
            sec_opt=sec,
            muxer_opt=muxer_option(self.args.muxer),
            listen_addrs=[listen],
        )
        for name, proto in COMPUTE.items():
            host.set_stream_handler(proto, self._make_handler(name))
        gossipsub = GossipSub(
            protocols=GOSSIPSUB,
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,
            heartbeat_initial_delay=0.5,
        )
        pubsub = Pubsub(host, gossipsub, strict_signing=True)
        async with host.run(listen_addrs=[listen]):
            async with background_trio_service(pubsub), background_trio_service(gossipsub):
                await pubsub.wait_until_ready()
                self.host, self.pubsub = host, pubsub
                # Subscribing is what makes us a mesh peer of the topic; Go's
                # node also subscribes (it reads others' NodeInfo).
                self.sub = await pubsub.subscribe(NODE_INFO_TOPIC)
                self.loop.call_soon_threadsafe(self.host_ready.set)
                await trio.sleep_forever()

    def _make_handler(self, name: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(stream: Any) -> None:
            t = time.monotonic()
            try:
                req = await read_one_json(stream)
                remote = str(stream.muxed_conn.peer_id)
                resp = await self.bridge.to_asyncio(self.on_request(name, remote, req))
                await stream.write(json.dumps(resp).encode() + b"\n")
                await stream.close()
                say("stream", f"{name} answered in {1000 * (time.monotonic() - t):.1f} ms")
            except Exception as exc:  # noqa: BLE001 - a spike: print and reset
                say("stream", f"{name} FAILED {type(exc).__name__}: {exc}; resetting")
                await stream.reset()

        return handler

    async def trio_connect(self, addr: str) -> list[str]:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await self.host.connect(info)
        conn = self.host.get_network().connections.get(info.peer_id)
        if isinstance(conn, list):
            conn = conn[0] if conn else None
        detail = []
        if conn is not None:
            mc = conn.muxed_conn
            detail.append(f"muxer={type(mc).__name__}")
            sc = getattr(mc, "secured_conn", None)
            if sc is not None:
                detail.append(f"security={type(sc).__name__}")
        return detail

    async def trio_identify(self, addr: str) -> dict[str, Any]:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        stream = await self.host.new_stream(info.peer_id, [IDENTIFY])
        data = b""
        while True:
            try:
                chunk = await stream.read(65536)
            except StreamEOF:
                break
            if not chunk:
                break
            data += chunk
        await stream.close()
        # varint length prefix (go-libp2p's identify uses delimited protobuf)
        n, shift, i = 0, 0, 0
        while True:
            b = data[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
        msg = Identify()
        msg.ParseFromString(data[i : i + n])
        return {
            "agent": msg.agent_version,
            "protocol_version": msg.protocol_version,
            "protocols": list(msg.protocols),
            "listen": [str(multiaddr.Multiaddr(a)) for a in msg.listen_addrs],
        }

    async def trio_disconnect(self, addr: str) -> None:
        await self.host.disconnect(info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id)

    async def trio_connected(self) -> list[str]:
        return [str(p) for p in self.host.get_network().connections]

    async def trio_publish(self, data: bytes) -> None:
        await self.pubsub.publish(NODE_INFO_TOPIC, data)

    async def trio_callback(self, peer: str, name: str, body: dict[str, Any]) -> None:
        from libp2p.peer.id import ID

        stream = await self.host.new_stream(ID.from_base58(peer), [CALLBACK[name]])
        await stream.write(json.dumps(body).encode())
        await stream.close()

    async def trio_mesh(self) -> dict[str, Any]:
        ps = self.pubsub
        return {
            "topic_peers": {t: [str(p) for p in v] for t, v in ps.peer_topics.items()},
            "pubsub_peers": [str(p) for p in ps.peers],
        }

    # --- asyncio side (stands in for computenode's Compute)
    async def on_request(self, name: str, remote: str, req: dict[str, Any]) -> dict[str, Any]:
        await self.events.put((name, req))
        if name == "ask_for_bid":
            job = req.get("Job") or {}
            job_id = (job.get("Metadata") or {}).get("ID", "")
            shards = []
            for idx in req.get("ShardIndexes") or [0]:
                eid = f"e-{uuid.uuid4()}"
                self.executions[eid] = {"job": job_id, "shard": idx, "requester": remote}
                shards.append(
                    {"ExecutionID": eid, "JobID": job_id, "ShardIndex": idx, "Accepted": True, "Reason": ""}
                )
            say(
                "compute",
                f"ask_for_bid from {remote[:12]}… job {job_id} shards {req.get('ShardIndexes')} "
                f"engine {(job.get('Spec') or {}).get('Engine')}: accepted",
            )
            return {"ShardResponse": shards}
        eid = req.get("ExecutionID", "")
        ex = self.executions.get(eid, {"job": "", "shard": 0, "requester": remote})
        meta = {"ExecutionID": eid, "JobID": ex["job"], "ShardIndex": ex["shard"]}
        say("compute", f"{name} for {eid}")
        if name == "bid_accepted":
            asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(self.run_complete(eid)))
        elif name == "result_accepted":
            asyncio.get_running_loop().call_later(
                0.2, lambda: asyncio.ensure_future(self.publish_complete(eid))
            )
        return meta

    def _routing(self, eid: str) -> dict[str, Any]:
        ex = self.executions[eid]
        return {
            "SourcePeerID": str(self.host.get_id()),
            "TargetPeerID": ex["requester"],
            "ExecutionID": eid,
            "JobID": ex["job"],
            "ShardIndex": ex["shard"],
        }

    async def run_complete(self, eid: str) -> None:
        body = self._routing(eid) | {
            "ResultProposal": None,
            "RunCommandResult": {
                "stdout": "hello from the py-libp2p spike\n",
                "stdouttruncated": False,
                "stderr": "",
                "stderrtruncated": False,
                "exitCode": 0,
                "runnerError": "",
            },
        }
        await self.bridge.call(self.trio_callback, self.executions[eid]["requester"], "on_run_complete", body)
        say("callback", f"on_run_complete sent for {eid}")

    async def publish_complete(self, eid: str) -> None:
        body = self._routing(eid) | {
            "PublishResult": {
                "StorageSource": "IPFS",
                "Name": f"job-{self.executions[eid]['job']}",
                "CID": "QmTVmC7JBD2ES2qGPqBNVWnX1KeEPNrPGb7rJ8cpFgtefe",
            }
        }
        await self.bridge.call(
            self.trio_callback, self.executions[eid]["requester"], "on_publish_complete", body
        )
        say("callback", f"on_publish_complete sent for {eid}")

    def node_info(self) -> bytes:
        pid = str(self.host.get_id())
        cap = {"CPU": 2, "Memory": 4 << 30, "Disk": 20 << 30, "GPU": 0}
        return json.dumps(
            {
                "BacalhauVersion": {
                    "major": "0",
                    "minor": "3",
                    "gitversion": "v0.3.23",
                    "gitcommit": "",
                    "builddate": "2023-01-01T00:00:00Z",
                    "goos": "linux",
                    "goarch": "amd64",
                },
                "PeerInfo": {"ID": pid, "Addrs": [f"/ip4/127.0.0.1/tcp/{self.args.port}"]},
                "NodeType": 1,
                "Labels": {"spike": "gossip"},
                "ComputeNodeInfo": {
                    "ExecutionEngines": ["Docker", "Wasm"],
                    "MaxCapacity": cap,
                    "AvailableCapacity": cap,
                    "MaxJobRequirements": cap,
                    "RunningExecutions": 0,
                    "EnqueuedExecutions": 0,
                },
            }
        ).encode()

    # --- the CLI
    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run the bacalhau CLI; the API flags go before a `--` (after it they are the job's command)."""
        host, port = self.args.api.split(":")
        api = ["--api-host", host, "--api-port", port]
        argv_l = list(argv)
        at = argv_l.index("--") if "--" in argv_l else len(argv_l)
        cmd = [self.args.bacalhau, *argv_l[:at], *api, *argv_l[at:]]
        # Without HOME the v0.3.23 CLI exits 1 and prints nothing.
        env = {
            "BACALHAU_PATH": self.args.cli_path,
            "PATH": "/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
        }
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)

    async def submit_and_wait(self, label: str, extra: list[str], timeout: float | None = None) -> str:
        t = time.monotonic()
        r = await asyncio.to_thread(
            self.cli, "docker", "run", "--wait=false", "--id-only", *extra, "ubuntu", "--", "echo", "hi"
        )
        job = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        say(
            label,
            f"submit rc={r.returncode} job={job!r} out={r.stdout.strip()[:300]!r} err={r.stderr.strip()[:300]!r}",
        )
        if r.returncode != 0:
            return "submit-failed"
        state = ""
        deadline = time.monotonic() + (timeout or self.args.timeout)
        while time.monotonic() < deadline:
            d = await asyncio.to_thread(self.cli, "describe", "--json", job)
            try:
                desc = json.loads(d.stdout)
                state = desc["State"]["State"]
                execs = [
                    (
                        e.get("NodeId", "")[:12],
                        e.get("State"),
                        (e.get("RunOutput") or {}).get("stdout"),
                        (e.get("PublishedResults") or {}).get("CID"),
                    )
                    for s in desc["State"]["Shards"].values()
                    for e in s.get("Executions") or []
                ]
            except Exception:  # noqa: BLE001
                state, execs = f"? {d.stdout[:200]}", []
            if state in ("Completed", "Error", "Cancelled"):
                say(label, f"job {job} -> {state} in {time.monotonic() - t:.2f}s executions={execs}")
                return state
            await asyncio.sleep(0.5)
        say(label, f"job {job} still {state!r} after {timeout or self.args.timeout}s")
        return state

    async def main(self) -> int:
        self.bridge.start(self.trio_main)
        await asyncio.wait_for(self.host_ready.wait(), 30)
        say(
            "host",
            f"peer id {self.host.get_id()} listening {[str(a) for a in self.host.get_addrs()]} "
            f"security {self.args.security}",
        )
        t = time.monotonic()
        try:
            detail = await self.bridge.call(self.trio_connect, self.args.requester)
            say("connect", f"OK in {1000 * (time.monotonic() - t):.0f} ms {detail}")
        except BaseException as exc:  # noqa: BLE001
            say("connect", f"FAILED {type(exc).__name__}: {exc!r}")
            cause: BaseException | None = exc
            while cause is not None:
                for sub in getattr(cause, "exceptions", None) or []:
                    say("connect", f"  attempt: {type(sub).__name__}: {sub!r} cause={sub.__cause__!r}")
                cause = cause.__cause__
                if cause is not None:
                    say("connect", f"  cause: {type(cause).__name__}: {cause!r}")
            self.bridge.stop()
            return 1
        ident = await self.bridge.call(self.trio_identify, self.args.requester)
        say("identify", f"requester agent={ident['agent']!r} protocols={ident['protocols']}")
        say("identify", f"requester listen addrs={ident['listen']}")
        results = {}
        if self.args.phase in ("identify", "both"):
            await asyncio.sleep(1)
            results["identify-only job"] = await self.submit_and_wait("identify-phase", [])
        if self.args.phase in ("gossip", "both"):
            # Control: before any NodeInfo from us the requester knows no labels of ours, so a
            # selector job must not reach us (it fails with "not enough nodes" on a fresh requester).
            results["selector job before NodeInfo (control)"] = await self.submit_and_wait(
                "control", ["-s", "spike=gossip"], timeout=8
            )
            for _ in range(5):
                await self.bridge.call(self.trio_publish, self.node_info())
                await asyncio.sleep(1)
            say("gossip", f"published NodeInfo x5; mesh {await self.bridge.call(self.trio_mesh)}")
            results["selector job (needs NodeInfo)"] = await self.submit_and_wait(
                "gossip-phase", ["-s", "spike=gossip", "--cpu", "1", "--memory", "100Mb"]
            )
        if self.args.phase == "dialback":
            # We hang up; the requester must dial our listen address itself (Go dials, py listens).
            await self.bridge.call(self.trio_publish, self.node_info())
            await asyncio.sleep(1)
            await self.bridge.call(self.trio_disconnect, self.args.requester)
            await asyncio.sleep(0.5)
            say(
                "dialback", f"disconnected; connected peers now {await self.bridge.call(self.trio_connected)}"
            )
            results["job after we hung up (requester dials us)"] = await self.submit_and_wait("dialback", [])
            say("dialback", f"connected peers now {await self.bridge.call(self.trio_connected)}")
        say("result", json.dumps(results))
        self.bridge.stop()
        return 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--requester", required=True, help="/ip4/127.0.0.1/tcp/P/p2p/Qm…")
    p.add_argument("--api", default="127.0.0.1:11234")
    p.add_argument("--bacalhau", required=True)
    p.add_argument("--cli-path", default="/var/tmp/computenode-testbed/bacalhau-cli")
    p.add_argument("--port", type=int, default=11236)
    p.add_argument("--security", default="noise,tls", help="noise,tls | noise | tls")
    p.add_argument("--muxer", default="yamux", choices=["yamux", "mplex"])
    p.add_argument("--phase", default="both", choices=["identify", "gossip", "both", "dialback", "none"])
    p.add_argument("--timeout", type=float, default=60)
    return p.parse_args()


if __name__ == "__main__":
    args = parse()

    async def _main() -> int:
        return await Probe(args).main()

    sys.exit(asyncio.run(_main()))
