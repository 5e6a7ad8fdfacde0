"""URLDownload inputs: streamed to disk over http(s) with a size cap, a checksum and retries.

aiohttp rather than httpx: it reads large bodies several times faster here, as
fast as curl (figures in docs/storage.md).

As Bacalhau v0.3.23: the file is named after the last segment of the final URL
path (after redirects), a Docker job sees it at `<path>/<filename>` and a WASM
job at `<path>` itself. Unlike it: a size cap, a sha256 check when the spec's
Metadata has "sha256", and no retry for statuses that cannot get better.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import posixpath
import shutil
import socket
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from computenode.config import URLConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSpec
from computenode.storage.ipfs_client import stream_to_file
from computenode.volume import InputVolume

log = logging.getLogger(__name__)

SHA256_KEY = "sha256"  # Metadata key holding the expected hex digest
_NO_RETRY = {400, 404, 410}  # statuses a retry cannot change; Bacalhau retried every status
_DIR_PREFIX = "url-"


class _Permanent(Exception):
    """A failure this download cannot get past; carries the user's reason.

    `retryable` tells the node whether running the execution again later may help
    (a server that kept failing may come back; a 404 or a wrong checksum will not).
    """

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


class URLStorage:
    def __init__(self, cfg: URLConfig, *, backoff_s: float = 0.25) -> None:
        self.cfg = cfg
        self.backoff_s = backoff_s  # first retry wait, doubled each time, at most 2 s
        self._client: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._client is None:  # created lazily: constructors never touch the loop
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.cfg.fetch_timeout)
            self._client = aiohttp.ClientSession(timeout=timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def check(self) -> str | None:
        return None

    async def has_locally(self, spec: StorageSpec) -> bool:
        return False

    async def size(self, spec: StorageSpec) -> int:
        """Content-Length from a HEAD request, best effort: 0 when unknown."""
        try:
            url = await self._checked_url(spec.url)
            async with asyncio.timeout(min(10.0, self.cfg.fetch_timeout)):
                async with self.http.head(url, allow_redirects=True) as resp:
                    return int(resp.headers.get("Content-Length", 0)) if resp.ok else 0
        except (_Permanent, aiohttp.ClientError, TimeoutError, ValueError):
            return 0

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        url = spec.url.strip().strip("\"'")
        folder = workdir / f"{_DIR_PREFIX}{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(folder.mkdir, parents=True)
        try:
            url = await self._checked_url(url)
            async with asyncio.timeout(self.cfg.fetch_timeout):
                file = await self._download_with_retries(url, folder, spec.metadata.get(SHA256_KEY, ""))
        except _Permanent as exc:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise InputUnavailable(str(exc), retryable=exc.retryable) from exc.__cause__
        except TimeoutError:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise InputUnavailable(
                f"download of {url} did not finish within {self.cfg.fetch_timeout:g} s (storage.url.fetch_timeout)"
            ) from None
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return InputVolume(spec=spec, host_path=folder, target=spec.path, host_file=file)

    async def cleanup(self, volume: InputVolume) -> None:
        if volume.host_path.name.startswith(_DIR_PREFIX):
            await asyncio.to_thread(shutil.rmtree, volume.host_path, True)

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]

    async def _checked_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Permanent(f"{url!r} is not an http or https URL")
        if self.cfg.deny_private and await _is_private(parts.hostname):
            raise _Permanent(f"{url!r} points to a loopback or private address (storage.url.deny_private)")
        return url

    async def _download_with_retries(self, url: str, folder: Path, sha256: str) -> Path:
        attempt = 0
        while True:
            try:
                return await self._download(url, folder, sha256.lower())
            except (_Permanent, aiohttp.TooManyRedirects, aiohttp.InvalidURL) as exc:
                if isinstance(exc, _Permanent):
                    raise
                raise _Permanent(f"download of {url} failed: {_why(exc)}") from exc
            except (aiohttp.ClientError, _Retryable) as exc:
                if attempt >= self.cfg.retries:
                    reason = f"download of {url} failed after {attempt + 1} attempts: {_why(exc)}"
                    raise _Permanent(reason, retryable=True) from exc
                wait = min(2.0, self.backoff_s * 2**attempt)
                log.info(
                    "url download retry", extra={"url": url, "attempt": attempt + 1, "reason": _why(exc)}
                )
                attempt += 1
                await asyncio.sleep(wait)

    async def _download(self, url: str, folder: Path, sha256: str) -> Path:
        await asyncio.to_thread(_empty, folder)  # a previous attempt's partial file
        async with self.http.get(url, allow_redirects=True, max_redirects=10) as resp:
            if resp.status in _NO_RETRY:
                raise _Permanent(f"non-200 response from URL ({url}): {resp.status}")
            if not resp.ok:
                raise _Retryable(f"non-200 response from URL ({url}): {resp.status}")
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self.cfg.max_size:
                raise _Permanent(_too_big(url, self.cfg.max_size))
            dest = folder / file_name(str(resp.url))
            digest = hashlib.sha256() if sha256 else None
            await self._write(resp, dest, digest, url)
        if digest is not None and digest.hexdigest() != sha256:
            raise _Permanent(
                f"checksum mismatch for {url}: sha256 is {digest.hexdigest()}, the spec says {sha256}"
            )
        return dest

    async def _write(
        self, resp: aiohttp.ClientResponse, dest: Path, digest: hashlib._Hash | None, url: str
    ) -> None:
        def capped(total: int) -> None:
            if total > self.cfg.max_size:
                raise _Permanent(_too_big(url, self.cfg.max_size))

        await stream_to_file(resp, dest, capped, digest)


class _Retryable(Exception):
    pass


def file_name(final_url: str) -> str:
    """The last segment of the URL path, as Bacalhau; a generated name when there is none."""
    name = posixpath.basename(unquote(urlsplit(final_url).path))
    if name in ("", ".", "..") or "\0" in name:
        return uuid.uuid4().hex
    return name


def _too_big(url: str, cap: int) -> str:
    return f"download of {url} is larger than {cap} bytes (storage.url.max_size)"


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _is_private(host: str) -> bool:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False  # the download itself will report the DNS failure
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
            return True
    return False


def _empty(folder: Path) -> None:
    for stale in folder.iterdir():
        stale.unlink()
