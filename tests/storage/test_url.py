"""URLStorage against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pydantic
import pytest
import pytest_asyncio
from aiohttp import web

from computenode.config import URLConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSource, StorageSpec
from computenode.storage.base import StorageProvider
from computenode.storage.url import MAX_REDIRECTS, SHA256_KEY, AddressPolicy, URLStorage, file_name
from tests.storage.conftest import Serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY = b"id,value\n1,2\n" * 100
ROOT = Path(__file__).resolve().parents[2]
NETNS_TOOLS = (("unshare", "util-linux"), ("mount", "util-linux"), ("ip", "iproute2"))
DENY = "a loopback or private address (storage.url.deny_private)"


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


async def test_redirects_are_bounded(storage: URLStorage, serve: Serve, tmp_path: Path) -> None:
    hits = 0

    async def loop(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        raise web.HTTPFound("/loop")

    base = await serve_one(serve, "/loop", loop)
    with pytest.raises(InputUnavailable, match=f"more than {MAX_REDIRECTS} redirects") as err:
        await storage.prepare(url_spec(f"{base}/loop"), tmp_path)
    assert not err.value.retryable and hits == MAX_REDIRECTS + 1


async def test_redirect_to_another_scheme_is_refused(
    storage: URLStorage, serve: Serve, tmp_path: Path
) -> None:
    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound("file:///etc/passwd")

    base = await serve_one(serve, "/away", away)
    with pytest.raises(InputUnavailable, match="redirect to file:///etc/passwd is not an http or https URL"):
        await storage.prepare(url_spec(f"{base}/away"), tmp_path)


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.1", "017700000001"])
async def test_deny_private_refuses_legacy_numeric_hosts(host: str, tmp_path: Path) -> None:
    # socket.getaddrinfo maps these onto 127.0.0.1; aiohttp takes the all-digit ones for addresses
    storage = URLStorage(URLConfig(deny_private=True, retries=0))
    try:
        with pytest.raises(InputUnavailable, match="deny_private") as err:
            await storage.prepare(url_spec(f"http://{host}:9/f"), tmp_path)
    finally:
        await storage.aclose()
    assert not err.value.retryable


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.17.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # link-local: cloud metadata services
        ("100.64.0.1", True),  # shared address space, not global
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::1", True),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
    ],
)
def test_address_policy(address: str, refused: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert AddressPolicy(True, []).refuses(ip) is refused
    assert not AddressPolicy(False, []).refuses(ip)


def test_allow_private() -> None:
    cfg = URLConfig(deny_private=True, allow_private=["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    policy = AddressPolicy(cfg.deny_private, cfg.allow_private)
    for allowed in ["127.0.0.1", "::ffff:127.0.0.1", "10.9.8.7", "fd12::1"]:
        assert not policy.refuses(ipaddress.ip_address(allowed)), allowed
    for refused in ["127.0.0.2", "::1", "192.168.0.1", "fe80::1"]:
        assert policy.refuses(ipaddress.ip_address(refused)), refused
    assert URLConfig().allow_private == []
    with pytest.raises(pydantic.ValidationError, match="not a network in CIDR form"):
        URLConfig(allow_private=["127.0.0.1/8"])  # host bits set: a typo for 127.0.0.0/8?


@pytest.fixture(scope="module")
def netns() -> dict[str, dict[str, Any]]:
    """Outcomes of tests/storage/url_netns.py, run once in new network and mount namespaces.

    There an HTTP server has 1.1.1.1, a global address, so deny_private has something
    to allow; it and 127.0.0.1 exist only in that namespace, which goes when the
    driver process (its only process) exits, on a timeout too (subprocess.run kills it).
    """
    for tool, package in NETNS_TOOLS:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the deny_private tests need it (apt-get install {package})")
    mine = [os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "mnt")]
    cmd = [
        "unshare",
        "--net",
        "--mount",
        "--",
        sys.executable,
        "-W",
        "error",
        "-m",
        "tests.storage.url_netns",
        *mine,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd} failed (root is needed for unshare --net):\n{proc.stderr}"
    outcomes: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    return outcomes


def test_deny_private_lets_a_global_address_through(netns: dict[str, dict[str, Any]]) -> None:
    for case in ("direct", "public_name"):
        assert netns[case] == {"ok": True, "name": "file", "body": "public", "size": 6, "secret_hits": 0}, (
            case
        )


def test_deny_private_checks_every_redirect_hop(netns: dict[str, dict[str, Any]]) -> None:
    assert netns["redirect_literal"] == {
        "ok": False,
        "error": f"redirect to http://127.0.0.1:8080/secret points to {DENY}",
        "retryable": False,
        "size": 0,
        "secret_hits": 0,
    }
    assert netns["redirect_name"] == {
        "ok": False,
        "error": f"redirect to http://inside.test:8080/secret: inside.test resolves to 127.0.0.1, {DENY}",
        "retryable": False,
        "size": 0,
        "secret_hits": 0,
    }
    # the same redirect without deny_private reaches the server on 127.0.0.1
    assert netns["open_redirect"]["ok"] and netns["open_redirect"]["body"] == "secret"


def test_deny_private_checks_the_address_a_name_resolves_to(netns: dict[str, dict[str, Any]]) -> None:
    assert netns["inside_name"] == {
        "ok": False,
        "error": f"http://inside.test:8080/secret: inside.test resolves to 127.0.0.1, {DENY}",
        "retryable": False,
        "size": 0,
        "secret_hits": 0,
    }


def test_deny_private_covers_ipv4_mapped_addresses(netns: dict[str, dict[str, Any]]) -> None:
    assert netns["mapped"] == {
        "ok": False,
        "error": f"http://[::ffff:127.0.0.1]:8080/secret points to {DENY}",
        "retryable": False,
        "size": 0,
        "secret_hits": 0,
    }
    # without deny_private the mapped address does reach 127.0.0.1
    assert netns["mapped_open"]["ok"] and netns["mapped_open"]["body"] == "secret"


def test_allow_private_lets_a_listed_network_through(netns: dict[str, dict[str, Any]]) -> None:
    for case in ("allowed_redirect", "allowed_name"):
        outcome = netns[case]
        assert outcome["ok"] and outcome["name"] == "secret" and outcome["body"] == "secret", (case, outcome)


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
