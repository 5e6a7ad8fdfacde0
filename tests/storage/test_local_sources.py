"""FilecoinUnsealed and LocalDirectory inputs: paths from config, nothing copied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from computenode.config import FilecoinUnsealedConfig, LocalDirectoryConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSource, StorageSpec
from computenode.storage.base import StorageProvider
from computenode.storage.filecoin_unsealed import FilecoinUnsealedStorage
from computenode.storage.local_directory import LocalDirectoryStorage

CID = "QmZLRFWaz9Kypt2ACNMDzA5uzACDRiCqwdkNSP1UZsu56D"


async def test_filecoin_unsealed_path_from_template(tmp_path: Path) -> None:
    (tmp_path / CID).mkdir()
    (tmp_path / CID / "f").write_text("12345")
    storage: StorageProvider = FilecoinUnsealedStorage(
        FilecoinUnsealedConfig(path_template=f"{tmp_path}/{{{{.CID}}}}")
    )
    spec = StorageSpec(storage_source=StorageSource.FILECOIN_UNSEALED, cid=CID, path="/inputs")
    assert await storage.check() is None
    assert await storage.has_locally(spec) and await storage.size(spec) == 5
    vol = await storage.prepare(spec, tmp_path)
    assert vol.host_path == tmp_path / CID and vol.target == "/inputs"
    missing = spec.model_copy(update={"cid": "Qm" + "x" * 44})
    assert not await storage.has_locally(missing)
    with pytest.raises(InputUnavailable, match="does not exist"):
        await storage.prepare(missing, tmp_path)
    with pytest.raises(InputUnavailable, match="not a CID"):
        await storage.prepare(spec.model_copy(update={"cid": "../../etc"}), tmp_path)


async def test_filecoin_unsealed_unconfigured() -> None:
    storage = FilecoinUnsealedStorage(FilecoinUnsealedConfig())
    assert "path_template" in (await storage.check() or "")


async def test_local_directory_only_under_allowed_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "secret"
    (root / "set").mkdir(parents=True)
    outside.mkdir()
    (root / "set" / "a").write_text("abc")
    os.symlink(outside, root / "sneaky")
    storage: StorageProvider = LocalDirectoryStorage(LocalDirectoryConfig(allowed_roots=[root]))
    spec = StorageSpec(
        storage_source=StorageSource.LOCAL_DIRECTORY, source_path=str(root / "set"), path="/in"
    )
    assert await storage.check() is None and await storage.has_locally(spec) and await storage.size(spec) == 3
    vol = await storage.prepare(spec, tmp_path)
    assert vol.host_path == root / "set" and vol.target == "/in"
    for bad in (str(outside), str(root / "set" / ".." / ".." / "secret"), str(root / "sneaky")):
        with pytest.raises(InputUnavailable, match="allowed root"):
            await storage.prepare(spec.model_copy(update={"source_path": bad}), tmp_path)
    assert "allowed_roots" in (await LocalDirectoryStorage(LocalDirectoryConfig()).check() or "")
