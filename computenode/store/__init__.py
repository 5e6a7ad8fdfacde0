"""The persistent execution store (SQLite)."""

from computenode.errors import InvalidTransition, NotFound, StoreError
from computenode.store.execution import (
    Callback,
    ClientJobQuery,
    Destination,
    Execution,
    JobRecord,
    JobSummary,
    Page,
    Position,
    Tombstone,
    Transition,
)
from computenode.store.sqlite import Store

__all__ = [
    "Callback",
    "ClientJobQuery",
    "Destination",
    "Execution",
    "InvalidTransition",
    "JobRecord",
    "JobSummary",
    "NotFound",
    "Page",
    "Position",
    "Store",
    "StoreError",
    "Tombstone",
    "Transition",
]
