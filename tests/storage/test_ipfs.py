"""IPFSStorage against the real kubo of the test bed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from computenode.config import IPFSConfig
from computenode.errors import InputUnavailable
from computenode.model import Spec, StorageSource, StorageSpec
from computenode.storage.base import StorageProvider
from computenode.storage.ipfs import IPFSStorage
from computenode.storage.sharding import shard_storage, total_shards


def ipfs_spec(cid: str, path: str = "/inputs") -> StorageSpec:
    return StorageSpec(storage_source=StorageSource.IPFS, cid=cid, path=path)


@pytest_asyncio.fixture
async def storage(ipfs_api: str, tmp_path: Path) -> AsyncIterator[IPFSStorage]:
    s = IPFSStorage(IPFSConfig(api=ipfs_api, fetch_timeout=20), tmp_path / "cache")
    yield s
    await s.aclose()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    (root / f"unique-{os.urandom(6).hex()}").write_text("makes this CID new to the cache")
    return root


def test_conforms(storage: IPFSStorage) -> None:
    provider: StorageProvider = storage
    assert isinstance(provider, StorageProvider)


async def test_check(storage: IPFSStorage, tmp_path: Path) -> None:
    assert await storage.check() is None
    down = IPFSStorage(IPFSConfig(api="/ip4/127.0.0.1/tcp/9"), tmp_path)
    reason = await down.check()
    await down.aclose()
    assert reason is not None and "kubo unreachable" in reason


async def test_file_cid_is_a_file_at_path(
    storage: IPFSStorage, tmp_path: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello " + os.urandom(8).hex().encode())
    cid = await ipfs_add(f)
    vol = await storage.prepare(ipfs_spec(cid, "/inputs/hello.txt"), tmp_path / "work")
    assert vol.host_path.is_file() and vol.host_path.read_bytes() == f.read_bytes()
    assert vol.target == "/inputs/hello.txt"
    assert await storage.size(ipfs_spec(cid)) >= len(f.read_bytes())
    await storage.cleanup(vol)


async def test_directory_cid_is_a_directory(
    storage: IPFSStorage, tree: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    cid = await ipfs_add(tree)
    vol = await storage.prepare(ipfs_spec(cid), tree.parent / "work")
    assert vol.host_path.is_dir()
    assert (vol.host_path / "a.txt").read_text() == "alpha\n"
    assert (vol.host_path / "sub" / "b.txt").read_text() == "beta\n"
    assert not [p for p in storage.cache_dir.iterdir() if p.name.startswith(".")]
    await storage.cleanup(vol)
    await storage.cleanup(vol)  # idempotent


async def test_two_cids_in_one_job_and_cache_reuse(
    storage: IPFSStorage, tree: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    one, two = await ipfs_add(tree / "a.txt"), await ipfs_add(tree)
    v1, v2 = await asyncio.gather(
        storage.prepare(ipfs_spec(one, "/inputs/a"), tree.parent),
        storage.prepare(ipfs_spec(two, "/inputs/b"), tree.parent),
    )
    assert v1.host_path.read_text() == "alpha\n" and (v2.host_path / "sub").is_dir()
    inode = v2.host_path.stat().st_ino
    again = await storage.prepare(
        ipfs_spec(two, "/other"), tree.parent
    )  # a second job: served from the cache
    assert again.host_path.stat().st_ino == inode and again.target == "/other"
    for v in (v1, v2, again):
        await storage.cleanup(v)


async def test_missing_cid_fails_within_fetch_timeout(
    ipfs_api: str, tmp_path: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    f = tmp_path / "never-added"
    f.write_bytes(os.urandom(64))
    cid = await ipfs_add(f, only_hash=True)
    storage = IPFSStorage(IPFSConfig(api=ipfs_api, fetch_timeout=3), tmp_path / "cache")
    try:
        async with asyncio.timeout(3 + 10):  # a bound, not a measurement
            with pytest.raises(InputUnavailable) as err:
                await storage.prepare(ipfs_spec(cid), tmp_path / "work")
    finally:
        await storage.aclose()
    assert cid in err.value.reason and err.value.retryable
    assert not list((tmp_path / "cache").iterdir())


async def test_locality(storage: IPFSStorage, tree: Path, ipfs_add: Callable[..., Awaitable[str]]) -> None:
    local = await ipfs_add(tree)
    (tree / "extra").write_text(os.urandom(8).hex())
    absent = await ipfs_add(tree, only_hash=True)
    assert await storage.has_locally(ipfs_spec(local))
    assert not await storage.has_locally(ipfs_spec(absent))
    assert not await storage.has_locally(ipfs_spec("not/a/cid"))


async def test_symlink_out_of_the_dag_is_refused(
    storage: IPFSStorage, tree: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    (tree / "escape").symlink_to("/etc/passwd")
    cid = await ipfs_add(tree)
    with pytest.raises(InputUnavailable, match="points to the absolute path"):
        await storage.prepare(ipfs_spec(cid), tree.parent)
    assert not [p for p in storage.cache_dir.iterdir()]


async def test_nested_tree_with_links_and_empty_entries(
    storage: IPFSStorage, tree: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    (tree / "sub" / "deeper" / "empty-dir").mkdir(parents=True)
    (tree / "sub" / "deeper" / "empty.txt").write_bytes(b"")
    (tree / "sub" / "deeper" / "blob").write_bytes(blob := os.urandom(700_000))  # several blocks
    (tree / "sub" / "to-a").symlink_to("../a.txt")
    (tree / "to-sub").symlink_to("sub")
    cid = await ipfs_add(tree)
    vol = await storage.prepare(ipfs_spec(cid), tree.parent)
    root = vol.host_path
    assert (root / "sub" / "deeper" / "blob").read_bytes() == blob
    assert (root / "sub" / "deeper" / "empty.txt").read_bytes() == b""
    assert (root / "sub" / "deeper" / "empty-dir").is_dir()
    assert (
        os.readlink(root / "sub" / "to-a") == "../a.txt" and (root / "sub" / "to-a").read_text() == "alpha\n"
    )
    assert os.readlink(root / "to-sub") == "sub" and (root / "to-sub" / "b.txt").read_text() == "beta\n"
    await storage.cleanup(vol)


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"sub/up": "../../outside"}, "points outside the archive"),
        # Each link alone stays inside; followed one after the other they leave the tree.
        ({"hop": "sub", "sub/back": "..", "escape": "hop/back/.."}, "points outside the directory"),
    ],
)
async def test_symlink_leaving_the_tree_is_refused(
    storage: IPFSStorage,
    tree: Path,
    ipfs_add: Callable[..., Awaitable[str]],
    links: dict[str, str],
    message: str,
) -> None:
    for name, target in links.items():
        (tree / name).symlink_to(target)
    cid = await ipfs_add(tree)
    with pytest.raises(InputUnavailable, match=message):
        await storage.prepare(ipfs_spec(cid), tree.parent)
    assert not list(storage.cache_dir.iterdir())


async def test_lru_eviction_spares_entries_in_use(
    ipfs_api: str, tmp_path: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    cids = []
    for i in range(3):
        f = tmp_path / f"f{i}"
        f.write_bytes(os.urandom(4000))
        cids.append(await ipfs_add(f))
    storage = IPFSStorage(IPFSConfig(api=ipfs_api, cache_size=9000), tmp_path / "cache")
    try:
        v0 = await storage.prepare(ipfs_spec(cids[0]), tmp_path)
        v1 = await storage.prepare(ipfs_spec(cids[1]), tmp_path)
        await storage.cleanup(v1)
        v2 = await storage.prepare(ipfs_spec(cids[2]), tmp_path)  # 12000 > 9000: evict the LRU not in use
        names = {p.name for p in storage.cache_dir.iterdir()}
        assert names == {cids[0], cids[2]}  # cids[0] is older but still in use
        await storage.cleanup(v0)
        await storage.cleanup(v2)
    finally:
        await storage.aclose()


async def test_cancelled_fetch_leaves_no_partial(
    storage: IPFSStorage, tmp_path: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    big = tmp_path / "big"
    (big / "d").mkdir(parents=True)
    blob = big / "d" / "blob"
    await asyncio.to_thread(lambda: blob.write_bytes(os.urandom(40 << 20)))  # 40 MiB: ~150 ms of CPU
    cid = await ipfs_add(big)
    task = asyncio.create_task(storage.prepare(ipfs_spec(cid), tmp_path))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        vol = await task
        await storage.cleanup(vol)  # finished before the cancel: fine too
    except asyncio.CancelledError:
        pass
    assert not [p for p in storage.cache_dir.iterdir() if p.name.startswith(".")]


async def test_first_fetches_at_once_wait_for_the_sweep(
    storage: IPFSStorage,
    tmp_path: Path,
    ipfs_add: Callable[..., Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start-up sweep of leftover partial dirs must not remove the partial dir of a fetch
    that began while it ran (two shards' first inputs: a FileNotFoundError, then an internal error)."""
    import computenode.storage.ipfs as ipfs_module

    sweep = ipfs_module._remove_leftovers

    def slow_sweep(cache_dir: Path) -> None:
        # Sweeps once another fetch has made its partial dir (it never does when fetches wait).
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if cache_dir.is_dir() and any(
                p.name.startswith(ipfs_module._PARTIAL) for p in cache_dir.iterdir()
            ):
                break
            time.sleep(0.002)
        sweep(cache_dir)

    monkeypatch.setattr(ipfs_module, "_remove_leftovers", slow_sweep)
    cids = []
    for i in range(2):
        f = tmp_path / f"input-{i}"
        f.write_text(f"{i} {os.urandom(8).hex()}")
        cids.append(await ipfs_add(f))
    volumes = await asyncio.gather(
        *(storage.prepare(ipfs_spec(c), tmp_path / f"w{i}") for i, c in enumerate(cids))
    )
    assert [v.host_path.read_text().split()[0] for v in volumes] == ["0", "1"]
    for v in volumes:
        await storage.cleanup(v)


