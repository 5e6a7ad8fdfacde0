"""Client commands about jobs: submit, docker/wasm run, wait, describe, list, logs, cancel, get."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from computenode.cli import build, progress
from computenode.cli.common import (
    FAILED,
    INTERRUPTED,
    INVALID,
    OK,
    UsageError,
    client,
    dump,
    err,
    follow_hint,
    load_job,
    print_job,
    read,
    resolve_job,
    short,
)
from computenode.cli.transfer import ByteProgress, node_ipfs_api
from computenode.client import ClientError, NodeClient, fetch_job_results, job_id_of

TERMINAL = ("Completed", "PartialError", "Error", "Cancelled")


# -- submit and run -------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    raw = read(args.file)
    if (
        load_job(args.file, raw, args.strict) is None
    ):  # the node would say the same; say it without a round trip
        return INVALID
    kind = "application/json" if raw.lstrip()[:1] in (b"{", b"[") else "application/yaml"
    return _submit(args, raw, kind, wait=args.wait, wait_timeout=args.timeout)


def cmd_run(args: argparse.Namespace) -> int:
    with client(args) as node:
        upload = partial(_upload, node, args)
        job = build.docker_job(args, upload) if args.engine == "docker" else build.wasm_job(args, upload)
    if args.dry_run:
        sys.stdout.write(build.job_yaml(job))
        return OK
    raw = json.dumps(build.lean(job)).encode()
    wait = args.wait and not args.id_only
    return _submit(args, raw, "application/json", wait=wait, wait_timeout=args.wait_timeout)


def _upload(node: NodeClient, args: argparse.Namespace, path: Path) -> str:
    """A local file too large for Inline, added to the node's kubo; with --dry-run only hashed."""
    api = node_ipfs_api(node, args.ipfs_api)
    cid = node.add_to_ipfs(api, path, only_hash=args.dry_run)
    if not args.dry_run:
        err(f"{path}: larger than {build.INLINE_LIMIT // 2**20} MiB, added to IPFS at {api} as {cid}")
    return cid


def _submit(args: argparse.Namespace, raw: bytes, kind: str, wait: bool, wait_timeout: float | None) -> int:
    with client(args) as node:
        created = node.submit(raw, kind)
        job_id = created.get("JobID", "")
        if getattr(args, "id_only", False):
            print(job_id)
            return OK
        if not wait:
            if args.json:
                dump(created)
            else:
                print(f"job {job_id} submitted ({len(created.get('Executions') or [])} shard(s))")
                print(
                    f"  follow it: computenode wait {short(job_id)}, computenode logs --follow {short(job_id)}"
                )
            return OK
        announce = "" if args.json else f"job {job_id} submitted; waiting for it to finish"
        executions = list(created.get("Executions") or [])
        code = _wait_and_print(node, job_id, wait_timeout, args.json, announce, executions)
        if getattr(args, "download", False):
            job = node.job(job_id)
            code = max(code, _download(node, job_id, job, args.output_dir, None))
        return code


def _wait_and_print(
    node: NodeClient,
    job_id: str,
    timeout_s: float | None,
    as_json: bool,
    announce: str = "",
    executions: list[dict[str, Any]] | None = None,
) -> int:
    """Wait and print the job; with the `executions` a submit created, show their progress."""
    try:
        if announce:  # inside the try: a Ctrl-C right after it still gets the commands to follow
            err(announce)
        with progress.shown(node, job_id, executions or [], executions is not None and not as_json):
            job = node.wait(job_id, timeout_s=timeout_s)
    except KeyboardInterrupt:
        err("computenode: interrupted: stopped waiting", *follow_hint(job_id))
        return INTERRUPTED
    if as_json:
        dump(job)
    else:
        print_job(job_id, job)
    return OK if job.get("State") == "Completed" else FAILED


def cmd_wait(args: argparse.Namespace) -> int:
    with client(args) as node:
        job_id = resolve_job(node, args.job)
        return _wait_and_print(node, job_id, args.timeout, args.json)


# -- reading jobs ---------------------------------------------------------------------------------


