"""An executor that runs nothing: for tests and dry runs, configurable like Nomad's mock driver."""

from __future__ import annotations

import asyncio

from computenode.config import NoopConfig
from computenode.errors import ExecutionFailed
from computenode.executors.base import ExecutionRequest
from computenode.executors.results import STDERR, STDOUT, collect, output_dirs
from computenode.model import RunCommandResult


class NoopExecutor:
    def __init__(self, cfg: NoopConfig) -> None:
        self.cfg = cfg

    async def aclose(self) -> None:
        """Nothing to release."""

    async def check(self) -> str | None:
        return None

    async def run(self, request: ExecutionRequest) -> RunCommandResult:
        await asyncio.to_thread(_empty_results, request)
        if self.cfg.delay:
            await asyncio.sleep(self.cfg.delay)
        if self.cfg.error:
            raise ExecutionFailed(self.cfg.error, retryable=self.cfg.error_retryable)
        return await asyncio.to_thread(collect, request.results_dir, self.cfg.exit_code)


def _empty_results(request: ExecutionRequest) -> None:
    output_dirs(request.results_dir, list(request.spec.outputs))
    (request.results_dir / STDOUT).write_bytes(b"")
    (request.results_dir / STDERR).write_bytes(b"")
