"""The Local publisher: a tar.gz of the results dir kept under data_dir, served by the node.

    <results_root>/<execution_id>.tar.gz    served at GET /api/v1/executions/{id}/results

Returns a URLDownload StorageSpec pointing there, as newest Bacalhau's local
publisher. Symlinks are archived as symlinks, never followed.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tarfile
from pathlib import Path

from computenode.errors import PublishFailed
from computenode.model import StorageSource, StorageSpec
from computenode.publishers.base import published_name

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class LocalPublisher:
    def __init__(self, results_root: Path, base_url: str) -> None:
        self.results_root = results_root
        self.base_url = base_url.rstrip("/")

    def path_for(self, execution_id: str) -> Path:
        """Where an execution's archive is (it may not exist); ValueError for an ID that is no file name."""
        if not _ID.match(execution_id) or ".." in execution_id:
            raise ValueError(f"{execution_id!r} is not an execution ID")
        return self.results_root / f"{execution_id}.tar.gz"

    def url_for(self, execution_id: str) -> str:
        return f"{self.base_url}/api/v1/executions/{execution_id}/results"

    async def aclose(self) -> None:
        """Nothing to release."""

    async def check(self) -> str | None:
        return await asyncio.to_thread(self._check)

    def _check(self) -> str | None:
        try:
            self.results_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {self.results_root}: {exc.strerror}"
        if not os.access(self.results_root, os.W_OK):
            return f"{self.results_root} is not writable"
        return None

    async def publish(
        self, execution_id: str, job_id: str, shard_index: int, node_id: str, results_dir: Path
    ) -> StorageSpec:
        """Idempotent: an archive already made for this execution is kept."""
        try:
            dest = self.path_for(execution_id)
        except ValueError as exc:
            raise PublishFailed(str(exc), retryable=False) from None
        await asyncio.to_thread(_publish, results_dir, dest)
        return StorageSpec(
            storage_source=StorageSource.URL_DOWNLOAD,
            name=published_name(job_id, shard_index, node_id),
            url=self.url_for(execution_id),
        )


def _publish(results_dir: Path, dest: Path) -> None:
    if dest.exists():
        return
    if not results_dir.is_dir():
        raise PublishFailed(f"results dir {results_dir} is missing", retryable=False)
    try:
        _archive(results_dir, dest)
    except OSError as exc:
        raise PublishFailed(f"writing {dest} failed: {exc}") from exc


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Only files, dirs and links, without setuid/setgid bits: a second fence after the runner's."""
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return None
    member.mode &= ~0o6000
    return member


def _archive(results_dir: Path, dest: Path) -> None:
    """Write the tar.gz beside dest and rename it in: a crash never leaves half an archive.

    GNU format: the PAX default added a header to every member for its fractional mtime.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6, format=tarfile.GNU_FORMAT) as tar:
            seen: dict[tuple[int, int], str] = {}
            for name in sorted(os.listdir(results_dir)):
                _add(tar, results_dir / name, name, seen)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _add(tar: tarfile.TarFile, path: Path, arcname: str, seen: dict[tuple[int, int], str]) -> None:
    """`tar.add(path, arcname, filter=_plain)` (symlinks kept as links, hard links as links to the
    first name archived) without its owner and group name lookups per member, mtimes in whole seconds."""
    st = os.lstat(path)
    info = tarfile.TarInfo(arcname)
    info.mode, info.uid, info.gid, info.mtime = st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        inode = (st.st_ino, st.st_dev)
        first = seen.get(inode)
        if st.st_nlink > 1 and first is not None and first != arcname:
            info.type, info.linkname = tarfile.LNKTYPE, first
        else:
            info.size = st.st_size
            if st.st_ino:
                seen[inode] = arcname
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    else:
        return  # FIFOs, sockets, devices: _plain refuses them anyway
    member = _plain(info)
    if member is None:
        return
    if member.isreg():
        with open(path, "rb") as f:
            tar.addfile(member, f)
        return
    tar.addfile(member)
    if member.isdir():
        for name in sorted(os.listdir(path)):
            _add(tar, path / name, f"{arcname}/{name}", seen)
