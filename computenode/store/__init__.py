"""The persistent execution store (SQLite)."""

from computenode.errors import InvalidTransition, NotFound, StoreError
from computenode.store.execution import Callback, Destination, Execution, JobRecord, Tombstone, Transition
from computenode.store.sqlite import Store

__all__ = [
    "Callback",
    "Destination",
    "Execution",
    "InvalidTransition",
    "JobRecord",
    "NotFound",
    "Store",
    "StoreError",
    "Tombstone",
    "Transition",
]
