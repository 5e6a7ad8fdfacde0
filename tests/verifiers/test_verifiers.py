"""Verifiers: Noop, and Deterministic's Go "h1:" dirhash and vote."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

from computenode.verifiers.base import Verifier
from computenode.verifiers.deterministic import DeterministicVerifier, dirhash
from computenode.verifiers.noop import NoopVerifier


def make_results(root: Path, out: str = "42\n") -> Path:
    (root / "outputs" / "sub").mkdir(parents=True)
    (root / "stdout").write_text("hi\n")
    (root / "exitCode").write_text("0")
    (root / "outputs" / "sub" / "z.txt").write_text(out)
    (root / "outputs" / "a b.txt").write_text("spaces")
    return root


def test_dirhash_matches_sha256sum_lines(tmp_path: Path) -> None:
    root = make_results(tmp_path / "r")
    # Go's Hash1 hashes the lines sha256sum prints: "<hex>  results/<path>\n", sorted by path.
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    lines = subprocess.run(
        ["sha256sum", *files], cwd=root, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    summary = "".join(f"{h}  results/{name}\n" for h, name in (line.split("  ", 1) for line in lines))
    expected = "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()
    assert dirhash(root) == expected


async def test_proposals_equal_for_equal_results(tmp_path: Path) -> None:
    v: Verifier = DeterministicVerifier()
    a = await v.proposal(make_results(tmp_path / "a"))
    b = await v.proposal(make_results(tmp_path / "b"))
    c = await v.proposal(make_results(tmp_path / "c", out="43\n"))
    assert a == b != c and a.startswith(b"h1:")


def test_symlink_is_hashed_by_target_not_followed(tmp_path: Path) -> None:
    root = make_results(tmp_path / "r")
    (root / "outputs" / "link").symlink_to("/etc/hostname")
    before = dirhash(root)
    (root / "outputs" / "link").unlink()
    (root / "outputs" / "link").symlink_to("/etc/hosts")
    assert dirhash(root) != before


def test_vote() -> None:
    v = DeterministicVerifier()
    x, y = b"h1:x", b"h1:y"
    assert v.verify({"e1": x, "e2": x, "e3": y}, 2) == {"e1": True, "e2": True, "e3": False}
    assert v.verify({"e1": x, "e2": x, "e3": y}, 3) == dict.fromkeys(("e1", "e2", "e3"), False)
    assert v.verify({"e1": x, "e2": y}, 1) == {"e1": False, "e2": False}  # a tie
    assert v.verify({"e1": x}, 0) == {"e1": True}
    assert v.verify({"e1": b"", "e2": b""}, 0) == {"e1": False, "e2": False}


async def test_noop(tmp_path: Path) -> None:
    v: Verifier = NoopVerifier()
    assert await v.proposal(tmp_path) == b""
    assert v.verify({"e1": b"", "e2": b"x"}, 5) == {"e1": True, "e2": True}
