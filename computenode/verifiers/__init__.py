"""Verifiers: noop, deterministic."""

from computenode.verifiers.base import Verifier

__all__ = ["Verifier"]
