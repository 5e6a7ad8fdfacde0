"""`docker run` and `wasm run`: the v1beta1 job built from flags, as `bacalhau docker run` does."""

from __future__ import annotations

import argparse
import base64
import io
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from computenode.cli.common import UsageError
from computenode.errors import SpecError
from computenode.model import Job, job_from_document
from computenode.model.job import Spec

# A local file or directory travels inside the job as an Inline data: URL; the whole job may be
# 10 MiB (model/base.py MAX_SERIALIZED_BYTES) and base64 adds a third, so 4 MiB leaves room.
INLINE_LIMIT = 4 * 1024 * 1024
DEFAULT_INPUT_PATH = "/inputs"
DEFAULT_OUTPUT = "outputs:/outputs"
# Adds a local file or directory too large for Inline to the node's kubo; returns its CID.
Upload = Callable[[Path], str]
_CID = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,})$")


def add_job_flags(p: argparse.ArgumentParser, engine: str) -> None:
    """The flags both engines share (Bacalhau's names where it has them)."""
    p.add_argument("-i", "--input", action="append", default=[], metavar="SOURCE[:PATH]",
                   help="a CID (ipfs://CID), an http(s) URL or a local file or directory (sent inline up "
                   f"to {INLINE_LIMIT // 2**20} MiB, larger ones added to the node's IPFS), mounted at PATH "
                   f"(default {DEFAULT_INPUT_PATH}); also src=SOURCE,dst=PATH")  # fmt: skip
    p.add_argument("-o", "--output", action="append", default=[], metavar="NAME:PATH",
                   help=f"an output volume (default {DEFAULT_OUTPUT} when none is given)")  # fmt: skip
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cpu", metavar="CPU", help="e.g. 500m or 2")
    p.add_argument("--memory", metavar="SIZE", help="e.g. 512Mi")
    p.add_argument("--disk", metavar="SIZE", help="e.g. 1Gi")
    p.add_argument("--gpu", metavar="N")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="the job's timeout (default: the node's)")
    p.add_argument("--network", metavar="TYPE", help="None (default), HTTP or Full")
    p.add_argument("--domain", action="append", default=[], metavar="DOMAIN", help="with --network HTTP")
    p.add_argument("-s", "--selector", metavar="SELECTOR", help="node labels, e.g. 'zone=eu,gpu in (a100)'")
    p.add_argument("-l", "--label", action="append", default=[], metavar="LABEL", help="an annotation")
    p.add_argument("--publisher", metavar="NAME", help="Ipfs, Local or Noop (default: the node's)")
    p.add_argument("--verifier", metavar="NAME", help="Noop (default) or Deterministic")
    p.add_argument("--concurrency", type=int, metavar="N", help="copies of each shard to run")
    p.add_argument("--sharding-glob-pattern", metavar="GLOB", help="one shard per batch of matching inputs")
    p.add_argument("--sharding-batch-size", type=int, metavar="N")
    p.add_argument("--sharding-base-path", metavar="PATH", help="the glob matches below this path")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the job and print each shard's output (default); --no-wait prints the ID")  # fmt: skip
    p.add_argument("--wait-timeout", type=float, metavar="SECONDS", help="give up waiting after this long")
    p.add_argument("--id-only", action="store_true", help="print only the job's full ID and return at once")
    p.add_argument("--download", action="store_true", help="when done, fetch the results (as `get`)")
    p.add_argument("--output-dir", metavar="DIR", help="with --download (default ./<job ID prefix>)")
    p.add_argument("--dry-run", action="store_true", help="print the job as YAML and exit")
    p.add_argument("--json", action="store_true", help="print the node's JSON")
    p.add_argument("--ipfs-api", metavar="MULTIADDR",
                   help="kubo RPC API for files larger than Inline (default: the one the node advertises)")  # fmt: skip