def _download(
    node: NodeClient, job_id: str, job: dict[str, Any], output_dir: str | None, ipfs: str | None
) -> int:
    out = Path(output_dir or short(job_id))
    if job.get("State") not in TERMINAL:
        err(f"job {job_id} is {job.get('State')}: fetching what is published so far")
    shards = job.get("Shards") or []
    on_ipfs = any(
        str((s.get("PublishedResults") or {}).get("StorageSource")).lower() == "ipfs" for s in shards
    )
    api = node_ipfs_api(node, ipfs) if on_ipfs else (ipfs or "")
    progress = ByteProgress()
    try:
        warnings = fetch_job_results(node, job, out, api, progress)
    finally:
        progress.close()
    err(*(f"warning: {w}" for w in warnings))
    print(f"job {job_id}: {len(shards)} shard(s) in {out / 'per_shard'}, merged in {out / 'combined'}")
    return FAILED if warnings and len(warnings) == len(shards) else OK


def cmd_get(args: argparse.Namespace) -> int:
    with client(args) as node:
        job_id = resolve_job(node, args.job)
        return _download(node, job_id, node.job(job_id), args.output_dir, args.ipfs_api)


def _time(ts: Any) -> str:
    if isinstance(ts, int | float) and ts:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = str(ts or "-")
    return text[:19].replace("T", " ")  # an RFC 3339 time to the second


def cmd_describe(args: argparse.Namespace) -> int:
    with client(args) as node:
        job_id = resolve_job(node, args.job)
        job = node.job(job_id)
        executions = [
            node.execution(s["ExecutionId"]) for s in job.get("Shards") or [] if s.get("ExecutionId")
        ]
    if args.json:
        dump(job | {"Executions": executions})
        return OK
    spec = (job.get("Job") or {}).get("Spec") or {}
    engine = spec.get("Engine", "")
    what = (spec.get("Docker") or {}).get("Image") if engine == "Docker" else (
        ((spec.get("Wasm") or {}).get("EntryModule") or {}).get("Name"))  # fmt: skip
    print(f"job {short(job_id)}  {job.get('State')}  ({job_id})")
    print(f"  engine: {engine} {what or ''}".rstrip())
    for key in ("Publisher", "Verifier", "Timeout", "Annotations"):
        if spec.get(key):
            print(f"  {key.lower()}: {spec[key]}")
    for shard, ex in zip(job.get("Shards") or [], executions, strict=False):
        run = shard.get("RunOutput") or {}
        code = f", exit code {run.get('exitCode')}" if run else ""
        print(
            f"shard {shard.get('ShardIndex')}: {shard.get('State')}{code}  execution {short(ex.get('ExecutionID', ''))}"
        )
        for step in ex.get("History") or []:
            why = f"  {step['Comment']}" if step.get("Comment") else ""
            print(f"  {step.get('Time')}  {step.get('PreviousState') or '-'} -> {step.get('NewState')}{why}")
        published = shard.get("PublishedResults") or {}
        where = published.get("CID") or published.get("URL")
        if where:
            print(f"  results: {published.get('StorageSource')} {where}")
    return OK


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def since_time(text: str) -> float:
    """--since as a time: a duration back from now (30m, 2h, 7d) or an ISO 8601 time."""
    m = _DURATION.match(text.strip())
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def cmd_list(args: argparse.Namespace) -> int:
    since = since_time(args.since) if args.since else 0.0
    with client(args) as node:
        items, next_cursor = node.jobs(
            args.limit, args.cursor or "", args.state or "", args.label or "", since
        )
    if args.json:
        dump({"Jobs": items, "Next": next_cursor})
        return OK
    print(f"{'ID':<8}  {'CREATED':<19}  {'STATE':<12}  {'SHARDS':>6}  LABELS")
    for item in items:  # GET /api/v1/jobs items: {JobID, State, CreatedAt, Shards, Annotations, ...}
        labels = ",".join(str(a) for a in item.get("Annotations") or [])
        created, shards = item.get("CreatedAt"), item.get("Shards") or 0
        print(
            f"{short(job_id_of(item)):<8}  {_time(created):<19}  {item.get('State', ''):<12}  {shards:>6}  {labels}"
        )
    if next_cursor:
        print(f"more: computenode list --cursor {next_cursor}")
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with client(args) as node:
        job_id = resolve_job(node, args.job)
        answer = node.cancel(job_id)
    print(f"job {job_id}: cancelled {len(answer.get('Cancelled') or [])} execution(s)")
    return OK


def cmd_logs(args: argparse.Namespace) -> int:
    with client(args) as node:
        job_id = resolve_job(node, args.job)
        shards = [s for s in node.job(job_id).get("Shards") or [] if s.get("ExecutionId")]
        if args.shard is not None:
            shards = [s for s in shards if s.get("ShardIndex") == args.shard]
            if not shards:
                raise UsageError(f"job {job_id} has no shard {args.shard}")
        streams = ["stdout", "stderr"] if args.stream == "both" else [args.stream]
        for shard in shards:
            if len(shards) > 1:
                err(f"== shard {shard.get('ShardIndex')} (execution {short(shard['ExecutionId'])})")
            _copy_logs(node, shard["ExecutionId"], streams, args.follow)
    return OK


