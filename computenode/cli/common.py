"""What every command shares: exit codes, output helpers, the node's address and job ID prefixes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from computenode.client import DEFAULT_NODE, ClientError, NodeClient, NodeError, job_id_of
from computenode.errors import SpecError
from computenode.model import Job, parse_job
from computenode.model.parse import load_document, unknown_keys

OK, FAILED, INVALID = 0, 1, 2
NO_NODE = 3  # `check` without --config found no node to judge with (1 means "would not bid")
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader went away (`| head`)
SHORT_ID = 8  # list and describe show IDs this long, like Bacalhau
SYSTEM_CONFIG = Path("/etc/computenode/computenode.yaml")


class UsageError(ClientError):
    """Wrong arguments or environment: exit 2 with one line."""


def err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def field_lines(exc: SpecError, where: str = "") -> list[str]:
    prefix = f"{where}: " if where else ""
    return [f"{prefix}{field}: {msg}" if field else f"{prefix}{msg}" for field, msg in exc.errors]


def dump(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def short(ident: str) -> str:
    return ident[:SHORT_ID]


def read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise SpecError([("", f"cannot read {path}: {exc.strerror}")]) from None


def load_job(path: str, raw: bytes, strict: bool = False) -> Job | None:
    """The job in a file, or None after printing every field error; unknown keys are warned about
    (an error with strict: a typo such as `Entrypiont` is otherwise silently ignored)."""
    try:
        job = parse_job(raw)
        warnings = unknown_keys(load_document(raw))
    except SpecError as exc:
        err(f"{path}: invalid job spec", *(f"  {line}" for line in field_lines(exc)))
        return None
    for where in warnings:
        err(f"{path}: {'error' if strict else 'warning'}: unknown key {where} (ignored)")
    return None if strict and warnings else job


def settings(path: str | None, overrides: dict[str, Any] | None = None) -> Any:
    """The node's Settings, or None after printing every wrong field (and where it came from)."""
    from pydantic_settings import SettingsError

    from computenode.config import load_settings

    try:
        return load_settings(path, overrides)
    except SpecError as exc:
        err(f"{path or 'configuration'}: invalid configuration", *(f"  {line}" for line in field_lines(exc)))
    except SettingsError as exc:
        err(env_error(str(exc)))
    return None


def env_error(message: str) -> str:
    """pydantic-settings' 'error parsing value for field "node" from source "EnvSettingsSource"'
    as one line naming the variable: a section's variable holds JSON, not a single value."""
    match = re.search(r'field "([^"]+)"', message)
    if match is None:
        return f"configuration from the environment does not parse: {message}"
    name = f"COMPUTENODE_{match.group(1).upper()}"
    value = os.environ.get(name, "")
    return (
        f"{name}={value!r} does not parse: it sets the whole `{match.group(1)}` section of the configuration"
        f" and must be a JSON object; set one key with {name}__<KEY>"
        + (
            " (the node's address for client commands is COMPUTENODE_URL)"
            if name == "COMPUTENODE_NODE"
            else ""
        )
    )


# -- the node's address ---------------------------------------------------------------------------


def node_url(value: str, source: str) -> str:
    """An http(s) URL from a URL or HOST:PORT; UsageError naming the source when it is neither."""
    text = value.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise UsageError(f"{source}: {value!r} is not a URL or HOST:PORT ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"{source}: {value!r} is not an http(s) URL or HOST:PORT")
    return str(url).rstrip("/")


def _listen_url(listen: str) -> str:
    """api.listen as a client reaches it: a wildcard address means this host."""
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}"


