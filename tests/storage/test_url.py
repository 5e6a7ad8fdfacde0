"""URLStorage against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from aiohttp import web

from computenode.config import URLConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSource, StorageSpec
from computenode.storage.base import StorageProvider
from computenode.storage.url import SHA256_KEY, URLStorage, file_name
from tests.storage.conftest import Serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY = b"id,value\n1,2\n" * 100


def url_spec(url: str, **metadata: str) -> StorageSpec:
    return StorageSpec(storage_source=StorageSource.URL_DOWNLOAD, url=url, path="/inputs", metadata=metadata)


@pytest_asyncio.fixture
async def storage() -> AsyncIterator[URLStorage]:
    s = URLStorage(URLConfig(fetch_timeout=20, retries=3), backoff_s=0.01)
    yield s
    await s.aclose()


class Flaky:
    """Answers `statuses` in turn, then 200 with BODY; counts the hits."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.statuses:
            return web.Response(status=self.statuses.pop(0), text="not now")
        return web.Response(body=BODY)


async def serve_one(serve: Serve, path: str, handler: Flaky | Handler) -> str:
    app = web.Application()
    app.router.add_get(path, handler.handle if isinstance(handler, Flaky) else handler)
    return await serve(app)


def test_conforms(storage: URLStorage) -> None:
    provider: StorageProvider = storage
    assert isinstance(provider, StorageProvider)


async def test_download_named_after_last_segment(storage: URLStorage, serve: Serve, tmp_path: Path) -> None:
    flaky = Flaky()
    base = await serve_one(serve, "/data/table.csv", flaky)
    vol = await storage.prepare(url_spec(f"{base}/data/table.csv"), tmp_path)
    assert vol.host_file is not None and vol.host_file.name == "table.csv"
    assert vol.host_file.parent == vol.host_path and vol.host_file.read_bytes() == BODY
    assert vol.target == "/inputs"
    assert await storage.size(url_spec(f"{base}/data/table.csv")) == len(BODY)
    await storage.cleanup(vol)
    assert not vol.host_path.exists()


async def test_404_is_not_retried(storage: URLStorage, serve: Serve, tmp_path: Path) -> None:
    flaky = Flaky(404)
    base = await serve_one(serve, "/f.csv", flaky)
    with pytest.raises(InputUnavailable, match="404") as err:
        await storage.prepare(url_spec(f"{base}/f.csv"), tmp_path)
    assert flaky.hits == 1 and not err.value.retryable
    assert not list(tmp_path.iterdir())


async def test_500_then_200_is_retried(storage: URLStorage, serve: Serve, tmp_path: Path) -> None:
    flaky = Flaky(500)
    base = await serve_one(serve, "/f.csv", flaky)
    vol = await storage.prepare(url_spec(f"{base}/f.csv"), tmp_path)
    assert flaky.hits == 2 and vol.host_file is not None and vol.host_file.read_bytes() == BODY


async def test_401_twice_then_200_as_bacalhaus_flaky_test(
    storage: URLStorage, serve: Serve, tmp_path: Path
) -> None:
    flaky = Flaky(401, 401)
    base = await serve_one(serve, "/f.csv", flaky)
    vol = await storage.prepare(url_spec(f"{base}/f.csv"), tmp_path)
    assert flaky.hits == 3 and vol.host_file is not None and vol.host_file.read_bytes() == BODY


async def test_retries_run_out(serve: Serve, tmp_path: Path) -> None:
    flaky = Flaky(503, 503, 503)
    base = await serve_one(serve, "/f.csv", flaky)
    storage = URLStorage(URLConfig(retries=2), backoff_s=0.01)
    try:
        with pytest.raises(InputUnavailable, match="after 3 attempts.*503") as err:
            await storage.prepare(url_spec(f"{base}/f.csv"), tmp_path)
    finally:
        await storage.aclose()
    assert flaky.hits == 3 and err.value.retryable


async def test_connection_refused_is_retried_then_fails(storage: URLStorage, tmp_path: Path) -> None:
    with pytest.raises(InputUnavailable, match="after 4 attempts"):
        await storage.prepare(url_spec("http://127.0.0.1:9/f.csv"), tmp_path)


async def test_redirect_names_the_file_after_the_final_url(
    storage: URLStorage, serve: Serve, tmp_path: Path
) -> None:
    async def old(request: web.Request) -> web.Response:
        raise web.HTTPFound("/files/final%20name.csv")

    app = web.Application()
    app.router.add_get("/download", old)
    app.router.add_get("/files/{name}", Flaky().handle)
    base = await serve(app)
    vol = await storage.prepare(url_spec(f"{base}/download"), tmp_path)
    assert vol.host_file is not None and vol.host_file.name == "final name.csv"


