"""A trivial WASM job through a Go Bacalhau v0.3.23 requester against the node's own HTTP API (issue 12).

    eval "$(scripts/testbed.sh env)"
    .venv/bin/python bench/network_bench.py [-n 20] [--rounds 3] [--poll 0.02]

Starts a Go requester (`bacalhau serve --node-type requester`, its own temp dir, free loopback
ports, the test bed's kubo) and one `computenode run` worker joined to it over libp2p (network
enabled, peers = the requester, locality anywhere, WASM on), waits for the worker's /readyz
`network` check and one completed job through each path (warm-up), then times, rounds
interleaved (network, http, network, http, ...), N jobs per side per round:

* network: `bacalhau wasm run --wait=false --id-only hello.wasm` (the Go CLI, a process per
  job; the module is under 5 KiB so the CLI inlines it), then `POST /requester/states` on the
  requester's REST API every --poll seconds until its job State is Completed.
  Given a local file, v0.3.23's `wasm run` prints "Uploading ... press Ctrl+C to cancel" and
  sleeps one second (cmd/bacalhau/wasm_run.go) before it inlines the module and submits: the
  CLI's share includes that sleep. That endpoint
  reads the requester's in-memory job store: no process per poll (as `bacalhau describe`
  would be), no job history or spec (as `/requester/list` returns), no libp2p traffic.
* http: `POST /api/v1/jobs` on the worker with the same module inline (a data: URL), the same
  publisher and outputs as the CLI's job, then the long poll `GET /api/v1/jobs/{id}?wait=10s`
  until Completed.

Both: wall clock (perf_counter) from just before the submit to the moment this client sees
Completed. For the network side the CLI's share (its process, start to job ID) is reported
apart, and `bacalhau version --client` is timed alone to show what starting the CLI costs.
Everything started is stopped and its temp dir removed on exit, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._node import NodeProcess, pct, submit, wait_job  # noqa: E402
from tests.network.requester import free_port  # noqa: E402

HOST = "127.0.0.1"
HOST_ID = re.compile(rb"host-id:([A-Za-z0-9]+)")
STARTED: list[Any] = []  # everything to stop on the way out, in start order
CLIENT: dict[str, dict[str, float]] = {}  # job ID -> this client's wall clock (time of day, s) at each step


def time_of_day(t: float | None = None) -> float:
    """Seconds since local midnight, as the requester's log (HH:MM:SS.mmm) and the node's show it."""
    d = datetime.fromtimestamp(time.time() if t is None else t)
    return d.hour * 3600 + d.minute * 60 + d.second + d.microsecond / 1e6


class Requester:
    """`bacalhau serve --node-type requester` on loopback, in its own session; stop() always reaps."""

    def __init__(self, bin: str, root: Path, ipfs_api: str) -> None:
        self.bin = bin
        self.root = root
        self.swarm_port = free_port()
        self.api_port = free_port((self.swarm_port,))
        self.api_url = f"http://{HOST}:{self.api_port}"
        self.log_path = root / "requester.log"
        self.cli_env = self._env(root / "cli")
        argv = [bin, "serve", "--node-type", "requester", "--peer", "none", "--host", HOST,
                "--swarm-port", str(self.swarm_port), "--api-port", str(self.api_port),
                "--ipfs-connect", ipfs_api]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, env=self._env(root / "path"), cwd=root, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        STARTED.append(self)
        self.peer_id = self._wait_ready()
        self.multiaddr = f"/ip4/{HOST}/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    def _env(self, bacalhau_path: Path) -> dict[str, str]:
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        bacalhau_path.mkdir(parents=True, exist_ok=True)
        # HOME: the v0.3.23 CLI prints nothing and exits 1 without it.
        return {"HOME": str(self.root / "home"), "BACALHAU_PATH": str(bacalhau_path),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # fmt: skip

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the requester exited {self.proc.returncode}; log {self.log_path}")
            m = HOST_ID.search(self.log_path.read_bytes())
            if m:
                try:
                    if httpx.get(f"{self.api_url}/node_info", timeout=2).status_code == 200:
                        return m.group(1).decode()
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise SystemExit(f"the requester was not ready in 60 s; log {self.log_path}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`bacalhau --api-host H --api-port P ARGS` (API flags first: before any `--`)."""
        argv = [self.bin, "--api-host", HOST, "--api-port", str(self.api_port), *args]
        return subprocess.run(argv, env=self.cli_env, cwd=self.root, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


class Worker(NodeProcess):
    """bench/_node.py's node, registered for cleanup before it is waited for."""

    def _wait_ready(self) -> None:
        STARTED.append(self)
        self.pid = self.proc.pid  # stop() needs it even if the node never becomes ready
        super()._wait_ready()


def wasm_run(req: Requester, module: Path) -> str:
    """Submit through the Go CLI; the job ID."""
    out = req.cli("wasm", "run", "--wait=false", "--id-only", str(module))
    job_id = out.stdout.strip().splitlines()[-1].strip() if out.stdout.strip() else ""
    if out.returncode != 0 or not re.fullmatch(r"[0-9a-f-]{8,}", job_id):
        raise RuntimeError(f"bacalhau wasm run exited {out.returncode}: {out.stdout}{out.stderr}")
    return job_id


def wait_requester(api: httpx.Client, job_id: str, poll_s: float, timeout_s: float = 60) -> dict[str, Any]:
    """`POST /requester/states` every poll_s until the job is terminal; its JobState."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = api.post("/requester/states", json={"client_id": "network-bench", "job_id": job_id})
        if r.status_code == 200:
            state: dict[str, Any] = r.json()["state"]
            if state.get("State") in ("Completed", "Error", "Cancelled"):
                if state["State"] != "Completed":
                    raise RuntimeError(f"job {job_id} ended {state['State']}: {json.dumps(state)[:2000]}")
                return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not Completed after {timeout_s} s: {r.text[:2000]}")
        time.sleep(poll_s)


def one_network(req: Requester, api: httpx.Client, module: Path, poll_s: float) -> tuple[float, float, str]:
    """(submit to Completed, the CLI's share, job ID)."""
    t0 = time.perf_counter()
    job_id = wasm_run(req, module)
    t1 = time.perf_counter()
    exited = time_of_day()
    wait_requester(api, job_id, poll_s)
    t2 = time.perf_counter()
    CLIENT[job_id] = {"client: CLI exited": exited, "client: saw Completed": time_of_day()}
    return t2 - t0, t1 - t0, job_id


def one_http(node: httpx.Client, job: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    body = wait_job(node, submit(node, job))
    elapsed = time.perf_counter() - t0
    if body.get("State") != "Completed":
        raise RuntimeError(f"http job ended {body.get('State')}: {json.dumps(body)[:2000]}")
    return elapsed


def line(label: str, values: Sequence[float]) -> str:
    ms = [v * 1e3 for v in values]
    return (
        f"  {label:<22} n={len(ms):3d}  p50 {pct(ms, 50):8.1f}  p95 {pct(ms, 95):8.1f}"
        f"  min {min(ms):8.1f}  max {max(ms):8.1f} ms"
    )


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def first_job(req: Requester, api: httpx.Client, module: Path, poll_s: float) -> str:
    """The warm-up job; retried while the requester has not yet ranked the worker."""
    deadline = time.monotonic() + 60
    while True:
        try:
            job_id = wasm_run(req, module)
            break
        except RuntimeError as exc:
            if "not enough nodes" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    wait_requester(api, job_id, poll_s)
    return job_id


def http_job(module: Path, network_spec: dict[str, Any]) -> dict[str, Any]:
    """The CLI's job for the node's own API: the module inline, publisher and outputs as it had."""
    data = base64.b64encode(module.read_bytes()).decode()
    spec: dict[str, Any] = {
        "Engine": "Wasm",
        "Verifier": "Noop",
        "Publisher": network_spec.get("Publisher") or "Estuary",
        "Wasm": {
            "EntryModule": {
                "StorageSource": "Inline",
                "Name": module.name,
                "URL": f"data:application/wasm;base64,{data}",
            },
            "EntryPoint": network_spec.get("Wasm", {}).get("EntryPoint") or "_start",
            "Parameters": [],
        },
        "Timeout": 60,
    }
    if network_spec.get("outputs"):
        spec["outputs"] = network_spec["outputs"]
    return {"APIVersion": "V1beta1", "Spec": spec}


def bench(args: argparse.Namespace, tmp: Path) -> None:
    bin = args.bacalhau or os.environ.get("COMPUTENODE_TEST_BACALHAU_BIN", "")
    ipfs_api = os.environ.get("COMPUTENODE_TEST_IPFS_API", "")
    if not bin or not ipfs_api:
        raise SystemExit('needs the test bed: eval "$(scripts/testbed.sh env)" (bacalhau binary, kubo)')
    module = args.module
    if not module.is_file():
        raise SystemExit(f"{module} is missing: run tests/wasm/build.sh")

    print(f"load average before start: {loadavg()}  ({os.cpu_count()} CPUs)")
    t = time.perf_counter()
    req = Requester(bin, tmp / "requester", ipfs_api)
    print(f"requester {req.multiaddr} api {req.api_url}: ready in {time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    p2p_port = free_port()
    worker = Worker(
        extra={
            "network": {
                "enabled": True,
                "listen": [f"/ip4/{HOST}/tcp/{p2p_port}"],
                "peers": [req.multiaddr],
                "key_file": str(tmp / "worker.key"),
                "node_info_interval": args.node_info_interval,
            },
            "job_selection": {"locality": "anywhere"},
            "engines": {"wasm": {"enabled": True}},
            "storage": {"ipfs": {"api": ipfs_api}},
            "logging": {"format": "json", "level": "info"},
        }
    )
    node = httpx.Client(base_url=worker.url, timeout=30)
    deadline = time.monotonic() + 60
    while not node.get("/readyz").json().get("checks", {}).get("network", {}).get("ok"):
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not connect in 60 s: {node.get('/readyz').text}")
        time.sleep(0.1)
    print(
        f"worker {worker.url} (libp2p {p2p_port}): /readyz network ok {time.perf_counter() - t:.2f} s after start"
    )

    api = httpx.Client(base_url=req.api_url, timeout=10)
    t = time.perf_counter()
    job_id = first_job(req, api, module, args.poll)
    print(f"warm-up network job {job_id}: Completed {time.perf_counter() - t:.2f} s after the first submit")
    described = json.loads(req.cli("describe", "--json", job_id).stdout)
    net_spec = described["Job"]["Spec"]
    (execution,) = [e for s in described["State"]["Shards"].values() for e in s.get("Executions") or []]
    print(
        f"  its spec: EntryModule {net_spec['Wasm']['EntryModule'].get('StorageSource')}, "
        f"publisher {net_spec.get('Publisher')}, outputs {[o.get('Name') for o in net_spec.get('outputs') or []]}; "
        f"ran on {execution['NodeId']}, stdout {execution.get('RunOutput', {}).get('stdout')!r}"
    )
    job = http_job(module, net_spec)
    for _ in range(3):
        one_http(node, job)
    print(f"warm-up http jobs: 3 Completed (publisher {job['Spec']['Publisher']})")

    version = []
    for _ in range(args.n):
        t = time.perf_counter()
        out = req.cli("version", "--client")
        version.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise RuntimeError(f"bacalhau version --client exited {out.returncode}: {out.stdout}{out.stderr}")

    totals: dict[str, list[float]] = {"network": [], "http": [], "cli": []}
    ids: list[str] = []
    print(
        f"\n{args.rounds} rounds x {args.n} jobs per side, interleaved; requester poll every {args.poll * 1e3:.0f} ms"
    )
    for r in range(1, args.rounds + 1):
        net: list[float] = []
        cli: list[float] = []
        http: list[float] = []
        la = loadavg()
        for _ in range(args.n):
            total, cli_s, job_id = one_network(req, api, module, args.poll)
            net.append(total)
            cli.append(cli_s)
            ids.append(job_id)
            http.append(one_http(node, job))
        print(f"round {r}  (load average {la} -> {loadavg()})")
        print(line("network (CLI+requester)", net))
        print(line("  of which CLI submit", cli))
        print(line("  after the CLI", [a - b for a, b in zip(net, cli, strict=True)]))
        print(line("http (node API)", http))
        totals["network"] += net
        totals["cli"] += cli
        totals["http"] += http

    net, cli, http = totals["network"], totals["cli"], totals["http"]
    print(f"\noverall (load average now {loadavg()})")
    print(line("network (CLI+requester)", net))
    print(line("  of which CLI submit", cli))
    print(line("  after the CLI", [a - b for a, b in zip(net, cli, strict=True)]))
    print(line("http (node API)", http))
    print(line("bacalhau version --client", version))
    print(
        f"  p50s: network {pct(net, 50) * 1e3:.1f} ms = CLI submit {pct(cli, 50) * 1e3:.1f}"
        f" (a bare CLI start {pct(version, 50) * 1e3:.1f} + its 1 s sleep + the submit) + the rest; "
        f"http {pct(http, 50) * 1e3:.1f} ms"
    )
    if args.breakdown:
        breakdown(req.log_path, worker.tmp / "node.log", ids[-args.breakdown :])
    if args.keep_logs:
        for src in (req.log_path, worker.tmp / "node.log"):
            shutil.copy(src, Path(args.keep_logs) / src.name)
        print(f"logs copied to {args.keep_logs}")
    api.close()
    node.close()


def breakdown(log_path: Path, node_log: Path, ids: Sequence[str]) -> None:
    """Where the time went, from the requester's log (ms), the node's (JSON, ms) and this client's
    clock: each step of the jobs from the requester's Created event; the CLI's `POST /version`
    is what it does before its one-second sleep."""
    stamp = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d+) \|")
    wanted = set(ids)
    events: dict[str, dict[str, float]] = {}
    last_version = 0.0
    for text in log_path.read_text(errors="replace").splitlines():
        m = stamp.match(text)
        if not m:
            continue
        h, mi, s, frac = m.groups()
        t = int(h) * 3600 + int(mi) * 60 + int(s) + float("0." + frac)
        if '"URI":"/version"' in text:
            last_version = t
            continue
        name = re.search(r"\[EventName:(\w+)\].*\[JobID:([0-9a-f-]+)\]", text)
        done = re.search(r"Shard ([0-9a-f-]+):0 completed successfully", text)
        if name and name.group(2) in wanted:
            job = events.setdefault(name.group(2), {})
            if name.group(1) == "Created":
                job["CLI POST /version"] = last_version
            job.setdefault(name.group(1), t)
        elif done and done.group(1) in wanted:
            events.setdefault(done.group(1), {})["shard completed"] = t
    for text in node_log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(text)
        except ValueError:
            continue
        if rec.get("job_id") in events and rec.get("logger") == "computenode.compute":
            hms = re.search(r"T(\d\d):(\d\d):(\d\d(?:\.\d+)?)", rec["time"])
            if hms:
                h, mi, sec = hms.groups()
                key = "node: " + rec["message"].removeprefix("execution ")
                events[rec["job_id"]].setdefault(key, int(h) * 3600 + int(mi) * 60 + float(sec))
    for job_id, steps in CLIENT.items():
        if job_id in events:
            events[job_id].update(steps)
    rows: dict[str, list[float]] = {}
    for job in events.values():
        if "Created" in job:
            for key, t in sorted(job.items(), key=lambda kv: kv[1]):
                rows.setdefault(key, []).append(t - job["Created"])
    print(
        f"\n{len(events)} network jobs, each step from the requester's Created (requester and node logs have ms):"
    )
    for key, values in sorted(rows.items(), key=lambda kv: statistics.median(kv[1])):
        print(line(key, values))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=20, help="jobs per side per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--poll", type=float, default=0.02, help="seconds between POST /requester/states")
    p.add_argument("--node-info-interval", default="10s", help="the worker's NodeInfo gossip interval")
    wasm_dir = Path(os.environ.get("COMPUTENODE_TEST_WASM_DIR", REPO / "tests/wasm/build"))
    p.add_argument("--module", type=Path, default=wasm_dir / "hello.wasm")
    p.add_argument("--bacalhau", help="the v0.3.23 binary (default $COMPUTENODE_TEST_BACALHAU_BIN)")
    p.add_argument(
        "--breakdown",
        type=int,
        default=1000,
        help="the timeline from the logs of the last N network jobs (0: none)",
    )
    p.add_argument("--keep-logs", metavar="DIR", help="copy the requester's and the worker's logs here")
    args = p.parse_args()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="network-bench-"))
    try:
        bench(args, tmp)
    except KeyboardInterrupt:
        print("interrupted: stopping what was started", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        for thing in reversed(STARTED):
            try:
                thing.stop()  # the worker first (it leaves the network), then the requester
            except Exception as exc:  # noqa: BLE001 - clean up the rest anyway
                print(f"stopping {type(thing).__name__}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
