"""IPFS inputs from kubo: fetched into a cache keyed by CID, shared across jobs, LRU-bounded.

    <cache_dir>/<CID>              a file CID as a file, a directory CID as a directory
    <cache_dir>/.partial-<CID>-*   a fetch in progress (removed on failure, cancel or restart)

The fetch timeout is a stall timeout: a fetch fails once kubo has sent nothing
for `fetch_timeout` seconds (Bacalhau #1592, #1863: an unreachable CID hung a
job, a slow but moving 2 GB copy was killed). The job's own timeout still
bounds the whole run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import tarfile
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from computenode import progress
from computenode.config import IPFSConfig
from computenode.disk import tree_size
from computenode.errors import InputUnavailable
from computenode.model import StorageSource, StorageSpec
from computenode.storage.ipfs_client import KuboClient, KuboError, stream_to_file
from computenode.storage.safe_tar import UnsafeArchive, check_member, too_many_files
from computenode.volume import InputVolume

log = logging.getLogger(__name__)

_CID = re.compile(r"^[A-Za-z0-9]{10,200}$")
_PARTIAL = ".partial-"
_EVICTING = ".evicting-"
_QUICK_S = 30.0  # bound on the bid-time calls (locality, size)
_DIR_TYPES, _FILE_TYPE, _SYMLINK_TYPE = (1, 5), 2, 4  # kubo's `ls` Type (5: a HAMT shard)
_PARALLEL_CATS = 8  # files fetched at once: 2 MiB of buffers each; 4 was ~10% slower, 16 ~8% faster


class IPFSStorage:
    def __init__(self, cfg: IPFSConfig, cache_dir: Path, max_files: int = 100_000) -> None:
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.max_files = max_files  # entries of a fetched or sharded directory (limits.max_files)
        self.kubo = KuboClient(cfg.api)
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_use: Counter[str] = Counter()
        self._volumes: dict[int, str] = {}  # id(InputVolume) -> CID, for idempotent cleanup
        self._sizes: dict[str, int] = {}  # entry name -> bytes; entries never change once renamed in
        self._sweeping: asyncio.Future[None] | None = None  # the one sweep of this process

    async def aclose(self) -> None:
        await self.kubo.aclose()

    async def check(self) -> str | None:
        return await self.kubo.check()

    async def has_locally(self, spec: StorageSpec) -> bool:
        cid = spec.cid
        if not _CID.match(cid):
            return False
        if await asyncio.to_thread((self.cache_dir / cid).exists):
            return True
        try:
            async with asyncio.timeout(min(_QUICK_S, self.cfg.fetch_timeout)):
                return await self.kubo.is_local(cid)
        except (KuboError, TimeoutError):
            return False

    async def size(self, spec: StorageSpec) -> int:
        if not _CID.match(spec.cid):
            return 0
        try:
            async with asyncio.timeout(min(_QUICK_S, self.cfg.fetch_timeout)):
                return int((await self.kubo.stat(spec.cid))["CumulativeSize"])
        except (KuboError, TimeoutError, KeyError, ValueError):
            return 0

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        cid = _checked_cid(spec)
        await self._sweep()
        entry = self.cache_dir / cid
        async with self._locks.setdefault(cid, asyncio.Lock()):
            if not await asyncio.to_thread(entry.exists):
                await self._fetch(cid, entry)
            await asyncio.to_thread(os.utime, entry, follow_symlinks=False)  # LRU order is mtime order
            self._in_use[cid] += 1
        volume = InputVolume(spec=spec, host_path=entry, target=spec.path)
        self._volumes[id(volume)] = cid
        await self._evict()
        return volume

    async def cleanup(self, volume: InputVolume) -> None:
        cid = self._volumes.pop(id(volume), None)
        if cid is not None:
            self._in_use[cid] -= 1
            if self._in_use[cid] <= 0:
                del self._in_use[cid]
        await self._evict()

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        cid = _checked_cid(spec)
        root = spec.path.rstrip("/")
        out = [spec.model_copy(update={"path": root})]
        try:
            async with asyncio.timeout(self.cfg.fetch_timeout):
                if (await self.kubo.stat(cid)).get("Type") == "directory":
                    await self._walk(spec, cid, root, out)
        except TimeoutError:
            raise InputUnavailable(_stalled(cid, self.cfg.fetch_timeout)) from None
        except KuboError as exc:
            raise InputUnavailable(f"IPFS CID {cid} could not be listed: {exc.message}") from exc
        return out

    async def _walk(self, spec: StorageSpec, cid: str, path: str, out: list[StorageSpec]) -> None:
        # Depth-first in name order, as Bacalhau v0.3.23's FlattenTreeNode.
        for link in sorted(await self.kubo.ls(cid), key=lambda link: str(link["Name"])):
            child = StorageSpec(
                storage_source=StorageSource.IPFS,
                name=spec.name,
                cid=link["Hash"],
                path=f"{path}/{link['Name']}",
            )
            out.append(child)
            if len(out) > self.max_files:
                raise InputUnavailable(
                    f"IPFS CID {spec.cid}: {too_many_files(self.max_files)}", retryable=False
                )
            if link.get("Type") == 1:
                await self._walk(spec, link["Hash"], child.path, out)

    async def _fetch(self, cid: str, entry: Path) -> None:
        """Fetch into a partial dir, then rename into place: a cancelled fetch leaves nothing."""
        tmp = self.cache_dir / f"{_PARTIAL}{cid}-{os.urandom(4).hex()}"
        await asyncio.to_thread(tmp.mkdir, parents=True)
        log.info("ipfs fetch started", extra={"cid": cid})
        try:
            async with asyncio.timeout(self.cfg.fetch_timeout) as deadline:
                st = await self.kubo.stat(cid)
                # kubo reports a mid-stream failure only in an HTTP trailer aiohttp does not
                # expose: every file's byte count is checked against kubo's own size.
                if st.get("Type") == "file":
                    progress.transfer().expect(int(st.get("Size") or 0))
                    await self._fetch_file(cid, tmp / cid, deadline)
                elif st.get("Type") == "directory":
                    await self._fetch_dir(cid, tmp / cid, deadline)
                else:
                    raise InputUnavailable(f"IPFS CID {cid} is neither a UnixFS file nor a directory")
            await asyncio.to_thread(os.rename, tmp / cid, entry)
            log.info("ipfs fetch done", extra={"cid": cid})
        except TimeoutError:
            raise InputUnavailable(_stalled(cid, self.cfg.fetch_timeout)) from None
        except KuboError as exc:
            raise InputUnavailable(f"IPFS CID {cid} could not be fetched: {exc.message}") from exc
        except UnsafeArchive as exc:  # the same CID is as unsafe next time: never retried
            raise InputUnavailable(
                f"IPFS CID {cid} cannot be used as an input: {exc}", retryable=False
            ) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def _fetch_file(
        self, cid: str, dest: Path, deadline: asyncio.Timeout, size: int | None = None
    ) -> None:
        """`cat` streamed to a new file; any bytes received push the stall deadline forward."""
        loop = asyncio.get_running_loop()
        counted = progress.transfer().stream()  # bytes and rate of the execution's `fetching inputs`

        def on_batch(total: int) -> None:
            deadline.reschedule(loop.time() + self.cfg.fetch_timeout)
            counted(total)

        async with self.kubo.stream("cat", arg=cid) as resp:
            header = resp.headers.get("X-Content-Length", "")
            received = await stream_to_file(resp, dest, on_batch, exclusive=True)
        for expected in (size, int(header) if header.isdigit() else None):
            if expected is not None and expected != received:
                raise InputUnavailable(f"IPFS CID {cid}: got {received} of {expected} bytes from kubo")

    async def _fetch_dir(self, cid: str, root: Path, deadline: asyncio.Timeout) -> None:
        """The tree as kubo lists it: directories made, files fetched with `cat`, symlinks last.

        A few files at a time: one `cat` leaves kubo and the disk idle between
        reads, and `get`'s tar cost a thread hop and Python's tarfile per byte.
        Symlinks are made after every file, so no write can go through one.
        """
        tree = _Tree()
        await self._list_dir(cid, root, "", tree, deadline)
        progress.transfer().expect(sum(size for _, _, size in tree.files))
        jobs = [
            functools.partial(self._fetch_file, file_cid, path, deadline, size)
            for path, file_cid, size in tree.files
        ]
        await _run_bounded(jobs, _PARALLEL_CATS)
        await asyncio.to_thread(_make_symlinks, root, tree.symlinks)

    async def _list_dir(self, cid: str, dest: Path, rel: str, tree: _Tree, deadline: asyncio.Timeout) -> None:
        await asyncio.to_thread(dest.mkdir, mode=0o755)
        links = await self.kubo.ls(cid)
        # One listing is one answer: kubo sends it whole once every child's type is resolved.
        deadline.reschedule(asyncio.get_running_loop().time() + self.cfg.fetch_timeout)
        seen: set[str] = set()
        for link in links:
            tree.entries += 1
            if tree.entries > self.max_files:
                raise UnsafeArchive(too_many_files(self.max_files))
            name = _checked_name(rel, link.get("Name"), seen)
            path, path_rel = dest / name, f"{rel}{name}"
            kind = link.get("Type")
            if kind in _DIR_TYPES:
                await self._list_dir(str(link["Hash"]), path, f"{path_rel}/", tree, deadline)
            elif kind == _FILE_TYPE:
                tree.files.append((path, str(link["Hash"]), int(link["Size"])))
            elif kind == _SYMLINK_TYPE:
                target = str(link.get("Target") or "")
                if not target or "\0" in target:
                    raise UnsafeArchive(f"link {path_rel!r} has no usable target ({target!r})")
                check_member(_symlink_info(path_rel, target))
                tree.symlinks.append((path, target))
            else:
                raise UnsafeArchive(f"{path_rel!r} is neither a file, a directory nor a symlink")

    async def _sweep(self) -> None:
        """Once per process: drop partial fetches and evictions a crash left behind.

        Every fetch waits for that one sweep to end: one that started meanwhile would have its
        partial dir swept from under it (two shards' first inputs, fetched at once, did).
        Shielded: a cancelled prepare leaves the sweep running for the others.
        """
        if self._sweeping is None:
            self._sweeping = asyncio.ensure_future(asyncio.to_thread(_remove_leftovers, self.cache_dir))
        try:
            await asyncio.shield(self._sweeping)
        except OSError:
            self._sweeping = None  # a sweep that failed (an unreadable cache dir) is tried again next time
            raise

    async def _evict(self) -> None:
        """Remove least recently used entries not in use until the cache fits cache_size."""
        entries = await asyncio.to_thread(_cache_entries, self.cache_dir, self._sizes)
        total = sum(size for _, _, size in entries)
        for _mtime_ns, path, size in sorted(entries):
            if total <= self.cfg.cache_size:
                break
            cid = path.name
            lock = self._locks.get(cid)
            if self._in_use[cid] or (lock is not None and lock.locked()):
                continue
            # Renamed at once (no await between check and rename), deleted in a thread.
            doomed = self.cache_dir / f"{_EVICTING}{cid}-{os.urandom(4).hex()}"
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                continue
            total -= size
            log.info("ipfs cache evicted", extra={"cid": cid, "bytes": size})
            await asyncio.to_thread(_remove, doomed)


@dataclass(slots=True)
class _Tree:
    """What a directory listing asks for: files to fetch (path, CID, bytes) and symlinks to make."""

    files: list[tuple[Path, str, int]] = field(default_factory=list)
    symlinks: list[tuple[Path, str]] = field(default_factory=list)
    entries: int = 0  # every file, directory and symlink listed so far


async def _run_bounded(jobs: Sequence[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the jobs, at most `limit` at once; the first failure cancels the rest and is raised."""
    pending = iter(jobs)

    async def worker() -> None:
        for job in pending:
            await job()

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(limit, len(jobs))):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        first = group.exceptions[0]  # one reason for the user; the others were cancelled
        raise first from first.__cause__


