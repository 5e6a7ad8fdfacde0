"""Rules a job must meet before the node does any work for it: bounds on what it may ask for,
and spec errors that can be known from the spec alone.

Each broken rule is a (field, message) of a SpecError: a 400 at submission or bid time, never
an execution that fails later and is retried. Counts that depend on the inputs (shards, files
of a fetched directory) are checked where they become known.
"""

from __future__ import annotations

import posixpath
import re

from computenode.config import LimitsConfig
from computenode.errors import SpecError
from computenode.model import Engine, Job, Spec, StorageSpec

# Where a mount would hide or replace what the job's own system needs.
FORBIDDEN_MOUNTS = ("/", "/proc", "/sys", "/dev")
RESERVED_OUTPUT_NAMES = ("stdout", "stderr", "exitCode")

# A Docker image reference: [host[:port]/]path[:tag][@digest], as the distribution grammar has it.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_IMAGE = re.compile(
    rf"^{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{{32,}})?$"
)


def check_job(job: Job, limits: LimitsConfig) -> None:
    """Raise SpecError with every broken rule of `job`."""
    errors = bound_errors(job.spec, limits) + spec_errors(job.spec)
    if errors:
        raise SpecError(errors)


def check_shards(shards: int, limits: LimitsConfig) -> None:
    if shards > limits.max_shards:
        message = f"the job has {shards} shards, over the maximum {limits.max_shards} (limits.max_shards)"
        raise SpecError([("Spec.Sharding", message)])


def bound_errors(spec: Spec, limits: LimitsConfig) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []

    def over(field: str, count: int, maximum: int, key: str) -> None:
        if count > maximum:
            errors.append((field, f"{count} is over the maximum {maximum} (limits.{key})"))

    over("Spec.Deal.Concurrency", spec.deal.concurrency, limits.max_concurrency, "max_concurrency")
    over("Spec.inputs", len(spec.all_storage_specs()), limits.max_inputs, "max_inputs")
    over("Spec.outputs", len(spec.outputs), limits.max_outputs, "max_outputs")
    return errors


def spec_errors(spec: Spec) -> list[tuple[str, str]]:
    errors = _output_errors(spec.outputs)
    for field, specs in (("Spec.inputs", spec.inputs), ("Spec.Contexts", spec.contexts)):
        errors += _mount_errors(field, specs)
    if spec.engine is Engine.DOCKER:
        docker = spec.docker
        # Without Entrypoint the image's own runs; one given empty names no program at all.
        given = "entrypoint" in docker.model_fields_set
        if given and (not docker.entrypoint or not docker.entrypoint[0]):
            errors.append(("Spec.Docker.Entrypoint", "an entrypoint needs a program to run: it is empty"))
        if not _IMAGE.match(docker.image):
            errors.append(("Spec.Docker.Image", f"{docker.image!r} is not a valid image reference"))
    return errors


def _output_errors(outputs: list[StorageSpec]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    names: set[str] = set()
    paths: set[str] = set()
    for i, out in enumerate(outputs):
        where = f"Spec.outputs.{i}"
        if not out.name:
            errors.append((f"{where}.Name", "an output needs a Name"))
        elif out.name in (".", "..") or any(c in out.name for c in "/\\\0"):
            errors.append((f"{where}.Name", f"{out.name!r} would leave the results dir"))
        elif out.name in RESERVED_OUTPUT_NAMES:
            errors.append((f"{where}.Name", f"{out.name!r} is reserved for the job's own results"))
        elif out.name in names:
            errors.append((f"{where}.Name", f"{out.name!r} is the Name of another output"))
        names.add(out.name)
        path_error = _path_error(out.path)
        if path_error:
            errors.append((f"{where}.path", path_error))
        elif posixpath.normpath(out.path) in paths:
            errors.append((f"{where}.path", f"{out.path!r} is the path of another output"))
        paths.add(posixpath.normpath(out.path or "."))
    return errors


def _mount_errors(field: str, specs: list[StorageSpec]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for i, spec in enumerate(specs):
        if spec.path and (why := _path_error(spec.path)):
            errors.append((f"{field}.{i}.path", why))
    return errors


def _path_error(path: str) -> str:
    """Why `path` cannot be a mount point in a job, or ""."""
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    clean = posixpath.normpath(path)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    top = "/" + clean.strip("/").split("/", 1)[0]
    if clean == "/" or top in FORBIDDEN_MOUNTS:
        return f"{path!r} would hide the job's own {clean if clean == '/' else top}: mount somewhere else"
    return ""