def _source(text: str, what: str, upload: Upload | None) -> dict[str, Any]:
    """A StorageSpec from a CID, ipfs://CID, an http(s) URL or a local path."""
    if text.startswith("ipfs://") or _CID.match(text):
        cid = text.removeprefix("ipfs://").strip("/")
        return {"StorageSource": "IPFS", "CID": cid, "Name": cid}
    if text.startswith(("http://", "https://")):
        return {"StorageSource": "URLDownload", "URL": text, "Name": text.rstrip("/").rsplit("/", 1)[-1]}
    return _inline(Path(text), what, upload)


def _inline(path: Path, what: str, upload: Upload | None) -> dict[str, Any]:
    """A local file or directory as Inline data, or added to IPFS when larger than INLINE_LIMIT
    (sized before it is read: a large file is streamed to kubo, never held in memory)."""
    try:
        size = _local_size(path)
    except OSError as exc:
        raise UsageError(
            f"{what} {path}: {exc.strerror} (not a CID, ipfs://CID or http(s) URL either)"
        ) from None
    if size <= INLINE_LIMIT:
        if path.is_dir():
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(path, arcname=".")
            data, kind = buf.getvalue(), "application/gzip"
        else:
            data = path.read_bytes()
            kind = "application/wasm" if path.suffix == ".wasm" else "application/octet-stream"
        if len(data) <= INLINE_LIMIT:  # a tar of many small files may outgrow them
            url = f"data:{kind};base64,{base64.b64encode(data).decode()}"
            return {"StorageSource": "Inline", "Name": path.name, "URL": url}
        size = len(data)
    if upload is None:
        raise UsageError(
            f"{what} {path} is {size} bytes, more than the {INLINE_LIMIT // 2**20} MiB sent inline;"
            " add it to IPFS (ipfs add -r) and pass its CID"
        )
    return {"StorageSource": "IPFS", "CID": upload(path), "Name": path.name}


def _local_size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _input(text: str, upload: Upload | None) -> dict[str, Any]:
    if text.startswith("src="):
        parts = dict(p.partition("=")[::2] for p in text.split(","))
        source, target = parts.get("src", ""), parts.get("dst", DEFAULT_INPUT_PATH)
    else:
        # SOURCE:PATH splits at the last ":/" so URLs (https://...) keep their colon.
        at = text.rfind(":/")
        if at > 0 and not text[:at].endswith(("http", "https", "ipfs")):
            source, target = text[:at], text[at + 1 :]
        else:
            source, target = text, DEFAULT_INPUT_PATH
    return _source(source, "--input", upload) | {"path": target}


def _output(text: str) -> dict[str, Any]:
    name, sep, path = text.partition(":")
    if not sep or not name or not path.startswith("/"):
        raise UsageError(f"--output {text!r} is not NAME:/PATH")
    return {"Name": name, "path": path}


def _env(pairs: list[str]) -> list[str]:
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            raise UsageError(f"--env {pair!r} is not KEY=VALUE")
    return pairs


_REQ = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|!=|=|>|<|\s+in\s+|\s+notin\s+)\s*(.*?))?\s*$")


def selectors(text: str) -> list[dict[str, Any]]:
    """A Kubernetes label selector (`zone=eu,gpu in (a100,h100),!spot`) as NodeSelectors."""
    parts = re.findall(r"(?:[^,(]|\([^)]*\))+", text)
    out = []
    for part in parts:
        m = _REQ.match(part)
        if m is None:
            raise UsageError(f"--selector: {part.strip()!r} is not KEY, !KEY, KEY=V, KEY!=V or KEY in (A,B)")
        neg, key, op, value = m.groups()
        if op is None:
            out.append({"Key": key, "Operator": "!" if neg else "exists"})
            continue
        op = op.strip()
        values = [v.strip() for v in value.strip("() ").split(",")] if op in ("in", "notin") else [value]
        out.append({"Key": key, "Operator": op, "Values": values})
    return out


