"""The results dir every executor fills: stdout, stderr, exitCode and one folder per output.

<results>/stdout      the whole stream, capped (default 1 GiB)
<results>/stderr
<results>/exitCode    the decimal exit code
<results>/<Name>/     each output, mounted read-write at its path
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from computenode.errors import SpecError
from computenode.model import MAX_INLINE_OUTPUT, RunCommandResult, StorageSpec

DEFAULT_STREAM_CAP = 1 << 30
STDOUT, STDERR, EXIT_CODE = "stdout", "stderr", "exitCode"
NO_EXIT_CODE = -1  # exitCode of a run that ended without one (trap, timeout, stopped by the node)


def output_dirs(results_dir: Path, outputs: list[StorageSpec]) -> list[tuple[Path, str]]:
    """Create the results dir and `<results>/<Name>` for each output; (host dir, path in the job) pairs.

    Raises SpecError before anything runs when a Name or path is empty, or a Name
    would leave the results dir ("../x", "/etc", "a/b").
    """
    errors: list[tuple[str, str]] = []
    pairs: list[tuple[Path, str]] = []
    for i, out in enumerate(outputs):
        where = f"Spec.outputs.{i}"
        if not out.name:
            errors.append((f"{where}.Name", "an output needs a Name"))
        elif out.name in (".", "..") or "/" in out.name or "\\" in out.name or "\0" in out.name:
            errors.append((f"{where}.Name", f"{out.name!r} would leave the results dir"))
        elif out.name in (STDOUT, STDERR, EXIT_CODE):
            errors.append((f"{where}.Name", f"{out.name!r} is reserved for the job's own results"))
        if not out.path or not out.path.startswith("/"):
            errors.append((f"{where}.path", f"{out.path!r} is not an absolute path"))
        if not errors:
            pairs.append((results_dir / out.name, out.path))
    if errors:
        raise SpecError(errors)
    results_dir.mkdir(parents=True, exist_ok=True)
    for host, _ in pairs:
        host.mkdir(parents=True, exist_ok=True)
        os.chmod(host, 0o777)  # the job may run as another uid
    return pairs


class CappedWriter:
    """Writes a stream to a file up to a cap, and keeps the first bytes for inlining.

    Past the cap bytes are counted and dropped, so the producer is still drained
    and memory stays flat however much the job prints.
    """

    def __init__(self, path: Path, cap: int = DEFAULT_STREAM_CAP) -> None:
        self.path = path
        self.cap = cap
        self.written = 0
        self.seen = 0
        self._head = bytearray()
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        self.seen += len(data)
        if len(self._head) <= MAX_INLINE_OUTPUT:
            self._head += data[: MAX_INLINE_OUTPUT + 1 - len(self._head)]
        room = self.cap - self.written
        if room > 0:
            chunk = data[:room]
            self._file.write(chunk)
            self.written += len(chunk)

    def flush(self) -> None:
        """Make what was written so far visible to readers of the file (logs while running)."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def inline(self) -> tuple[str, bool]:
        return inline_text(bytes(self._head))


def inline_text(head: bytes) -> tuple[str, bool]:
    """The first 2048 bytes of a stream as text, and whether more exists."""
    truncated = len(head) > MAX_INLINE_OUTPUT
    return head[:MAX_INLINE_OUTPUT].decode("utf-8", errors="replace"), truncated


def read_inline(path: Path) -> tuple[str, bool]:
    """inline_text of a stream file; ("", False) when it does not exist."""
    try:
        with open(path, "rb") as f:
            return inline_text(f.read(MAX_INLINE_OUTPUT + 1))
    except FileNotFoundError:
        return "", False


def write_exit_code(results_dir: Path, code: int) -> None:
    (results_dir / EXIT_CODE).write_text(str(code))


def collect(results_dir: Path, exit_code: int, runner_error: str = "") -> RunCommandResult:
    """Write exitCode and build the RunCommandResult from the stream files."""
    write_exit_code(results_dir, exit_code)
    stdout, stdout_truncated = read_inline(results_dir / STDOUT)
    stderr, stderr_truncated = read_inline(results_dir / STDERR)
    return RunCommandResult(
        stdout=stdout,
        stdout_truncated=stdout_truncated,
        stderr=stderr,
        stderr_truncated=stderr_truncated,
        exit_code=exit_code,
        runner_error=runner_error,
    )


SPECIAL_KINDS = {stat.S_IFCHR: "a device node", stat.S_IFBLK: "a device node", stat.S_IFIFO: "a FIFO"}
SPECIAL_KINDS[stat.S_IFSOCK] = "a socket"


def make_harmless(results_dir: Path) -> list[str]:
    """Take from what a job wrote every way to more rights on the host: setuid and setgid bits
    are cleared, device nodes, FIFOs and sockets removed. The removed ones, as "<kind> <path>".

    Blocking (it walks the tree): call it in a thread. Symlinks are not followed.
    """
    removed: list[str] = []
    for root, dirs, files in os.walk(results_dir):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            kind = SPECIAL_KINDS.get(stat.S_IFMT(st.st_mode))
            if kind is not None:
                os.unlink(path)
                removed.append(f"{kind} {os.path.relpath(path, results_dir)}")
            elif st.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
    return removed
