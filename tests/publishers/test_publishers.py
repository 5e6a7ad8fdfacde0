"""Publishers: IPFS against the real kubo, Local (tar.gz served by the node), Noop."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from computenode.config import IPFSConfig
from computenode.errors import PublishFailed
from computenode.model import StorageSource, StorageSpec
from computenode.publishers.base import Publisher
from computenode.publishers.ipfs import IPFSPublisher
from computenode.publishers.local import LocalPublisher
from computenode.publishers.noop import NoopPublisher


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    (root / "outputs" / "deep").mkdir(parents=True)
    (root / "stdout").write_text(f"hello {os.urandom(4).hex()}\n")
    (root / "stderr").write_text("")
    (root / "exitCode").write_text("0")
    (root / "outputs" / "deep" / "r.csv").write_text("1,2\n")
    (root / "outputs" / "passwd").symlink_to("/etc/passwd")  # a job's symlink, never followed
    return root


async def test_ipfs_publish_gives_a_cid_ipfs_cat_returns(
    ipfs_api: str, results: Path, ipfs_cli: Callable[..., bytes]
) -> None:
    publisher = IPFSPublisher(IPFSConfig(api=ipfs_api))
    p: Publisher = publisher
    try:
        assert await p.check() is None
        spec = await p.publish("e-1", "job-9", 3, "node-7", results)
        again = await p.publish("e-1", "job-9", 3, "node-7", results)
    finally:
        await publisher.aclose()
    assert spec.storage_source is StorageSource.IPFS and spec.name == "job-job-9-shard-3-host-node-7"
    assert again.cid == spec.cid
    assert ipfs_cli("cat", f"{spec.cid}/stdout") == (results / "stdout").read_bytes()
    assert ipfs_cli("cat", f"{spec.cid}/outputs/deep/r.csv") == b"1,2\n"
    assert ipfs_cli("cat", f"{spec.cid}/exitCode") == b"0"
    assert spec.cid.encode() in ipfs_cli("pin", "ls", "--type=recursive", spec.cid)
    listing = ipfs_cli("ls", f"{spec.cid}/outputs").decode()
    assert "passwd" in listing and b"root:" not in ipfs_cli("cat", f"{spec.cid}/stdout")


async def test_ipfs_publish_fails_clearly_when_kubo_is_down(results: Path) -> None:
    publisher = IPFSPublisher(IPFSConfig(api="/ip4/127.0.0.1/tcp/9"))
    try:
        assert "kubo unreachable" in (await publisher.check() or "")
        with pytest.raises(PublishFailed, match="publishing to IPFS failed") as err:
            await publisher.publish("e-1", "j", 0, "n", results)
    finally:
        await publisher.aclose()
    assert err.value.retryable


async def test_local_publish_keeps_a_tar_gz(tmp_path: Path, results: Path) -> None:
    publisher = LocalPublisher(tmp_path / "published", "http://127.0.0.1:1234/")
    p: Publisher = publisher
    assert await p.check() is None
    spec = await p.publish("e-abc", "job-1", 0, "node-1", results)
    assert spec.storage_source is StorageSource.URL_DOWNLOAD and spec.name == "job-job-1-shard-0-host-node-1"
    assert spec.url == "http://127.0.0.1:1234/api/v1/executions/e-abc/results"
    archive = publisher.path_for("e-abc")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"stdout", "stderr", "exitCode", "outputs/deep/r.csv"} <= names
        assert tar.getmember("outputs/passwd").issym()
        assert tar.extractfile("stdout").read() == (results / "stdout").read_bytes()  # type: ignore[union-attr]
    (results / "stdout").write_text("changed")
    assert (await p.publish("e-abc", "job-1", 0, "node-1", results)).url == spec.url  # idempotent
    assert not [f for f in archive.parent.iterdir() if f.name.startswith(".")]


def test_local_path_for_rejects_traversal(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path, "http://x")
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            publisher.path_for(bad)


async def test_noop_publisher(results: Path) -> None:
    p: Publisher = NoopPublisher()
    assert await p.publish("e", "j", 0, "n", results) == StorageSpec()
