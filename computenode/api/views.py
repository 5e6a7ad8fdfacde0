"""JSON views of the node's records, in the contract's field names."""

from __future__ import annotations

import time
from typing import Any

from computenode.model import ExecutionState, JobShardState, StorageSpec
from computenode.store import Execution, Transition

S = ExecutionState


def execution_view(ex: Execution, history: list[Transition] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ExecutionID": ex.id,
        "JobID": ex.job_id,
        "ShardIndex": ex.shard_index,
        "State": ex.state.value,
        "JobState": ex.state.job_state.value,
        "Version": ex.version,
        "Attempt": ex.attempt,
        "Comment": ex.comment,
        "ResourceUsage": ex.usage.to_wire(),
        "RunOutput": ex.run_output.to_wire() if ex.run_output else None,
        "PublishedResults": ex.published.to_wire() if ex.published else None,
        "CreatedAt": ex.created_at,
        "UpdatedAt": ex.updated_at,
    }
    if history is not None:
        out["History"] = [t.to_wire() for t in history]
    return out


def progress_view(progress: dict[str, Any] | None) -> dict[str, Any] | None:
    """The latest `progress` event of a running execution, its Elapsed brought up to now
    (the bus keeps the event as it was sent)."""
    if progress is None:
        return None
    out = {k: v for k, v in progress.items() if k not in ("ExecutionID", "JobID", "ShardIndex")}
    if isinstance(out.get("StartedAt"), int | float):
        out["Elapsed"] = round(max(time.time() - out["StartedAt"], 0.0), 3)
    return out


def latest_per_shard(executions: list[Execution]) -> dict[int, Execution]:
    """Each shard's most telling execution: a completed one, else the newest attempt."""
    best: dict[int, Execution] = {}
    for ex in sorted(executions, key=lambda e: (e.attempt, e.created_at)):
        cur = best.get(ex.shard_index)
        if cur is None or cur.state is not S.COMPLETED:
            best[ex.shard_index] = ex
    return best


def shard_state(node_id: str, ex: Execution) -> dict[str, Any]:
    failed = ex.state in (S.FAILED, S.CANCELLED)
    return JobShardState(
        node_id=node_id,
        execution_id=ex.id,
        shard_index=ex.shard_index,
        state=ex.state.job_state,
        status=ex.comment if failed else ex.state.value,
        verification_proposal=ex.proposal,
        published_results=ex.published or StorageSpec(),
        run_output=ex.run_output,
    ).to_wire()