def _common_spec(args: argparse.Namespace, upload: Upload | None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    names = {"cpu": "CPU", "memory": "Memory", "disk": "Disk", "gpu": "GPU"}
    resources = {key: getattr(args, flag) for flag, key in names.items() if getattr(args, flag)}
    if resources:
        spec["Resources"] = resources
    if args.timeout is not None:
        spec["Timeout"] = args.timeout
    if args.network or args.domain:
        spec["Network"] = {"Type": args.network or "HTTP", "Domains": args.domain}
    if args.selector:
        spec["NodeSelectors"] = selectors(args.selector)
    if args.label:
        spec["Annotations"] = args.label
    if args.publisher:
        spec["Publisher"] = args.publisher
    if args.verifier:
        spec["Verifier"] = args.verifier
    if args.concurrency is not None:
        spec["Deal"] = {"Concurrency": args.concurrency}
    sharding = {"GlobPattern": args.sharding_glob_pattern, "BatchSize": args.sharding_batch_size,
                "GlobPatternBasePath": args.sharding_base_path}  # fmt: skip
    if any(v is not None for v in sharding.values()):
        spec["Sharding"] = {k: v for k, v in sharding.items() if v is not None}
    if args.input:
        spec["inputs"] = [_input(i, upload) for i in args.input]
    spec["outputs"] = [_output(o) for o in args.output or [DEFAULT_OUTPUT]]
    return spec


def docker_job(args: argparse.Namespace, upload: Upload | None = None) -> Job:
    """IMAGE [-- CMD ARGS...]: the command (after --entrypoint, when given) becomes Docker.Entrypoint,
    v1beta1's only command field; with neither, the image's own entrypoint runs."""
    entrypoint = ([args.entrypoint] if args.entrypoint else []) + rest(args.command)
    docker: dict[str, Any] = {"Image": args.image}
    if entrypoint:
        docker["Entrypoint"] = entrypoint
    if args.env:
        docker["EnvironmentVariables"] = _env(args.env)
    if args.workdir:
        docker["WorkingDirectory"] = args.workdir
    return _job({"Engine": "Docker", "Docker": docker} | _common_spec(args, upload))


def wasm_job(args: argparse.Namespace, upload: Upload | None = None) -> Job:
    """MODULE [ARGS...]: a local .wasm file is sent inline (or uploaded when larger); ARGS become
    Wasm.Parameters."""
    wasm: dict[str, Any] = {
        "EntryModule": _source(args.module, "MODULE", upload),
        "EntryPoint": args.entry_point,
        "Parameters": rest(args.args),
    }
    env = {}
    for pair in _env(args.env):
        key, _, value = pair.partition("=")
        env[key] = value
    if env:
        wasm["EnvironmentVariables"] = env
    if args.import_module:
        wasm["ImportModules"] = [_source(m, "--import-module", upload) for m in args.import_module]
    return _job({"Engine": "Wasm", "Wasm": wasm} | _common_spec(args, upload))


def rest(words: list[str]) -> list[str]:
    """The words after IMAGE or MODULE, without the `--` that may separate them from the flags."""
    return words[1:] if words[:1] == ["--"] else words


def _job(spec: dict[str, Any]) -> Job:
    try:
        return job_from_document({"APIVersion": "V1beta1", "Spec": spec})
    except SpecError as exc:
        # Name the flag's field path as a job file would: Spec.Resources.Memory: '12 potatoes' ...
        raise SpecError([(f or "", m) for f, m in exc.errors]) from None


def lean(job: Job) -> dict[str, Any]:
    """The wire form without the values every job has by default, as a person would write it;
    it parses back to the same Job."""
    defaults = Job.model_construct(spec=Spec.model_construct()).to_wire()
    return _drop_defaults(job.to_wire(), defaults)


def _drop_defaults(value: Any, default: Any) -> Any:
    if isinstance(value, list):
        return [_drop_defaults(item, {}) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        base = default.get(key) if isinstance(default, dict) else None
        if key in ("APIVersion", "Engine") or (item != base and item not in ("", None, [], {})):
            out[key] = _drop_defaults(item, base)
    return out


def job_yaml(job: Job) -> str:
    return yaml.safe_dump(lean(job), sort_keys=False, width=1000)
