"""Inline inputs: an RFC 2397 `data:` URL in StorageSpec.URL.

`application/gzip` is a tar.gz extracted (safely, see safe_tar) into a directory
at `path`; any other media type is the file's bytes, a file at `path`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import shutil
import tarfile
import uuid
from pathlib import Path
from urllib.parse import unquote_to_bytes

from computenode.errors import InputUnavailable
from computenode.model import StorageSpec
from computenode.storage.safe_tar import UnsafeArchive, extract_gzip_tar
from computenode.volume import InputVolume

MAX_EXTRACTED = 1 << 30  # a small tar.gz may expand hugely; inline data is meant to be small
_DIR_PREFIX = "inline-"


def parse_data_url(url: str) -> tuple[str, bytes]:
    """(media type, bytes) of a data: URL; ValueError when it is not one."""
    if not url.startswith("data:") or "," not in url:
        raise ValueError("an Inline input needs a data: URL (data:[<type>][;base64],<data>)")
    meta, _, payload = url[5:].partition(",")
    params = meta.split(";")
    media_type = params[0].strip().lower() or "text/plain"
    if params[-1].strip().lower() == "base64":
        try:
            return media_type, base64.b64decode(unquote_to_bytes(payload), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"the data: URL is not valid base64: {exc}") from None
    return media_type, unquote_to_bytes(payload)


def inline_size(spec: StorageSpec) -> int:
    """Bytes an inline input takes once prepared (a guess for a tar.gz); 0 for a bad data: URL.

    Needs no I/O, so the Bidder calls it directly instead of awaiting InlineStorage.size.
    """
    try:
        media_type, data = parse_data_url(spec.url)
    except ValueError:
        return 0
    return len(data) * 10 if _is_gzip_tar(media_type) else len(data)  # a guess for compressed tars


def _is_gzip_tar(media_type: str) -> bool:
    return media_type in ("application/gzip", "application/x-gzip")


class InlineStorage:
    def __init__(self, max_files: int = 100_000) -> None:
        self.max_files = max_files  # members of a tar.gz (limits.max_files)

    async def aclose(self) -> None:
        """Nothing to release."""

    async def check(self) -> str | None:
        return None

    async def has_locally(self, spec: StorageSpec) -> bool:
        return True

    async def size(self, spec: StorageSpec) -> int:
        return inline_size(spec)

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        try:
            media_type, data = parse_data_url(spec.url)
        except ValueError as exc:
            raise InputUnavailable(f"Inline input {spec.name or spec.path}: {exc}", retryable=False) from None
        folder = workdir / f"{_DIR_PREFIX}{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(folder.mkdir, parents=True)
        dest = folder / "data"
        try:
            await asyncio.to_thread(_materialize, media_type, data, dest, self.max_files)
        except (UnsafeArchive, tarfile.TarError, EOFError, OSError) as exc:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            reason = f"Inline input {spec.name or spec.path}: the tar.gz cannot be used: {exc}"
            raise InputUnavailable(reason, retryable=False) from exc
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return InputVolume(spec=spec, host_path=dest, target=spec.path)

    async def cleanup(self, volume: InputVolume) -> None:
        folder = volume.host_path.parent
        if folder.name.startswith(_DIR_PREFIX):
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]


def module_volume(spec: StorageSpec, workdir: Path) -> InputVolume | None:
    """An inline WASM module as bytes in memory, never written to disk and read back; None for a
    tar.gz (a directory holding the module), which prepare() extracts as before.

    `host_path` is where prepare() would have put the file (workdir/data): its stem stays the
    module's default name (argv[0]) whichever way the module is loaded.
    """
    try:
        media_type, data = parse_data_url(spec.url)
    except ValueError as exc:
        raise InputUnavailable(f"Inline input {spec.name or spec.path}: {exc}", retryable=False) from None
    if _is_gzip_tar(media_type):
        return None
    return InputVolume(spec=spec, host_path=workdir / "data", target=spec.path, data=data)


def _materialize(media_type: str, data: bytes, dest: Path, max_files: int) -> None:
    if _is_gzip_tar(media_type):
        extract_gzip_tar(io.BytesIO(data), dest, max_bytes=MAX_EXTRACTED, max_files=max_files)
    else:
        dest.write_bytes(data)
        dest.chmod(0o644)
