"""The verifier seam: a proposal per execution, then a verdict over a shard's proposals."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Verifier(Protocol):
    async def proposal(self, results_dir: Path) -> bytes:
        """What this execution proposes as its result (empty for Noop)."""
        ...

    def verify(self, proposals: dict[str, bytes], confidence: int) -> dict[str, bool]:
        """Per execution ID, whether its result is accepted."""
        ...