async def test_hundred_files_sharded_with_glob_and_batch(
    storage: IPFSStorage, tmp_path: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(100):
        (data / f"{i:03d}.txt").write_text(f"{i}\n")
    (data / "README.md").write_text("not matched")
    cid = await ipfs_add(data)
    spec = Spec.model_validate(
        {
            "Engine": "Noop",
            "inputs": [{"StorageSource": "IPFS", "CID": cid, "path": "/inputs"}],
            "Sharding": {"GlobPattern": "/inputs/*.txt", "BatchSize": 7},
        }
    )
    assert await total_shards(spec, storage.explode) == 15  # 14 batches of 7 and one of 2
    shard = await shard_storage(spec, 14, storage.explode)
    assert [s.path for s in shard] == ["/inputs/098.txt", "/inputs/099.txt"]
    vols = [await storage.prepare(s, tmp_path / "work") for s in shard]
    assert [v.host_path.read_text() for v in vols] == ["98\n", "99\n"]
    assert [v.target for v in vols] == ["/inputs/098.txt", "/inputs/099.txt"]


async def test_a_directory_over_max_files_fails_naming_the_limit(
    ipfs_api: str, tmp_path: Path, ipfs_add: Callable[..., Awaitable[str]]
) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        (root / f"f{i:02}").write_text(str(i))
    cid = await ipfs_add(root)
    s = IPFSStorage(IPFSConfig(api=ipfs_api, fetch_timeout=20), tmp_path / "cache", max_files=10)
    try:
        for attempt in (s.prepare(ipfs_spec(cid), tmp_path / "work"), s.explode(ipfs_spec(cid))):
            with pytest.raises(InputUnavailable) as caught:
                await attempt
            assert "too many files: over 10 (limits.max_files)" in caught.value.reason
            assert not caught.value.retryable
    finally:
        await s.aclose()
    assert not list((tmp_path / "cache").glob(cid))  # nothing half-fetched stays in the cache
