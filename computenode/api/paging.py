"""Paged lists: GET /api/v1/executions and GET /api/v1/jobs, newest first, `limit` and `cursor`.

A cursor is the opaque base64 of the last row's (created_at, id); the next page starts below
it, so rows added meanwhile (all newer) never shift a page already handed out.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from computenode.api.http import json_response
from computenode.api.views import execution_view
from computenode.errors import SpecError
from computenode.model import ExecutionState, JobState
from computenode.store import JobSummary, Position

if TYPE_CHECKING:
    from computenode.api.base import NodeView

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def add_paging_routes(app: web.Application, node: NodeView) -> None:
    pages = Pages(node)
    app.router.add_get("/api/v1/executions", pages.executions)
    app.router.add_get("/api/v1/jobs", pages.jobs)


class Pages:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    async def executions(self, request: web.Request) -> web.Response:
        q = request.query
        state = _enum(ExecutionState, q.get("state"), "state", "an execution state")
        page = await self.node.execution_page(
            state=state,
            job_id=q.get("job_id") or None,
            limit=_limit(q.get("limit")),
            after=_cursor(q.get("cursor")),
        )
        return json_response(
            {"Executions": [execution_view(e) for e in page.items], "Next": encode_cursor(page.next)}
        )

    async def jobs(self, request: web.Request) -> web.Response:
        q = request.query
        page = await self.node.job_page(
            state=_enum(JobState, q.get("state"), "state", "a job state"),
            label=q.get("label") or None,
            since=_since(q.get("since")),
            limit=_limit(q.get("limit")),
            after=_cursor(q.get("cursor")),
        )
        return json_response({"Jobs": [job_view(j) for j in page.items], "Next": encode_cursor(page.next)})


def job_view(job: JobSummary) -> dict[str, Any]:
    rec = job.record
    return {
        "JobID": rec.id,
        "State": rec.state.value,
        "CreatedAt": rec.created_at,
        "UpdatedAt": rec.updated_at,
        "Shards": job.shards,
        "Annotations": list(job.annotations),
        "Owned": rec.owned,
        "Cancelled": rec.cancelled,
    }


def encode_cursor(position: Position | None) -> str:
    if position is None:
        return ""
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


def _cursor(text: str | None) -> Position | None:
    if not text:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    ok = isinstance(value, list) and len(value) == 2
    if (
        not ok
        or not isinstance(value[0], int | float)
        or isinstance(value[0], bool)
        or not isinstance(value[1], str)
    ):
        raise SpecError([("cursor", "is not a cursor this API gave out (the Next of a page)")])
    return float(value[0]), value[1]


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise SpecError([("limit", f"{text!r} is not a whole number")]) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise SpecError([("limit", f"{limit} is out of range: 1 to {MAX_LIMIT}")])
    return limit


def _since(text: str | None) -> float | None:
    """Epoch seconds, or an ISO 8601 / RFC 3339 time (Z or an offset; none means UTC)."""
    if not text:
        return None
    bad = SpecError([("since", f"{text!r} is neither epoch seconds nor an RFC 3339 time")])
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise bad from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds):
        raise bad
    return seconds


def _enum(kind: type[ExecutionState] | type[JobState], text: str | None, name: str, what: str) -> Any:
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise SpecError(
            [(name, f"{text!r} is not {what}: one of {', '.join(s.value for s in kind)}")]
        ) from None
