"""A small client for kubo's RPC API (/api/v0), over httpx.

Plain HTTP rather than aioipfs 0.7.1: that library swallows connection errors
(returns None), cannot add a single file with aiohttp >= 3.12, buffers `get`
into a temp tar and extracts it without a filter, and ignores its read timeout
(LIBRARIES.md §3.2, §10). Every call here is a POST, as kubo requires, and
raises KuboError (or KuboUnreachable) instead of returning a sentinel.
Timeouts are the caller's: wrap calls in `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

_MADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/https?)?/?$")
_CHUNK = 1 << 20


class KuboError(Exception):
    """kubo answered with an error (`message` is kubo's own text)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class KuboUnreachable(KuboError):
    """No answer from the RPC API at all (refused, reset, DNS)."""


def api_url(addr: str) -> str:
    """http://host:port from a multiaddr (/ip4/127.0.0.1/tcp/5001) or an http(s) URL."""
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    m = _MADDR.match(addr.strip())
    if not m:
        raise ValueError(f"{addr!r} is not an IPFS API multiaddr like /ip4/127.0.0.1/tcp/5001")
    proto, host, port, scheme = m.groups()
    host = f"[{host}]" if proto == "ip6" else host
    return f"{(scheme or '/http')[1:]}://{host}:{port}"


class KuboClient:
    """One connection pool to one kubo daemon; create it inside the running loop's lifetime."""

    def __init__(self, addr: str) -> None:
        self.base = api_url(addr) + "/api/v0"
        # No httpx timeout on reads: kubo streams for as long as a DAG takes; callers bound it.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))

    async def close(self) -> None:
        await self._http.aclose()

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
        async with self._stream("refs", arg=cid, recursive="true", offline="true") as resp:
            async for line in resp.aiter_lines():
                if line.strip() and json.loads(line).get("Err"):
                    return False
        return True

    @asynccontextmanager
    async def cat(self, cid: str) -> AsyncIterator[httpx.Response]:
        """The bytes of a file CID; `X-Content-Length` says how many to expect."""
        async with self._stream("cat", arg=cid) as resp:
            yield resp

    @asynccontextmanager
    async def get(self, cid: str) -> AsyncIterator[httpx.Response]:
        """A tar stream of a CID, its top entry named after the CID."""
        async with self._stream("get", arg=cid) as resp:
            yield resp

    async def add_dir(self, path: Path, *, pin: bool = True) -> str:
        """Add a directory tree (symlinks kept as symlinks, never followed); the root CID."""
        boundary = os.urandom(16).hex()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        params = {"recursive": "true", "pin": str(pin).lower(), "quieter": "true"}
        body = _multipart(path, boundary)
        try:
            async with self._http.stream(
                "POST", f"{self.base}/add", params=params, content=body, headers=headers
            ) as resp:
                await _raise_for(resp)
                last: dict[str, Any] = {}
                async for line in resp.aiter_lines():
                    if line.strip():
                        last = json.loads(line)
        except httpx.TransportError as exc:
            raise KuboUnreachable(f"kubo at {self.base} is unreachable: {exc!r}") from exc
        if "Hash" not in last:
            raise KuboError(f"kubo add returned no root CID: {last}")
        return str(last["Hash"])

    async def _json(self, cmd: str, **params: Any) -> dict[str, Any]:
        try:
            resp = await self._http.post(f"{self.base}/{cmd}", params=_params(params))
        except httpx.TransportError as exc:
            raise KuboUnreachable(f"kubo at {self.base} is unreachable: {exc!r}") from exc
        await _raise_for(resp)
        return dict(resp.json())

    @asynccontextmanager
    async def _stream(self, cmd: str, **params: Any) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream("POST", f"{self.base}/{cmd}", params=_params(params)) as resp:
                await _raise_for(resp)
                yield resp
        except httpx.TransportError as exc:
            raise KuboUnreachable(f"kubo at {self.base} is unreachable: {exc!r}") from exc


def _params(params: dict[str, Any]) -> dict[str, str]:
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}


async def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    body = (await resp.aread()).decode(errors="replace")
    try:
        message = json.loads(body).get("Message") or body
    except ValueError:
        message = body
    raise KuboError(message.strip() or f"HTTP {resp.status_code}", resp.status_code)


async def _multipart(root: Path, boundary: str) -> AsyncIterator[bytes]:
    """kubo's directory upload: one part per entry, named by its path under the root's name."""
    for rel, kind, full in _walk(root):
        name = quote(rel, safe="")
        ctype = {"dir": "application/x-directory", "link": "application/symlink"}.get(
            kind, "application/octet-stream"
        )
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        if kind == "link":
            yield os.readlink(full).encode()
        elif kind == "file":
            with open(full, "rb") as f:  # noqa: ASYNC230 - reads go to a thread below
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
