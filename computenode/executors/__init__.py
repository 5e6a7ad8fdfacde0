"""Executors run one prepared shard (docker, wasm, noop); only node.py picks a backend."""

from computenode.executors.base import ExecutionRequest, Executor, InputVolume, Recoverable

__all__ = ["ExecutionRequest", "Executor", "InputVolume", "Recoverable"]
