"""Sharding with Bacalhau v0.3.23's cases (pkg/job/sharding_test.go)."""

from __future__ import annotations

import pytest

from computenode.errors import SpecError
from computenode.model import Spec, StorageSource, StorageSpec
from computenode.storage.sharding import apply_glob, batches, explode_inputs, shard_storage, total_shards

SIX = ["/a", "/a/file1.txt", "/a/file2.txt", "/b", "/b/file1.txt", "/b/file2.txt"]


def specs(paths: list[str]) -> list[StorageSpec]:
    return [
        StorageSpec(storage_source=StorageSource.IPFS, cid=f"cid{i}", path=p) for i, p in enumerate(paths)
    ]


def paths(items: list[StorageSpec]) -> list[str]:
    return [s.path for s in items]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/*", ["/a", "/b"]),
        ("/**/*", SIX),
        ("/**/*.*", ["/a/file1.txt", "/a/file2.txt", "/b/file1.txt", "/b/file2.txt"]),
        ("/a/*", ["/a/file1.txt", "/a/file2.txt"]),
        ("/*/file1.txt", ["/a/file1.txt", "/b/file1.txt"]),
        ("/[a]/file?.txt", ["/a/file1.txt", "/a/file2.txt"]),
        ("/{a,b}", ["/a", "/b"]),
    ],
)
def test_glob_over_paths(pattern: str, expected: list[str]) -> None:
    assert paths(apply_glob(specs(SIX), pattern)) == expected


def test_base_path_is_stripped_and_original_paths_kept() -> None:
    files = [f"/a/{n}.txt" for n in ("file1", "file2", "file3", "file4", "apples")]
    assert paths(apply_glob(specs(files), "/file*.txt", "/a")) == files[:4]


@pytest.mark.parametrize(
    ("pattern", "base", "files"),
    [
        ("/inputs/*.mp4", "", ["/inputs/a b.mp4", "/inputs/c.mp4", "/inputs/d e f.mp4", "/inputs/x.txt"]),
        ("*.mp4", "/inputs", ["/inputs/a b.mp4", "/inputs/c.mp4", "/inputs/d e f.mp4", "/inputs/x.txt"]),
        ("/*.mp4", "/inputs", ["inputs/a b.mp4", "inputs/c.mp4", "inputs/d e f.mp4", "inputs/x.txt"]),
    ],
)
def test_names_with_spaces(pattern: str, base: str, files: list[str]) -> None:
    assert paths(apply_glob(specs(files), pattern, base)) == files[:3]


def test_batches() -> None:
    items = specs([f"/{i}" for i in range(5)])
    assert [len(b) for b in batches(items, 2)] == [2, 2, 1]
    assert [len(b) for b in batches(items, 0)] == [1] * 5
    assert [len(b) for b in batches(items, -3)] == [1] * 5


async def explode(spec: StorageSpec) -> list[StorageSpec]:
    """An exploded tree for the tests: /data holds SIX under it."""
    if spec.path != "/data":
        return [spec]
    return [spec, *specs([f"/data{p}" for p in SIX])]


def job(**sharding: object) -> Spec:
    return Spec.model_validate(
        {
            "Engine": "Noop",
            "inputs": [{"StorageSource": "IPFS", "CID": "root", "path": "/data"}],
            "Contexts": [{"StorageSource": "Inline", "URL": "data:,x", "path": "/ctx"}],
            "Sharding": sharding,
        }
    )


async def test_no_glob_one_shard_with_every_input() -> None:
    spec = job()
    assert await total_shards(spec, explode) == 1
    assert paths(await shard_storage(spec, 0, explode)) == ["/data", "/ctx"]


async def test_glob_and_batch_with_contexts_in_every_shard() -> None:
    spec = job(GlobPattern="/**/*.txt", BatchSize=3, GlobPatternBasePath="/data")
    assert await total_shards(spec, explode) == 2
    assert paths(await shard_storage(spec, 1, explode)) == [
        "/data/b/file2.txt",
        "/ctx",
    ]  # 4 files, batches of 3
    with pytest.raises(SpecError, match="out of range"):
        await shard_storage(spec, 2, explode)


async def test_no_match_is_an_error() -> None:
    with pytest.raises(SpecError, match="no sharding atoms found for glob pattern /nothing/\\*"):
        await total_shards(job(GlobPattern="/nothing/*"), explode)


async def test_duplicate_paths_are_skipped() -> None:
    twice = specs(["/data", "/data"])
    assert len(await explode_inputs(twice, explode)) == 7
