"""Executors run one prepared shard (docker, wasm, noop); only node.py picks a backend."""

from computenode.executors.base import ExecutionRequest, Executor, Recoverable
from computenode.volume import InputVolume

__all__ = ["ExecutionRequest", "Executor", "InputVolume", "Recoverable"]
