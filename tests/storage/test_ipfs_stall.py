"""The stall timeout against a kubo that is online but alone: missing blocks never come."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from computenode.config import IPFSConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSpec
from computenode.storage.ipfs import IPFSStorage
from tests.services import PrivateKubo

STALL_S = 2.0
BOUND_S = STALL_S + 8  # a bound on a hang, not a measurement


@pytest_asyncio.fixture
async def storage(online_kubo: PrivateKubo, tmp_path: Path) -> AsyncIterator[IPFSStorage]:
    s = IPFSStorage(IPFSConfig(api=online_kubo.api, fetch_timeout=STALL_S), tmp_path / "cache")
    yield s
    await s.aclose()


def spec(cid: str) -> StorageSpec:
    return StorageSpec(cid=cid, path="/inputs")


async def test_missing_cid_fails_after_the_stall_timeout(
    storage: IPFSStorage, online_kubo: PrivateKubo, tmp_path: Path
) -> None:
    f = tmp_path / "never-added"
    f.write_bytes(os.urandom(256))
    cid = online_kubo.cli("add", "-Q", "--only-hash", str(f))
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(InputUnavailable) as err:
            await storage.prepare(spec(cid), tmp_path / "work")
    reason = err.value.reason
    assert cid in reason and "no data from IPFS for 2 s" in reason and "storage.ipfs.fetch_timeout" in reason
    assert err.value.retryable
    assert not list(storage.cache_dir.iterdir())
    async with asyncio.timeout(BOUND_S):  # the bid-time calls are bounded too
        assert not await storage.has_locally(spec(cid))
        assert await storage.size(spec(cid)) == 0
        with pytest.raises(InputUnavailable, match="no data from IPFS"):
            await storage.explode(spec(cid))


async def test_directory_stalling_mid_file_fails_and_leaves_nothing(
    storage: IPFSStorage, online_kubo: PrivateKubo, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "small.txt").write_text("whole\n")
    (tree / "big.bin").write_bytes(os.urandom(3 << 20))  # 12 blocks of 256 KiB
    cid = online_kubo.cli("add", "-Q", "-r", "--pin=false", str(tree))
    big = online_kubo.cli("add", "-Q", "--only-hash", str(tree / "big.bin"))
    last_block = online_kubo.cli("refs", big).split()[-1]
    online_kubo.cli("block", "rm", last_block)  # kubo sends the first blocks, then waits for a peer
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(InputUnavailable, match="no data from IPFS for 2 s") as err:
            await storage.prepare(spec(cid), tmp_path / "work")
    assert cid in err.value.reason and err.value.retryable
    assert not list(storage.cache_dir.iterdir())