def _copy_logs(node: NodeClient, execution_id: str, streams: list[str], follow: bool) -> None:
    """Each stream to its own file (stdout to stdout, stderr to stderr), both at once when following."""
    outs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    sys.stdout.flush()
    failures: list[BaseException] = []

    def copy(stream: str) -> None:
        try:
            node.logs(execution_id, stream, follow, outs[stream])
        except (ClientError, OSError) as exc:
            failures.append(exc)

    threads = [threading.Thread(target=copy, args=(s,), daemon=True) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins so Ctrl-C reaches the main thread
    if failures:
        raise failures[0]


def add_commands(sub: Any, client_options: Any) -> None:
    p = sub.add_parser("submit", help="submit a job file (JSON or YAML) to a node")
    p.add_argument("file", metavar="FILE", help="a Job or a submit envelope; - reads stdin")
    p.add_argument("--wait", action="store_true", help="wait for the job; exit 1 unless it completed")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long")
    p.add_argument("--json", action="store_true", help="print the node's JSON")
    p.add_argument("--strict", action="store_true", help="refuse a job with unknown keys (exit 2)")
    client_options(p)
    p.set_defaults(func=cmd_submit)

    for engine, target, nargs_name in (("docker", "image", "command"), ("wasm", "module", "args")):
        group = sub.add_parser(engine, help=f"{engine} jobs built from flags")
        action = group.add_subparsers(dest=f"{engine}_command", metavar="ACTION", required=True)
        r = action.add_parser("run", help=f"build a {engine} job from flags, submit it and wait for it")
        build.add_job_flags(r, engine)
        if engine == "docker":
            r.add_argument("--entrypoint", metavar="CMD", help="replaces the image's entrypoint")
            r.add_argument("-w", "--workdir", metavar="DIR", help="the working directory in the container")
        else:
            r.add_argument(
                "--entry-point", default="_start", metavar="NAME", help="the function to run (default _start)"
            )
            r.add_argument("--import-module", action="append", default=[], metavar="SOURCE",
                           help="a module to link first: a local .wasm file, CID or URL")  # fmt: skip
        r.add_argument(target, metavar=target.upper(),
                       help="the image" if engine == "docker" else "a local .wasm file, a CID or a URL")  # fmt: skip
        r.add_argument(
            nargs_name, nargs=argparse.REMAINDER, metavar="-- CMD ARGS" if engine == "docker" else "ARGS"
        )
        client_options(r)
        r.set_defaults(func=cmd_run, engine=engine)

    p = sub.add_parser("wait", help="wait for a job; print each shard's state and output")
    p.add_argument("job", metavar="JOB", help="a job ID or any unique prefix")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 1)")
    p.add_argument("--json", action="store_true")
    client_options(p)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("describe", help="a job, its shards and executions with their history")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--json", action="store_true")
    client_options(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("list", help="the node's jobs, newest first")
    p.add_argument("--state", help="only jobs in this state (Completed, InProgress, Error, ...)")
    p.add_argument("--label", help="only jobs with this annotation")
    p.add_argument("--since", metavar="WHEN", help="only jobs created since: 30m, 2h, 7d or an ISO 8601 time")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="jobs per page (default 20)")
    p.add_argument("--cursor", metavar="CURSOR", help="the next page, as the previous one printed")
    p.add_argument("--json", action="store_true")
    client_options(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("cancel", help="cancel a job's executions")
    p.add_argument("job", metavar="JOB")
    client_options(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("logs", help="a job's stdout and stderr, so far or followed")
    p.add_argument("job", metavar="JOB")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the execution ends")
    p.add_argument("--shard", type=int, metavar="N", help="only this shard (default: all)")
    p.add_argument("--stream", choices=("stdout", "stderr", "both"), default="both")
    client_options(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("get", help="download a job's results into per_shard/ and combined/")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--output-dir", metavar="DIR", help="default ./<job ID prefix>")
    p.add_argument(
        "--ipfs-api",
        metavar="MULTIADDR",
        help="kubo RPC API for IPFS results (default: the one the node advertises)",
    )
    client_options(p)
    p.set_defaults(func=cmd_get)
