"""Reading a job from bytes: JSON or YAML, bare Job or submit envelope, every error with its field path."""

from __future__ import annotations

import json
from functools import cache
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from computenode.errors import SpecError
from computenode.model.base import MAX_DEPTH, MAX_LIST_ELEMENTS, MAX_SERIALIZED_BYTES
from computenode.model.job import Job, SubmitEnvelope

TOO_DEEP = f"job is nested more than {MAX_DEPTH} levels deep"


class _JobLoader(yaml.SafeLoader):
    """SafeLoader without aliases and with a depth bound, so a document costs what its size says.

    An alias lets a few hundred bytes expand into billions of nodes for any code that walks the
    result ("billion laughs"); a job never needs one.
    """

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise SpecError([("", f"YAML aliases are not accepted in a job (line {mark.line + 1})")])
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise SpecError([("", TOO_DEEP)])
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_document(raw: bytes | str) -> Any:
    """JSON, else YAML (a superset for our purposes); SpecError when neither parses."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_SERIALIZED_BYTES:
        raise SpecError([("", f"job is {size} bytes, more than the {MAX_SERIALIZED_BYTES} allowed")])
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([("", f"job is not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    except RecursionError:
        raise SpecError([("", TOO_DEEP)]) from None
    try:
        return yaml.load(raw, Loader=_JobLoader)  # noqa: S506 - a SafeLoader, stricter still
    except (yaml.YAMLError, RecursionError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise SpecError([("", f"job is neither JSON nor YAML{at}")]) from None
    except ValueError as exc:  # e.g. a YAML timestamp out of range
        raise SpecError([("", f"job does not parse: {exc}")]) from None


def parse_job(raw: bytes | str) -> Job:
    """A Job from a bare Job document or a submit envelope, as JSON or YAML."""
    return job_from_document(load_document(raw))


def job_from_document(doc: Any) -> Job:
    if not isinstance(doc, dict):
        raise SpecError([("", f"a job must be an object, got {_kind(doc)}")])
    _check_list_sizes(doc, "", 0)
    keys = {k.lower() for k in doc if isinstance(k, str)}
    try:
        if "data" in keys and "spec" not in keys:
            return SubmitEnvelope.model_validate(doc).to_job()
        return Job.model_validate(doc)
    except ValidationError as exc:
        raise spec_error(exc) from None
    except RecursionError:
        raise SpecError([("", "job is nested too deeply")]) from None


def spec_error(exc: ValidationError, prefix: str = "") -> SpecError:
    """One (field path, message) per error, paths in the seeds' names: `Spec.Resources.Memory`."""
    errors = []
    for e in exc.errors(include_url=False):
        path = ".".join(str(p) for p in e["loc"])
        path = path.replace("data.Job.", "")
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif "input" in e and e["type"] not in ("missing",) and isinstance(e["input"], str | int | float):
            msg = f"{e['input']!r}: {msg}"
        errors.append((path, msg))
    return SpecError(errors)


def _check_list_sizes(value: Any, path: str, depth: int) -> None:
    # Bacalhau's MaxNumberOfObjectsToSerialize, for every list, not only typed ones; and the depth
    # bound for JSON, whose own parser allows thousands of levels.
    if depth > MAX_DEPTH:
        raise SpecError([(path, TOO_DEEP)])
    if isinstance(value, list):
        if len(value) > MAX_LIST_ELEMENTS:
            raise SpecError([(path, f"{len(value)} elements, more than the {MAX_LIST_ELEMENTS} allowed")])
        for i, item in enumerate(value):
            _check_list_sizes(item, f"{path}.{i}", depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_list_sizes(v, f"{path}.{k}" if path else str(k), depth + 1)


def _kind(doc: Any) -> str:
    return "nothing" if doc is None else type(doc).__name__


def unknown_keys(doc: Any) -> list[str]:
    """The path of every key of a job document that no field takes (Go and this parser ignore them,
    so a typo such as `Entrypiont` would pass unnoticed): `Spec.Docker.Entrypiont`."""
    if not isinstance(doc, dict):
        return []
    keys = {k.lower() for k in doc if isinstance(k, str)}
    if "data" in keys and "spec" not in keys:
        return _unknown(SubmitEnvelope, doc, "")
    return _unknown(Job, doc, "")


# Job-level keys the compatibility rules take (Job._hoist_compat) or that are accepted and ignored.
_JOB_EXTRA = frozenset({"id", "clientid", "createdat", "deal", "executionplan", "status"})


def _unknown(model: type[BaseModel], doc: dict[Any, Any], path: str) -> list[str]:
    fields = _fields(model)
    found = []
    for key, value in doc.items():
        name = str(key).lower()
        if name not in fields:
            if not (model is Job and name in _JOB_EXTRA):
                found.append(f"{path}.{key}" if path else str(key))
            continue
        inner = fields[name]
        if inner is None:
            continue
        if isinstance(value, dict):
            found += _unknown(inner, value, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    found += _unknown(inner, item, f"{path}.{key}.{i}" if path else f"{key}.{i}")
    return found


@cache
def _fields(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """A model's field names (alias and attribute, lowercased) -> the model each holds, if any.

    Once per model: rebuilding it for every object of every submitted document was most of the walk.
    """
    annotations = {(f.alias or name).lower(): f.annotation for name, f in model.model_fields.items()}
    annotations |= {name.lower(): f.annotation for name, f in model.model_fields.items()}
    return {name: _model_of(annotation) for name, annotation in annotations.items()}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly, in a list or as an optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        inner = _model_of(arg)
        if inner is not None:
            return inner
    return None