def _config_api(path: Path, source: str) -> tuple[str, str] | None:
    """(URL, token) from a node config's api section; None for an unreadable system config."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        if source == "default":
            return None  # /etc/computenode/computenode.yaml may be readable by the node only
        raise UsageError(f"{source}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: {path} is not YAML: {exc}") from None
    api = (doc or {}).get("api") if isinstance(doc, dict) else None
    api = api if isinstance(api, dict) else {}
    listen, token = str(api.get("listen") or "127.0.0.1:1234"), str(api.get("token") or "")
    return node_url(_listen_url(listen), f"{path}: api.listen"), token


def resolve_node(args: argparse.Namespace) -> tuple[str, str]:
    """(URL, token): --node, COMPUTENODE_URL, the config's api.listen (--config, COMPUTENODE_CONFIG,
    /etc/computenode/computenode.yaml when present), else the default; the token from --token,
    COMPUTENODE_TOKEN or that config."""
    token = getattr(args, "token", "") or os.environ.get("COMPUTENODE_TOKEN", "")
    config: tuple[str, str] | None = None
    config_arg = getattr(args, "config", None)
    if config_arg:
        config = _config_api(Path(config_arg), "--config")
    elif os.environ.get("COMPUTENODE_CONFIG"):
        config = _config_api(Path(os.environ["COMPUTENODE_CONFIG"]), "COMPUTENODE_CONFIG")
    elif SYSTEM_CONFIG.is_file():
        config = _config_api(SYSTEM_CONFIG, "default")
    if getattr(args, "node", None):
        url = node_url(args.node, "--node")
    elif os.environ.get("COMPUTENODE_URL"):
        url = node_url(os.environ["COMPUTENODE_URL"], "COMPUTENODE_URL")
    elif config is not None:
        url = config[0]
    else:
        url = DEFAULT_NODE
    return url, token or (config[1] if config else "")


def client(args: argparse.Namespace) -> NodeClient:
    url, token = resolve_node(args)
    return NodeClient(url, token)


def client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node",
        metavar="URL",
        help=f"the node's API, a URL or HOST:PORT (default: $COMPUTENODE_URL, the config's api.listen, {DEFAULT_NODE})",
    )
    p.add_argument(
        "--token", default="", help="bearer token (default: $COMPUTENODE_TOKEN, the config's api.token)"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="read the node's address and token from this node config (default: $COMPUTENODE_CONFIG, "
        f"{SYSTEM_CONFIG} when present)",
    )


# -- job IDs --------------------------------------------------------------------------------------


def resolve_job(client: NodeClient, ref: str) -> str:
    """The full ID of the job `ref` names: its full ID or any unique prefix of at least 4 characters,
    which the node resolves (GET /api/v1/jobs/{prefix}: 409 with the matches when it names several)."""
    if not ref:
        raise UsageError("a job ID or prefix is required")
    try:
        job = client.job(ref)
    except NodeError as exc:
        if exc.status == 404:
            hint = " (a prefix needs at least 4 characters)" if len(ref) < 4 else ""
            raise NodeError(404, f"no job {ref} on the node at {client.base_url}{hint}") from None
        if exc.status == 409:
            more = ", ".join(exc.details)
            raise UsageError(f"{ref!r} names more than one job: {more}; give more characters") from None
        raise
    return job_id_of(job) or ref


def print_job(job_id: str, job: dict[str, Any]) -> None:
    """What `submit --wait`, `wait` and `docker run` print: each shard's state, exit code and output."""
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
                cut = (
                    " (truncated; `computenode logs` has all of it)" if run.get(f"{stream}truncated") else ""
                )
                print(f"  {stream}{cut}:")
                print("    " + run[stream].rstrip("\n").replace("\n", "\n    "))
        published = shard.get("PublishedResults") or {}
        where = published.get("CID") or published.get("URL")
        if where:
            print(f"  results: {published.get('StorageSource')} {where}")


def follow_hint(job_id: str) -> list[str]:
    return [
        f"the job {job_id} keeps running on the node; follow it with:",
        f"  computenode logs --follow {short(job_id)}",
        f"  computenode describe {short(job_id)}",
        f"  computenode cancel {short(job_id)}",
    ]
