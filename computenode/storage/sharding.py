"""Sharding as Bacalhau v0.3.23 (pkg/job/sharding.go): glob over exploded inputs, batched.

No GlobPattern: one shard with every input. Otherwise each input is exploded
(an IPFS directory into every entry below it, depth-first, in name order), the
glob is matched against each path with GlobPatternBasePath stripped, and the
matches keep their original paths and are grouped in order into batches of
BatchSize (<= 0 means 1). Shard i gets batch i; Contexts go to every shard.
Everything here is pure except the `explode` callback the caller passes in.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import lru_cache

from computenode.errors import SpecError
from computenode.model import Spec, StorageSpec

Explode = Callable[[StorageSpec], Awaitable[list[StorageSpec]]]


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """doublestar (v4) semantics: `*` and `?` stay inside a segment, a `**` segment spans any number
    of segments, `[...]` a class (`[!...]`/`[^...]` negated), `{a,b}` alternatives."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*" and pattern.startswith("**", i) and (i == 0 or pattern[i - 1] == "/"):
            end = i + 2
            if end == n:
                out.append(".*")
                i = end
                continue
            if pattern[end] == "/":
                out.append("(?:.*/)?")
                i = end + 1
                continue
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[" and (j := _class_end(pattern, i)) > 0:
            body = pattern[i + 1 : j]
            neg = body[:1] in ("!", "^")
            body = (body[1:] if neg else body).replace("\\", "\\\\")
            out.append(f"[{'^/' if neg else ''}{body}]")
            i = j
        elif c == "{" and "}" in pattern[i:]:
            j = pattern.index("}", i)
            alts = pattern[i + 1 : j].split(",")
            out.append("(?:" + "|".join(glob_regex(a).pattern[1:-1] for a in alts) + ")")
            i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the class opened at `start`, or -1 (then `[` is literal)."""
    k = start + 1
    if k < len(pattern) and pattern[k] in "!^":
        k += 1
    if k < len(pattern) and pattern[k] == "]":
        k += 1  # a leading "]" is a member
    return pattern.find("]", k)


def _rooted(p: str) -> str:
    return p if p.startswith("/") else "/" + p


def apply_glob(specs: list[StorageSpec], pattern: str, base_path: str = "") -> list[StorageSpec]:
    """The specs whose path, with base_path stripped, matches the pattern; original paths kept."""
    regex = glob_regex(_rooted(pattern))
    base = _rooted(base_path).rstrip("/") if base_path else ""
    out = []
    for spec in specs:
        path = _rooted(spec.path)
        if base and path.startswith(base):
            path = path[len(base) :] or "/"
        if regex.match(path):
            out.append(spec)
    return out


def batches(specs: list[StorageSpec], batch_size: int) -> list[list[StorageSpec]]:
    size = batch_size if batch_size > 0 else 1
    return [specs[i : i + size] for i in range(0, len(specs), size)]


async def explode_inputs(inputs: list[StorageSpec], explode: Explode) -> list[StorageSpec]:
    """Every input exploded, in order; a path seen before is skipped (as Bacalhau)."""
    seen: set[str] = set()
    out = []
    for spec in inputs:
        for item in await explode(spec):
            if item.path not in seen:
                seen.add(item.path)
                out.append(item)
    return out


async def shard_inputs(spec: Spec, explode: Explode) -> list[list[StorageSpec]]:
    """The inputs of every shard, in shard order (Contexts not included)."""
    sharding = spec.sharding
    if not sharding.glob_pattern:
        return [list(spec.inputs)]
    atoms = apply_glob(await explode_inputs(spec.inputs, explode), sharding.glob_pattern, sharding.base_path)
    if not atoms:
        message = f"no sharding atoms found for glob pattern {sharding.glob_pattern}"
        raise SpecError([("Spec.Sharding.GlobPattern", message)])
    return batches(atoms, sharding.batch_size)


async def total_shards(spec: Spec, explode: Explode) -> int:
    return len(await shard_inputs(spec, explode))


async def shard_storage(spec: Spec, index: int, explode: Explode) -> list[StorageSpec]:
    """What shard `index` mounts: its batch of inputs, then every Context."""
    shards = await shard_inputs(spec, explode)
    if not 0 <= index < len(shards):
        raise SpecError(
            [("ShardIndex", f"shard index {index} is out of range: the job has {len(shards)} shards")]
        )
    return [*shards[index], *spec.contexts]
