"""InputVolume: an input made local by a storage source, as an executor mounts it.

Its own module so storage (which makes volumes) and executors (which mount them)
both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from computenode.model import StorageSpec


@dataclass(frozen=True, slots=True)
class InputVolume:
    """An input (or context, or WASM module) made local by the storage layer.

    `host_path` is mounted read-only at `target` inside the job. For a URL
    download `host_path` is a directory holding the one downloaded file and
    `host_file` is that file: Docker shows `<target>/<filename>`, WASM shows
    the file itself at `target` (Bacalhau v0.3.23).

    `data`, when set, is the input's bytes already in memory (an inline WASM module):
    the executor uses them and `host_path` names a file that was never written.
    """

    spec: StorageSpec
    host_path: Path
    target: str
    host_file: Path | None = None
    data: bytes | None = None