def test_file_name() -> None:
    assert file_name("http://h/a/b.txt?x=1") == "b.txt"
    assert len(file_name("http://h/")) == 32 and len(file_name("http://h")) == 32
    assert len(file_name("http://h/a/..")) == 32


async def test_slow_server_hits_the_fetch_timeout(serve: Serve, tmp_path: Path) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"x")
        await asyncio.sleep(60)
        return resp

    base = await serve_one(serve, "/slow.bin", slow)
    storage = URLStorage(URLConfig(fetch_timeout=1, retries=0))
    try:
        async with asyncio.timeout(15):
            with pytest.raises(InputUnavailable, match="fetch_timeout"):
                await storage.prepare(url_spec(f"{base}/slow.bin"), tmp_path)
    finally:
        await storage.aclose()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_hits_the_cap(serve: Serve, tmp_path: Path, chunked: bool) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = 5000
        await resp.prepare(request)
        for _ in range(5):
            await resp.write(b"y" * 1000)
        return resp

    base = await serve_one(serve, "/big.bin", big)
    storage = URLStorage(URLConfig(max_size=1500))
    try:
        with pytest.raises(InputUnavailable, match="max_size") as err:
            await storage.prepare(url_spec(f"{base}/big.bin"), tmp_path)
    finally:
        await storage.aclose()
    assert not err.value.retryable and not list(tmp_path.iterdir())


async def test_checksum(storage: URLStorage, serve: Serve, tmp_path: Path) -> None:
    flaky = Flaky()
    base = await serve_one(serve, "/f.csv", flaky)
    good = hashlib.sha256(BODY).hexdigest()
    vol = await storage.prepare(url_spec(f"{base}/f.csv", **{SHA256_KEY: good.upper()}), tmp_path)
    assert vol.host_file is not None and vol.host_file.read_bytes() == BODY
    with pytest.raises(InputUnavailable, match="checksum mismatch") as err:
        await storage.prepare(url_spec(f"{base}/f.csv", **{SHA256_KEY: "0" * 64}), tmp_path)
    assert not err.value.retryable and flaky.hits == 2


async def test_two_downloads_in_parallel(storage: URLStorage, serve: Serve, tmp_path: Path) -> None:
    gate = asyncio.Event()
    started = 0

    async def paired(request: web.Request) -> web.Response:
        nonlocal started
        started += 1
        if started == 2:
            gate.set()
        await asyncio.wait_for(gate.wait(), 10)  # both requests must be in flight at once
        return web.Response(body=request.match_info["name"].encode())

    base = await serve_one(serve, "/{name}", paired)
    a, b = await asyncio.gather(
        storage.prepare(url_spec(f"{base}/one.txt"), tmp_path),
        storage.prepare(url_spec(f"{base}/two.txt"), tmp_path),
    )
    assert a.host_file is not None and a.host_file.read_bytes() == b"one.txt"
    assert b.host_file is not None and b.host_file.read_bytes() == b"two.txt"
    assert a.host_path != b.host_path


async def test_deny_private_and_bad_schemes(serve: Serve, tmp_path: Path) -> None:
    base = await serve_one(serve, "/f.csv", Flaky())
    storage = URLStorage(URLConfig(deny_private=True))
    try:
        with pytest.raises(InputUnavailable, match="deny_private"):
            await storage.prepare(url_spec(f"{base}/f.csv"), tmp_path)
        with pytest.raises(InputUnavailable, match="not an http"):
            await storage.prepare(url_spec("file:///etc/passwd"), tmp_path)
    finally:
        await storage.aclose()


async def test_one_gigabyte_with_flat_memory(serve: Serve, tmp_path: Path) -> None:
    chunk = os.urandom(1 << 20)
    size = 1 << 30

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        for _ in range(size // len(chunk)):  # generated as it goes, never held whole
            await resp.write(chunk)
        return resp

    base = await serve_one(serve, "/huge.bin", huge)
    storage = URLStorage(URLConfig(fetch_timeout=110, max_size=2 << 30))
    proc = psutil.Process()
    before = peak = proc.memory_info().rss

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        vol = await storage.prepare(url_spec(f"{base}/huge.bin"), tmp_path)
    finally:
        sampler.cancel()
        await storage.aclose()
    assert vol.host_file is not None and vol.host_file.stat().st_size == size
    assert peak - before < 150 * 2**20, f"RSS grew by {(peak - before) >> 20} MiB for a 1 GiB download"
    await URLStorage(URLConfig()).cleanup(vol)