def _checked_name(rel: str, name: object, seen: set[str]) -> str:
    """A link name that stays one new path component (a DAG can hold any bytes there)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafeArchive(f"directory {rel or './'!r} holds an entry named {name!r}")
    if name in seen:  # two entries, one path: a file could be written through a symlink
        raise UnsafeArchive(f"directory {rel or './'!r} holds {name!r} twice")
    seen.add(name)
    return name


def _symlink_info(name: str, target: str) -> tarfile.TarInfo:
    # Described as a tar member, so the inline tar.gz rules (safe_tar) judge it too.
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _make_symlinks(root: Path, symlinks: list[tuple[Path, str]]) -> None:
    """Make the links, then check each against the real tree: a chain of links can't leave it."""
    for path, target in symlinks:
        os.symlink(target, path)
    top = os.path.realpath(root)
    for path, target in symlinks:
        real = os.path.realpath(path)
        if real != top and not real.startswith(top + os.sep):
            rel = path.relative_to(root)
            raise UnsafeArchive(f"link {str(rel)!r} points outside the directory ({target!r})")


def _checked_cid(spec: StorageSpec) -> str:
    if not _CID.match(spec.cid):
        raise InputUnavailable(f"{spec.cid!r} is not a CID")
    return spec.cid


def _stalled(cid: str, timeout_s: float) -> str:
    return (
        f"IPFS CID {cid}: no data from IPFS for {timeout_s:g} s (storage.ipfs.fetch_timeout); "
        "the content may not be available on the network"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_leftovers(cache_dir: Path) -> None:
    if cache_dir.is_dir():
        for p in cache_dir.iterdir():
            if p.name.startswith((_PARTIAL, _EVICTING)):
                shutil.rmtree(p, ignore_errors=True)


def _cache_entries(cache_dir: Path, sizes: dict[str, int]) -> list[tuple[int, Path, int]]:
    """(mtime_ns, path, bytes) of each complete cache entry; `sizes` memoizes the byte counts."""
    if not cache_dir.is_dir():
        return []
    out = []
    for p in cache_dir.iterdir():
        if not p.name.startswith("."):
            try:
                if p.name not in sizes:
                    sizes[p.name] = tree_size(p)
                out.append((p.lstat().st_mtime_ns, p, sizes[p.name]))
            except FileNotFoundError:
                continue
    for gone in set(sizes) - {p.name for _, p, _ in out}:
        sizes.pop(gone, None)
    return out
