"""The persistent execution store (SQLite)."""

from computenode.store.execution import Callback, Execution, JobRecord, Transition
from computenode.store.sqlite import InvalidTransition, NotFound, Store

__all__ = ["Callback", "Execution", "InvalidTransition", "JobRecord", "NotFound", "Store", "Transition"]
