"""A small client for kubo's RPC API (/api/v0), over aiohttp.

Plain HTTP rather than aioipfs 0.7.1: that library swallows connection errors
(returns None), cannot add a single file with aiohttp >= 3.12, buffers `get`
into a temp tar and extracts it without a filter, and ignores its read timeout
(docs/libraries.md). aiohttp rather than httpx: it reads large bodies several
times faster here (figures in docs/storage.md).
Every call is a POST, as kubo requires, and raises KuboError (or
KuboUnreachable) instead of returning a sentinel. Timeouts are the caller's:
wrap calls in `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp

from computenode.multiaddr import http_url

_CHUNK = 1 << 20


class KuboError(Exception):
    """kubo answered with an error (`message` is kubo's own text)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class KuboUnreachable(KuboError):
    """No answer from the RPC API at all (refused, reset, DNS)."""


class KuboClient:
    """One connection pool to one kubo daemon, opened on first use (constructors never touch the loop)."""

    CHECK_TIMEOUT_S = 5.0

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.base = http_url(addr) + "/api/v0"
        self._session: aiohttp.ClientSession | None = None

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No read timeout: kubo streams for as long as a DAG takes; callers bound it.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> str | None:
        """None when kubo answers, else why not (for /readyz and bids)."""
        try:
            async with asyncio.timeout(self.CHECK_TIMEOUT_S):
                await self.version()
        except (KuboError, TimeoutError) as exc:
            return (
                f"kubo unreachable at {self.addr}: {exc or f'no answer within {self.CHECK_TIMEOUT_S:.0f} s'}"
            )
        return None

    async def version(self) -> dict[str, Any]:
        return await self._json("version")

    async def stat(self, cid: str, *, offline: bool = False) -> dict[str, Any]:
        """files/stat of /ipfs/<cid>: Type (file|directory), CumulativeSize, Size."""
        return await self._json("files/stat", arg=f"/ipfs/{cid}", offline=offline)

    async def ls(self, cid: str) -> list[dict[str, Any]]:
        """Links of a directory: Name, Hash, Size, Type (1 directory, 2 file)."""
        data = await self._json("ls", arg=cid)
        objects = data.get("Objects") or [{}]
        return list(objects[0].get("Links") or [])

    async def is_local(self, cid: str) -> bool:
        """Whether every block of the DAG is in the local repo, asking no peer."""
        async with self.stream("refs", arg=cid, recursive=True, offline=True) as resp:
            async for line in resp.content:
                if line.strip() and json.loads(line).get("Err"):
                    return False
        return True

    @asynccontextmanager
    async def stream(self, cmd: str, **params: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed answer (`cat`, `get`, `refs`...): read `resp.content` inside the block.

        `cat` answers a file's bytes with `X-Content-Length`; `get` a tar whose top
        entry is named after the CID.
        """
        try:
            async with self._http.post(f"{self.base}/{cmd}", params=_params(params)) as resp:
                await _raise_for(resp)
                yield resp
        except aiohttp.ClientError as exc:
            raise _unreachable(self.base, exc) from exc

    async def add_dir(self, path: Path, *, pin: bool = True) -> str:
        """Add a directory tree (symlinks kept as symlinks, never followed); the root CID."""
        boundary = os.urandom(16).hex()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        params = _params({"recursive": True, "pin": pin, "quieter": True})
        last: dict[str, Any] = {}
        try:
            async with self._http.post(
                f"{self.base}/add", params=params, data=_multipart(path, boundary), headers=headers
            ) as resp:
                await _raise_for(resp)
                async for line in resp.content:
                    if line.strip():
                        last = json.loads(line)
        except aiohttp.ClientError as exc:
            raise _unreachable(self.base, exc) from exc
        if "Hash" not in last:
            raise KuboError(f"kubo add returned no root CID: {last}")
        return str(last["Hash"])

    async def _json(self, cmd: str, **params: Any) -> dict[str, Any]:
        async with self.stream(cmd, **params) as resp:
            return dict(await resp.json(content_type=None))


def _unreachable(base: str, exc: BaseException) -> KuboError:
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        return KuboUnreachable(f"kubo at {base} is unreachable: {exc}")
    return KuboError(f"the connection to kubo at {base} broke: {exc!r}")


async def read_batches(resp: aiohttp.ClientResponse, size: int = _CHUNK) -> AsyncIterator[list[bytes]]:
    """The body as lists of pieces of about `size` bytes together.

    aiohttp hands out what the socket had (often 64 KiB); a thread hop per piece
    would cost more than the write, and joining them would copy every byte again.
    """
    batch: list[bytes] = []
    held = 0
    async for piece in resp.content.iter_chunked(size):
        batch.append(piece)
        held += len(piece)
        if held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


async def stream_to_file(
    resp: aiohttp.ClientResponse,
    dest: Path,
    on_batch: Callable[[int], None],
    digest: Any = None,
    *,
    exclusive: bool = False,
) -> int:
    """Write the body to dest; the bytes written. Memory stays flat.

    Writes (and hashing, when `digest` is given) run in a thread while the next
    batch is read. `on_batch(total)` runs before each write: it may raise to stop
    (a size cap) or push a deadline forward. `exclusive`: dest must not exist yet
    (never written through a symlink).
    """
    total = 0
    pending: asyncio.Future[None] | None = None
    with await _open(dest, "xb" if exclusive else "wb") as f:
        try:
            async for batch in read_batches(resp):
                total += sum(len(p) for p in batch)
                on_batch(total)
                if pending is not None:
                    await asyncio.shield(pending)  # on cancel, the finally below waits for the thread
                pending = asyncio.ensure_future(asyncio.to_thread(_write_batch, f, batch, digest))
        finally:
            if pending is not None:
                await asyncio.wait({pending})  # the thread must finish before the file closes
        if pending is not None:
            pending.result()
    return total


async def _open(dest: Path, mode: str) -> IO[Any]:
    """open() in a thread: creating a file is slow enough to stall the loop over a directory
    of small files. On cancel it is closed once open returns."""
    opening = asyncio.ensure_future(asyncio.to_thread(open, dest, mode))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise


def _close_opened(opening: asyncio.Future[IO[Any]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _write_batch(f: Any, batch: list[bytes], digest: Any) -> None:
    for piece in batch:
        if digest is not None:
            digest.update(piece)
    f.writelines(batch)


def _params(params: dict[str, Any]) -> dict[str, str]:
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    body = (await resp.read()).decode(errors="replace")
    try:
        message = json.loads(body).get("Message") or body
    except ValueError:
        message = body
    raise KuboError(message.strip() or f"HTTP {resp.status}", resp.status)


async def _multipart(root: Path, boundary: str) -> AsyncIterator[bytes]:
    """kubo's directory upload: one part per entry, named by its path under the root's name.

    The walk, each open and each read run in a thread: the loop serves the API meanwhile.
    """
    for rel, kind, full in await asyncio.to_thread(_walk, root):
        name = quote(rel, safe="")
        ctype = {"dir": "application/x-directory", "link": "application/symlink"}.get(
            kind, "application/octet-stream"
        )
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        if kind == "link":
            yield (await asyncio.to_thread(os.readlink, full)).encode()
        elif kind == "file":
            with await _open(Path(full), "rb") as f:
                while chunk := await asyncio.to_thread(f.read, _CHUNK):
                    yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _walk(root: Path) -> list[tuple[str, str, str]]:
    """(path under the root's name, dir|file|link, full path), depth-first in name order.

    kubo's multipart reader needs each directory's entries right after it.
    """
    out: list[tuple[str, str, str]] = [(root.name, "dir", str(root))]

    def visit(full: str, rel: str) -> None:
        for entry in sorted(os.scandir(full), key=lambda e: e.name):
            child = f"{rel}/{entry.name}"
            if entry.is_symlink():
                out.append((child, "link", entry.path))  # never followed
            elif entry.is_dir():
                out.append((child, "dir", entry.path))
                visit(entry.path, child)
            elif entry.is_file():
                out.append((child, "file", entry.path))

    visit(str(root), root.name)
    return out
