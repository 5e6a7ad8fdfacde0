"""The `computenode` command line: run a node, check and submit jobs, fetch results, watch and drain.

Exit codes: 0 success; 1 the job did not complete, the node would not bid or answered with an
error, or the node could not be reached; 2 invalid input (a job spec, a config or the arguments,
every wrong field named). A user's mistake never prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from computenode.client import (
    DEFAULT_IPFS_API,
    DEFAULT_NODE,
    ClientError,
    NodeClient,
    NodeError,
    fetch_job_results,
)
from computenode.errors import ComputeNodeError, SpecError
from computenode.model import Job, parse_job
from computenode.model.quantity import format_bytes, format_cpu
from computenode.version import version

if TYPE_CHECKING:
    from computenode.check import CheckReport

OK, FAILED, INVALID = 0, 1, 2
STATUS_EXECUTIONS = 10


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _field_lines(exc: SpecError, where: str = "") -> list[str]:
    prefix = f"{where}: " if where else ""
    return [f"{prefix}{field}: {msg}" if field else f"{prefix}{msg}" for field, msg in exc.errors]


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise SpecError([("", f"cannot read {path}: {exc.strerror}")]) from None


def _load_job(path: str, raw: bytes | None = None) -> Job | None:
    """The job in a file, or None after printing every field error."""
    try:
        return parse_job(_read(path) if raw is None else raw)
    except SpecError as exc:
        _err(f"{path}: invalid job spec", *(f"  {line}" for line in _field_lines(exc)))
        return None


def _settings(path: str | None, overrides: dict[str, Any] | None = None) -> Any:
    from computenode.config import load_settings

    try:
        return load_settings(path, overrides)
    except SpecError as exc:
        _err(
            f"{path or 'configuration'}: invalid configuration", *(f"  {line}" for line in _field_lines(exc))
        )
        return None


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- node commands ---------------------------------------------------------------------------------


def cmd_version(args: argparse.Namespace) -> int:
    print(f"computenode {version()}")
    return OK


def cmd_config_validate(args: argparse.Namespace) -> int:
    if _settings(args.file) is None:
        return INVALID
    print(f"{args.file}: ok")
    return OK


def cmd_run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("api.listen", args.listen), ("node.data_dir", args.data_dir)) if v}
    settings = _settings(args.config, overrides)
    if settings is None:
        return INVALID
    from computenode import node
    from computenode.logs import setup_logging

    setup_logging(settings.logging.level, settings.logging.format)
    config_path = Path(args.config).absolute() if args.config else None
    try:
        return asyncio.run(node.serve(settings, config_path, overrides))
    except (OSError, ComputeNodeError) as exc:
        # A port in use or a data dir we may not write: one line, not a traceback.
        _err(f"computenode: cannot run the node: {exc}")
        return FAILED


def cmd_check(args: argparse.Namespace) -> int:
    job = _load_job(args.file)
    if job is None:
        return INVALID
    settings = _settings(args.config)
    if settings is None:
        return INVALID
    from computenode import check
    from computenode.logs import setup_logging

    # The verdicts carry every reason; the node's own warnings would only repeat them.
    setup_logging("error", settings.logging.format)
    try:
        report = asyncio.run(check.check_job(settings, job))
    except SpecError as exc:  # a rule of the node's: bounds, mount points, image reference
        _err(f"{args.file}: invalid job spec", *(f"  {line}" for line in _field_lines(exc)))
        return INVALID
    if args.json:
        _dump({"Job": job.to_wire(), "Check": report.to_wire()})
    else:
        _print_report(job, report)
    return OK if report.accepted else FAILED


def _print_report(job: Job, report: CheckReport) -> None:
    print(f"job {job.id or '(no ID yet)'}: engine {job.spec.engine.value}, {report.shards} shard(s)")
    for v in report.verdicts:
        print(f"  {'ok  ' if v.ok else 'FAIL'} {v.name}: {v.reason}")
    print(f"usage: {_usage_text(report.usage)}")
    print("this node would bid" if report.accepted else "this node would NOT bid")


def _usage_text(u: Any) -> str:
    return f"cpu {format_cpu(u.cpu)}, memory {_bytes(u.memory)}, disk {_bytes(u.disk)}, gpu {u.gpu}"


# -- client commands -------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> NodeClient:
    return NodeClient(args.node, args.token or os.environ.get("COMPUTENODE_TOKEN", ""))


def cmd_submit(args: argparse.Namespace) -> int:
    raw = _read(args.file)
    if _load_job(args.file, raw) is None:  # the node would say the same; say it without a round trip
        return INVALID
    kind = "application/json" if raw.lstrip()[:1] in (b"{", b"[") else "application/yaml"
    with _client(args) as client:
        created = client.submit(raw, kind)
        job_id = created.get("JobID", "")
        if not args.wait:
            if args.json:
                _dump(created)
            else:
                print(f"job {job_id} submitted ({len(created.get('Executions') or [])} shard(s))")
                print(
                    f"  wait for it: computenode submit --wait, or read it: computenode get {job_id} --output-dir DIR"
                )
            return OK
        if not args.json:
            _err(f"job {job_id} submitted; waiting for it to finish")
        job = client.wait(job_id, timeout_s=args.timeout)
    if args.json:
        _dump(job)
    else:
        _print_job(job_id, job)
    return OK if job.get("State") == "Completed" else FAILED


def _print_job(job_id: str, job: dict[str, Any]) -> None:
    print(f"job {job_id}: {job.get('State')}")
    for shard in job.get("Shards") or []:
        run = shard.get("RunOutput") or {}
        code = run.get("exitCode")
        print(
            f"shard {shard.get('ShardIndex')}: {shard.get('State')}" + (f", exit code {code}" if run else "")
        )
        if shard.get("State") in ("Error", "Cancelled") and shard.get("Status"):
            print(f"  reason: {shard['Status']}")
        if run.get("runnerError"):
            print(f"  runner error: {run['runnerError']}")
        for stream in ("stdout", "stderr"):
            if run.get(stream):
                cut = " (truncated; `computenode get` has all of it)" if run.get(f"{stream}truncated") else ""
                print(f"  {stream}{cut}:")
                print("    " + run[stream].rstrip("\n").replace("\n", "\n    "))
        published = shard.get("PublishedResults") or {}
        where = published.get("CID") or published.get("URL")
        if where:
            print(f"  results: {published.get('StorageSource')} {where}")


def cmd_get(args: argparse.Namespace) -> int:
    out = Path(args.output_dir)
    with _client(args) as client:
        job = client.job(args.job_id)
        if job.get("State") not in ("Completed", "PartialError", "Error", "Cancelled"):
            _err(f"job {args.job_id} is {job.get('State')}: fetching what is published so far")
        warnings = fetch_job_results(client, job, out, args.ipfs_api)
    _err(*(f"warning: {w}" for w in warnings))
    shards = len(job.get("Shards") or [])
    print(f"job {args.job_id}: {shards} shard(s) in {out / 'per_shard'}, merged in {out / 'combined'}")
    return FAILED if warnings and len(warnings) == shards else OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.node()
        code, ready = client.readyz()
        recent = client.executions()[:STATUS_EXECUTIONS]
    if args.json:
        _dump({"Node": info, "Ready": ready, "Executions": recent})
        return OK if code == 200 else FAILED
    cap = info.get("Capacity") or {}
    print(
        f"node {info.get('ID')} (computenode {info.get('Version')}) at {args.node}: {ready.get('status', code)}"
    )
    print(
        f"  engines: {', '.join(info.get('Engines') or []) or 'none'}; publishers: {', '.join(info.get('Publishers') or [])}"
    )
    print(
        f"  running {info.get('Running')}, enqueued {info.get('Enqueued')}, draining {info.get('Draining')}"
    )
    for name in ("Total", "Available", "JobMax"):
        if cap.get(name):
            print(f"  {name.lower()}: {_wire_usage(cap[name])}")
    for name, check in sorted((ready.get("checks") or {}).items()):
        print(f"  {name}: {'ok' if check.get('ok') else check.get('reason', 'down')}")
    print(f"executions (newest {STATUS_EXECUTIONS}):" if recent else "executions: none")
    for ex in recent:
        print(
            f"  {ex['ExecutionID']}  job {ex['JobID']} shard {ex['ShardIndex']}  {ex['State']}  {ex.get('Comment', '')}"
        )
    return OK if code == 200 else FAILED


def _wire_usage(u: dict[str, Any]) -> str:
    return (
        f"cpu {format_cpu(float(u.get('CPU', 0)))}, memory {_bytes(int(u.get('Memory', 0)))}, "
        f"disk {_bytes(int(u.get('Disk', 0)))}, gpu {u.get('GPU', 0)}"
    )


def _bytes(n: int) -> str:
    """Exact binary units when they fit ("100Mi"), else one decimal ("18.8Gi")."""
    exact = format_bytes(n)
    if not exact.isdigit() or n < 1024:
        return exact
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return exact


def cmd_drain(args: argparse.Namespace) -> int:
    mode = "fast" if args.fast else "off" if args.off else "graceful"
    with _client(args) as client:
        answer = client.drain(mode)
    print(
        f"drain {answer.get('Mode', mode)}: node is {'draining' if answer.get('Draining') else 'taking jobs'}"
    )
    return OK


# -- parser ----------------------------------------------------------------------------------------


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node", default=DEFAULT_NODE, metavar="URL", help=f"the node's API (default {DEFAULT_NODE})"
    )
    p.add_argument("--token", default="", help="bearer token (default: $COMPUTENODE_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="computenode", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run a node until SIGTERM/SIGINT")
    p.add_argument("--config", metavar="FILE", help="YAML config (see config/computenode.yaml)")
    p.add_argument("--listen", metavar="HOST:PORT", help="API address, overrides api.listen")
    p.add_argument("--data-dir", metavar="DIR", help="overrides node.data_dir")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="submit a job file (JSON or YAML) to a node")
    p.add_argument("file", metavar="FILE", help="a Job or a submit envelope; - reads stdin")
    p.add_argument("--wait", action="store_true", help="wait for the job; exit 1 unless it completed")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long")
    p.add_argument("--json", action="store_true", help="print the node's JSON")
    _client_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("get", help="download a job's results into per_shard/ and combined/")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--output-dir", required=True, metavar="DIR")
    p.add_argument(
        "--ipfs-api",
        default=DEFAULT_IPFS_API,
        metavar="MULTIADDR",
        help=f"kubo RPC API for IPFS results (default {DEFAULT_IPFS_API})",
    )
    _client_options(p)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("check", help="would this node bid on a job, and why (exit 0 yes, 1 no, 2 invalid)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--config", metavar="FILE", help="the node's YAML config")
    p.add_argument("--json", action="store_true", help="print the normalised job and the verdicts as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="a node's identity, capacity and readiness")
    p.add_argument("--json", action="store_true")
    _client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("drain", help="stop taking jobs (graceful: finish running ones)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="cancel running executions too")
    mode.add_argument("--off", action="store_true", help="take jobs again")
    _client_options(p)
    p.set_defaults(func=cmd_drain)

    p = sub.add_parser("config", help="configuration tools")
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    v = config_sub.add_parser("validate", help="check a YAML config; one line per wrong field, exit 2")
    v.add_argument("file", metavar="FILE")
    v.set_defaults(func=cmd_config_validate)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        _err(*_field_lines(exc))
        return INVALID
    except ClientError as exc:
        _err(f"computenode: {exc.message}", *(f"  {line}" for line in exc.details))
        return INVALID if isinstance(exc, NodeError) and exc.status == 400 else FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
