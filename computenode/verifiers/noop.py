"""The Noop verifier: proposes nothing and accepts every execution (Bacalhau's Noop)."""

from __future__ import annotations

from pathlib import Path


class NoopVerifier:
    async def proposal(self, results_dir: Path) -> bytes:
        return b""

    def verify(self, proposals: dict[str, bytes], confidence: int) -> dict[str, bool]:
        return {execution_id: True for execution_id in proposals}
