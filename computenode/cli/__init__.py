"""The `computenode` command line: run a node, check and submit jobs, fetch results, watch and drain.

Exit codes: 0 success; 1 the job did not complete, the node would not bid or answered with an
error, or the node could not be reached; 2 invalid input (a job spec, a config or the arguments,
every wrong field named); 3 `check` found no node to judge with and had no --config; 130
interrupted; 141 stdout closed. A user's mistake never prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from computenode.api.dashboard import peer_of, short_peer  # plain functions: no server imports
from computenode.cli import install, jobs
from computenode.cli.common import (
    BROKEN_PIPE,
    FAILED,
    INTERRUPTED,
    INVALID,
    NO_NODE,
    OK,
    UsageError,
    client,
    client_options,
    dump,
    err,
    field_lines,
    load_job,
    read,
    resolve_node,
    settings,
)
from computenode.client import ClientError, NodeClient, NodeError, NodeUnreachable
from computenode.errors import ComputeNodeError, SpecError
from computenode.model import Job
from computenode.model.quantity import format_bytes, format_cpu
from computenode.version import version

STATUS_EXECUTIONS = 10
STATUS_REFUSALS = 5


# -- node commands ---------------------------------------------------------------------------------


def cmd_version(args: argparse.Namespace) -> int:
    """The client's version, then the node's when one answers (its absence is said, not an error)."""
    print(f"computenode {version()} (client)")
    if getattr(args, "client_only", False):
        return OK
    try:
        with client(args) as node:
            print(f"computenode {node.node().get('Version')} (node at {node.base_url})")
    except ClientError as exc:
        err(f"node: {exc.message}")
    return OK


def cmd_config_validate(args: argparse.Namespace) -> int:
    if settings(args.file) is None:
        return INVALID
    print(f"{args.file}: ok")
    return OK


def _listen_source(args: argparse.Namespace) -> str:
    if args.listen:
        return "--listen"
    if os.environ.get("COMPUTENODE_API__LISTEN"):
        return "COMPUTENODE_API__LISTEN"
    return f"api.listen in {args.config}" if args.config else "the default api.listen"


def cmd_run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("api.listen", args.listen), ("node.data_dir", args.data_dir)) if v}
    loaded = settings(args.config, overrides)
    if loaded is None:
        return INVALID
    from computenode import node
    from computenode.logs import setup_logging

    setup_logging(loaded.logging.level, loaded.logging.format)
    config_path = Path(args.config).absolute() if args.config else None
    try:
        return asyncio.run(node.serve(loaded, config_path, overrides))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            err(
                f"computenode: cannot run the node: {loaded.api.listen} ({_listen_source(args)}) is in use;"
                " choose another address with --listen HOST:PORT or COMPUTENODE_API__LISTEN"
            )
        else:  # a data dir we may not write: one line, not a traceback
            err(f"computenode: cannot run the node: {exc}")
        return FAILED
    except ComputeNodeError as exc:
        err(f"computenode: cannot run the node: {exc}")
        return FAILED


def cmd_check(args: argparse.Namespace) -> int:
    """The running node's verdict (POST /api/v1/jobs/check), or with --config this process's own
    Bidder built from that file; each says which it used."""
    raw = read(args.file)
    job = load_job(args.file, raw, args.strict)
    if job is None:
        return INVALID
    if args.config:
        return _check_offline(args, job)
    url, token = resolve_node(argparse.Namespace(node=args.node, token=args.token, config=None))
    kind = "application/json" if raw.lstrip()[:1] in (b"{", b"[") else "application/yaml"
    with NodeClient(url, token) as node:
        try:
            answer = node.check(raw, kind)
        except NodeUnreachable as exc:
            err(f"computenode: check: {exc.message}", *NO_NODE_HINT)
            return NO_NODE
        except NodeError as exc:
            if exc.status == 400:  # a rule of the node's: bounds, mount points, image reference
                err(f"{args.file}: invalid job spec", *(f"  {line}" for line in exc.details))
                return INVALID
            if exc.status in (404, 405):  # a node from before POST /api/v1/jobs/check
                err(f"computenode: check: the node at {url} cannot judge a job (no POST /api/v1/jobs/check)",
                    *NO_NODE_HINT[1:])  # fmt: skip
            else:
                err(f"computenode: check: {exc.message}", *(f"  {line}" for line in exc.details))
            return NO_NODE
    source = {"Node": url, "NodeID": answer.get("NodeID", "")}
    check = {k: answer.get(k) for k in ("Accepted", "Shards", "Usage", "Verdicts")}
    return _report(args, job, check, source, f"judged by the node {source['NodeID']} at {url}")


NO_NODE_HINT = [
    "  no node to judge the job with: start one (computenode run), name it with --node or COMPUTENODE_URL,",
    "  or judge offline with a node config: computenode check FILE --config FILE",
]


def _check_offline(args: argparse.Namespace, job: Job) -> int:
    loaded = settings(args.config)
    if loaded is None:
        return INVALID
    from computenode import check
    from computenode.logs import setup_logging

    # The verdicts carry every reason; the node's own warnings would only repeat them.
    setup_logging("error", loaded.logging.format)
    try:
        report = asyncio.run(check.check_job(loaded, job))
    except SpecError as exc:  # a rule of the node's: bounds, mount points, image reference
        err(f"{args.file}: invalid job spec", *(f"  {line}" for line in field_lines(exc)))
        return INVALID
    source = {"Config": str(args.config)}
    return _report(
        args, job, report.to_wire(), source, f"judged offline with the configuration in {args.config}"
    )


def _report(
    args: argparse.Namespace, job: Job, check: dict[str, Any], source: dict[str, str], how: str
) -> int:
    """Print a check's answer (CheckReport.to_wire's shape) and its exit code: 0 bid, 1 not."""
    accepted = bool(check.get("Accepted"))
    if args.json:
        dump({"Job": job.to_wire(), "Check": check, "JudgedBy": source})
        return OK if accepted else FAILED
    print(how)
    print(f"job {job.id or '(no ID yet)'}: engine {job.spec.engine.value}, {check.get('Shards')} shard(s)")
    for v in check.get("Verdicts") or []:
        print(f"  {'ok  ' if v.get('OK') else 'FAIL'} {v.get('Name')}: {v.get('Reason')}")
    print(f"usage: {_wire_usage(check.get('Usage') or {})}")
    print("this node would bid" if accepted else "this node would NOT bid")
    return OK if accepted else FAILED


# -- client commands -------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    with client(args) as node:
        info = node.node()
        code, ready = node.readyz()
        recent = node.executions()[:STATUS_EXECUTIONS]
        url = node.base_url
    if args.json:
        dump({"Node": info, "Ready": ready, "Executions": recent})
        return OK if code == 200 else FAILED
    cap = info.get("Capacity") or {}
    print(f"node {info.get('ID')} (computenode {info.get('Version')}) at {url}: {ready.get('status', code)}")
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
    if isinstance(info.get("Network"), dict):
        print(*network_lines(info["Network"]), sep="\n")
    print(f"executions (newest {STATUS_EXECUTIONS}):" if recent else "executions: none")
    for ex in recent:
        print(
            f"  {ex['ExecutionID']}  job {ex['JobID']} shard {ex['ShardIndex']}  {ex['State']}  {ex.get('Comment', '')}"
        )
    return OK if code == 200 else FAILED


def network_lines(net: dict[str, Any]) -> list[str]:
    """The node's libp2p side, in the style of the lines above: its peer ID and addresses, each
    configured requester (connected or not, and why not) and any other that made offers, with
    what each asked for, then the newest refusals. Peer IDs, errors and reasons come from other
    peers: control characters are shown escaped, never sent to the terminal."""
    peers = [p for p in net.get("Peers") or [] if isinstance(p, dict)]
    connected = {str(c) for c in net.get("Connected") or []}
    counts: dict[str, Any] = net.get("Requesters") or {}
    configured = {peer_of(str(p.get("Address", ""))) for p in peers}
    any_requester = "yes" if net.get("AcceptAnyRequester") else "no"
    lines = [
        f"network: peer {_clean(net.get('PeerID'))}, accepts any requester {any_requester}",
        f"  listen: {', '.join(_clean(a) for a in net.get('Listen') or []) or 'none'}",
    ]

    def asked(pid: str) -> str:
        c = counts.get(pid) or {}
        return f"offers {c.get('Offers', 0)}, bids {c.get('Bids', 0)}, refused {c.get('Refused', 0)}"

    for p in peers:
        pid = peer_of(str(p.get("Address", "")))
        error = f" (last error: {_clean(p['Error'])})" if p.get("Error") else ""
        yes = "yes" if p.get("Connected") else "no"
        lines.append(f"  requester {_clean(p.get('Address'))}: connected {yes}{error}; {asked(pid)}")
    if not peers:
        lines.append("  requesters: none configured")
    for pid in sorted(set(counts) - configured):
        yes = "yes" if pid in connected else "no"
        lines.append(f"  peer {_clean(pid)} (not configured): connected {yes}; {asked(pid)}")
    lines.append(f"  other connected peers: {len(connected - configured)}")
    refusals = [r for r in net.get("RecentRefusals") or [] if isinstance(r, dict)]
    if not refusals:
        lines.append("refusals: none")
        return lines
    lines.append(f"refusals (newest {min(len(refusals), STATUS_REFUSALS)} of {len(refusals)}):")
    for r in refusals[:STATUS_REFUSALS]:
        at = r.get("At")
        when = (
            datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(at, int | float) and at
            else "-"
        )
        peer = short_peer(_clean(r.get("Peer")))
        lines.append(f"  {when}  peer {peer}  job {_clean(r.get('JobID')) or '-'}  {_clean(r.get('Reason'))}")
    return lines


def _clean(value: object) -> str:
    """Text from another peer, one line and no terminal escapes: control characters as \\xNN."""
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
    with client(args) as node:
        answer = node.drain(mode)
    print(
        f"drain {answer.get('Mode', mode)}: node is {'draining' if answer.get('Draining') else 'taking jobs'}"
    )
    return OK


# -- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="computenode", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the client's and the node's version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a node until SIGTERM/SIGINT")
    p.add_argument("--config", metavar="FILE", help="YAML config (see config/computenode.yaml)")
    p.add_argument("--listen", metavar="HOST:PORT", help="API address, overrides api.listen")
    p.add_argument("--data-dir", metavar="DIR", help="overrides node.data_dir")
    p.set_defaults(func=cmd_run)

    jobs.add_commands(sub, client_options)

    p = sub.add_parser(
        "check", help="would the node bid on a job, and why (exit 0 yes, 1 no, 2 invalid, 3 no node)"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--config", metavar="FILE",
                   help="judge offline with this node config instead of asking the running node")  # fmt: skip
    p.add_argument("--node", metavar="URL", help="the node to ask (default: $COMPUTENODE_URL, ...)")
    p.add_argument("--token", default="", help="bearer token (default: $COMPUTENODE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the normalised job and the verdicts as JSON")
    p.add_argument("--strict", action="store_true", help="unknown keys in the job are an error (exit 2)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="a node's identity, capacity and readiness")
    p.add_argument("--json", action="store_true")
    client_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("drain", help="stop taking jobs (graceful: finish running ones)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="cancel running executions too")
    mode.add_argument("--off", action="store_true", help="take jobs again")
    client_options(p)
    p.set_defaults(func=cmd_drain)

    p = sub.add_parser("config", help="configuration tools")
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    v = config_sub.add_parser("validate", help="check a YAML config; one line per wrong field, exit 2")
    v.add_argument("file", metavar="FILE")
    v.set_defaults(func=cmd_config_validate)
    install.add_config_commands(config_sub)
    install.add_commands(sub)

    p = sub.add_parser("version", help="print the client's and the node's version")
    p.add_argument("--client-only", action="store_true", help="do not ask the node")
    client_options(p)
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
        return code
    except KeyboardInterrupt:
        err("computenode: interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`computenode list | head`): stop quietly. Python would complain
        # again when it flushes stdout at exit, so stdout now points at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        return cmd_version(argparse.Namespace(node=None, token="", config=None))
    if args.command is None:
        parser.error("a command is required")
    try:
        return int(args.func(args))
    except SpecError as exc:
        err(*field_lines(exc))
        return INVALID
    except UsageError as exc:
        err(f"computenode: {exc.message}")
        return INVALID
    except ClientError as exc:
        err(f"computenode: {exc.message}", *(f"  {line}" for line in exc.details))
        return INVALID if isinstance(exc, NodeError) and exc.status == 400 else FAILED
