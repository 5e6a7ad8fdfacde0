"""The Local publisher: a tar.gz of the results dir kept under data_dir, served by the node.

    <results_root>/<execution_id>.tar.gz    served at GET /api/v1/executions/{id}/results

Returns a URLDownload StorageSpec pointing there, as newest Bacalhau's local
publisher. Symlinks are archived as symlinks, never followed.
"""

from __future__ import annotations

import asyncio
import os
import re
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
    """Write the tar.gz beside dest and rename it in: a crash never leaves half an archive."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for entry in sorted(results_dir.iterdir()):
                tar.add(entry, arcname=entry.name, recursive=True, filter=_plain)  # symlinks kept as links
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
