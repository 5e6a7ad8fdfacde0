"""Inline inputs and safe tar extraction (no absolute paths, no '..', no links out)."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from computenode.errors import InputUnavailable, SpecError
from computenode.executors.results import output_dirs
from computenode.model import StorageSource, StorageSpec
from computenode.storage.base import StorageProvider
from computenode.storage.inline import InlineStorage, parse_data_url


def inline(url: str, path: str = "/inputs/x") -> StorageSpec:
    return StorageSpec(storage_source=StorageSource.INLINE, url=url, path=path)


def tar_gz(*members: tuple[tarfile.TarInfo, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return "data:application/gzip;base64," + base64.b64encode(buf.getvalue()).decode()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def test_parse_data_url() -> None:
    assert parse_data_url("data:,hello%20world") == ("text/plain", b"hello world")
    assert parse_data_url("data:text/csv;base64,YSxiCg==") == ("text/csv", b"a,b\n")
    with pytest.raises(ValueError):
        parse_data_url("http://example.org/x")


async def test_plain_data_is_a_file_at_path(tmp_path: Path) -> None:
    storage: StorageProvider = InlineStorage()
    vol = await storage.prepare(inline("data:text/plain;base64,aGVsbG8="), tmp_path)
    assert vol.host_path.is_file() and vol.host_path.read_bytes() == b"hello" and vol.target == "/inputs/x"
    assert await storage.has_locally(vol.spec) and await storage.size(vol.spec) == 5
    await storage.cleanup(vol)
    assert not list(tmp_path.iterdir())


async def test_tar_gz_is_a_directory(tmp_path: Path) -> None:
    url = tar_gz(
        (entry("d", tarfile.DIRTYPE), b""),
        (entry("d/a.txt"), b"A"),
        (entry("ok", tarfile.SYMTYPE, "d/a.txt"), b""),
    )
    vol = await InlineStorage().prepare(inline(url), tmp_path)
    assert vol.host_path.is_dir() and (vol.host_path / "d" / "a.txt").read_bytes() == b"A"
    assert (vol.host_path / "ok").read_bytes() == b"A"  # a link inside the archive is fine


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (entry("../x"), "contains '..'"),
        (entry("a/../../x"), "contains '..'"),
        (entry("/etc/cron.d/x"), "absolute path"),
        (entry("out", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (entry("out", tarfile.SYMTYPE, "../../etc/passwd"), "outside the archive"),
        (entry("d/out", tarfile.SYMTYPE, "../../x"), "outside the archive"),
        (entry("hard", tarfile.LNKTYPE, "../x"), "outside the archive"),
        (entry("dev", tarfile.CHRTYPE), "special file"),
    ],
)
async def test_unsafe_tar_is_rejected(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    work = tmp_path / "work"
    with pytest.raises(InputUnavailable, match=message) as err:
        await InlineStorage().prepare(inline(tar_gz((member, b"pwned"))), work)
    assert not err.value.retryable
    assert not list(work.iterdir())
    assert not (tmp_path / "x").exists()


async def test_tar_bomb_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("computenode.storage.inline.MAX_EXTRACTED", 1000)
    with pytest.raises(InputUnavailable, match="more than 1000 bytes"):
        await InlineStorage().prepare(inline(tar_gz((entry("big"), b"0" * 5000))), tmp_path)


def test_output_name_leaving_the_results_dir_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="would leave the results dir"):
        output_dirs(tmp_path, [StorageSpec(name="../x", path="/outputs")])
    assert not (tmp_path.parent / "x").exists()


async def test_a_tar_over_max_files_fails_naming_the_limit(tmp_path: Path) -> None:
    members = [(entry(f"f{i}"), b"x") for i in range(4)]
    with pytest.raises(InputUnavailable) as caught:
        await InlineStorage(max_files=3).prepare(inline(tar_gz(*members)), tmp_path)
    assert "too many files: over 3 (limits.max_files)" in caught.value.reason
    assert not caught.value.retryable
    assert list(tmp_path.iterdir()) == []
