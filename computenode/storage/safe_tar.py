"""Extract a tar stream without letting it write outside its destination.

Used for inline `application/gzip` inputs; the IPFS provider reuses check_member. Every
member is checked before it is written: no absolute names, no `..`, no links
that point out of the destination, no devices or FIFOs, and a cap on bytes.
Python's "data" extraction filter runs too, as a second fence.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path
from typing import IO


class UnsafeArchive(ValueError):
    """The archive tries to leave its destination, or is too large."""


def _check_name(name: str) -> None:
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchive(f"archive member {name!r} contains '..'")
    if "\0" in name:
        raise UnsafeArchive(f"archive member {name!r} contains a NUL byte")


def _check_link(member: tarfile.TarInfo) -> None:
    target = member.linkname
    if target.startswith("/"):
        raise UnsafeArchive(f"link {member.name!r} points to the absolute path {target!r}")
    # A symlink resolves from its own directory; a hard link from the archive root.
    base = posixpath.dirname(member.name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchive(f"link {member.name!r} points outside the archive ({target!r})")


def check_member(member: tarfile.TarInfo) -> None:
    """Raise UnsafeArchive for a member that must not be extracted."""
    _check_name(member.name)
    if member.issym() or member.islnk():
        _check_link(member)
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"archive member {member.name!r} is a device, FIFO or other special file")


def too_many_files(max_files: int) -> str:
    return f"too many files: over {max_files} (limits.max_files)"


def extract_gzip_tar(fileobj: IO[bytes], dest: Path, *, max_bytes: int, max_files: int) -> int:
    """Extract the tar.gz read from `fileobj` into `dest` (created); the regular-file bytes written.

    Blocking: call it in a thread.
    """
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    with tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        for count, member in enumerate(tar, start=1):
            if count > max_files:
                raise UnsafeArchive(too_many_files(max_files))
            check_member(member)
            total += member.size if member.isfile() else 0
            if total > max_bytes:
                raise UnsafeArchive(f"archive expands to more than {max_bytes} bytes")
            tar.extract(member, dest, set_attrs=member.isfile(), filter="data")
    _fix_dir_modes(dest)
    return total


def _fix_dir_modes(dest: Path) -> None:
    # kubo's tar marks directories 0777; keep them readable by any job uid but not world-writable.
    for root, dirs, _ in os.walk(dest):
        for d in dirs:
            path = os.path.join(root, d)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
