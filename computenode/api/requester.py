"""Bacalhau v0.3.23's requester API over the jobs this node owns, for existing v0.3 clients.

Submit and cancel are signed (api/signatures.py); the verified ClientID owns the job, and a
client sees and cancels only its own. Every call maps onto Compute.submit/cancel_job and the
store: there is no second job system. Shapes follow bacalhau-apiclient 0.3.23.post8 and
v0.3.23's pkg/model; docs/bacalhau-compat.md lists the differences.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import json
import logging
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web

from computenode.api.http import (
    error_response,
    field,
    json_body,
    json_response,
    off_loop,
    read_body,
    str_field,
)
from computenode.api.signatures import MalformedBody, SignatureError, SignedPayload, verify_request
from computenode.errors import SpecError
from computenode.model import ExecutionState, Job, StorageSource, StorageSpec, job_from_document
from computenode.store import ClientJobQuery, Execution, JobRecord, NotFound, Transition
from computenode.version import version as package_version

if TYPE_CHECKING:
    from computenode.api.base import NodeView

log = logging.getLogger(__name__)

S = ExecutionState
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
SHORT_ID = 8  # Bacalhau's model.ShortIDLength: `bacalhau describe` takes the first 8 characters
SUBMIT_KEYS = ("job_create_payload", "jobCreatePayload", "data")
CANCEL_KEYS = ("job_cancel_payload", "payload")
CONTEXT_PATH = "/job"  # where v0.3 mounted a submitted build context
MAX_LIST = 1000

# The compute node's states as v0.3.23's requester named its execution states.
V03_EXECUTION_STATE = {
    S.CREATED: "AskForBidAccepted",
    S.BID_ACCEPTED: "BidAccepted",
    S.RUNNING: "BidAccepted",  # v0.3.23: "BidAccepted // aka running"
    S.WAITING_VERIFICATION: "WaitingVerification",
    S.RESULT_ACCEPTED: "ResultAccepted",
    S.PUBLISHING: "ResultAccepted",  # "ResultAccepted // aka publishing"
    S.COMPLETED: "Completed",
    S.FAILED: "Failed",
    S.CANCELLED: "Cancelled",
}


def add_requester_routes(app: web.Application, node: NodeView) -> None:
    api = RequesterApi(node)
    r = app.router
    r.add_post("/requester/submit", api.submit)
    r.add_post("/requester/states", api.states)
    r.add_post("/requester/results", api.results)
    r.add_post("/requester/list", api.list_jobs)
    r.add_post("/requester/events", api.events)
    r.add_post("/requester/cancel", api.cancel)
    r.add_get("/node_info", api.node_info)
    r.add_get("/id", api.id)
    r.add_get("/livez", api.livez)
    r.add_post("/version", api.version)


def _refused(exc: SignatureError) -> web.Response:
    if isinstance(exc, MalformedBody):
        raise SpecError([("", exc.reason)])  # a bad request, answered 400 like any other
    log.info("signed request refused", extra={"reason": exc.reason})
    return error_response(403, "request refused: " + exc.reason, [exc.reason])


async def _verified(request: web.Request, payload_keys: tuple[str, ...]) -> SignedPayload:
    """The request's signed payload (SignatureError if not); a large body is checked in a thread."""
    return await off_loop(partial(verify_request, payload_keys=payload_keys), await read_body(request))


def _time(ts: float) -> str:
    if not ts:
        return GO_ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class RequesterApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node

    # -- signed calls -----------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.Response:
        try:
            signed = await _verified(request, SUBMIT_KEYS)
        except SignatureError as exc:
            return _refused(exc)
        job = await job_from_payload(signed)
        # Signed bytes sent again (a retry, or a replay) name the job they made the first time.
        digest = hashlib.sha256(await request.read()).hexdigest()
        job, _ = await self.node.compute.submit(job, signed.client_id, submission=digest)
        log.info("signed job submitted", extra={"job_id": job.id, "client_id": signed.client_id})
        return json_response({"job": job.to_wire()})

    async def cancel(self, request: web.Request) -> web.Response:
        try:
            signed = await _verified(request, CANCEL_KEYS)
        except SignatureError as exc:
            return _refused(exc)
        job_id = str_field(signed.payload, "JobID")
        rec = await self._own_job(signed.client_id, job_id, signed=True)
        if rec.client_id != signed.client_id:
            return _refused(SignatureError("the job belongs to another client: only its owner may cancel it"))
        state = await self._job_state(rec)
        if state["State"] not in ("New", "InProgress"):
            reason = f"job {rec.id} is already {state['State']}"
            return error_response(409, "cannot cancel: " + reason, [reason])
        await self.node.compute.cancel_job(rec.id)
        log.info("signed job cancelled", extra={"job_id": rec.id, "client_id": signed.client_id})
        return json_response({"state": await self._job_state(await self.node.job_record(rec.id))})

    # -- reads (by client_id, unsigned as in v0.3.23) -----------------------------------------------
    async def states(self, request: web.Request) -> web.Response:
        rec = await self._request_job(request)
        return json_response({"state": await self._job_state(rec)})

    async def results(self, request: web.Request) -> web.Response:
        rec = await self._request_job(request)
        executions = await self.node.executions(job_id=rec.id)
        done = sorted(
            (e for e in executions if e.state is S.COMPLETED and e.published),
            key=lambda e: (e.shard_index, e.created_at),
        )
        results = [
            {
                "NodeID": self.node.node_id,
                "ShardIndex": e.shard_index,
                "Data": (e.published or StorageSpec()).to_wire(),
            }
            for e in done
        ]
        return json_response({"results": results})

    async def events(self, request: web.Request) -> web.Response:
        rec = await self._request_job(request)
        return json_response({"events": await self._history(rec)})

    async def list_jobs(self, request: web.Request) -> web.Response:
        body = await json_body(request, empty_ok=True)
        client_id = str_field(body, "client_id")
        if not client_id:
            raise SpecError([("client_id", "is required: a client lists only its own jobs")])
        jobs = []
        for summary in await self.node.client_jobs(client_id, _list_query(body)):
            doc = json.loads(summary.record.job_json)  # parsed once: the answer and its TimeoutAt
            jobs.append({"Job": doc, "State": await self._job_state(summary.record, doc)})
        return json_response({"jobs": jobs})

    # -- node -------------------------------------------------------------------------------------
    async def node_info(self, request: web.Request) -> web.Response:
        node, cap = self.node, self.node.capacity()
        compute_info = {
            "ExecutionEngines": node.engines,
            "MaxCapacity": cap.total.to_wire(),
            "AvailableCapacity": cap.available.to_wire(),
            "MaxJobRequirements": cap.job_max.to_wire(),
            "RunningExecutions": cap.running_executions,
            "EnqueuedExecutions": cap.queued_executions,
        }
        info = {
            "BacalhauVersion": _build_version(),
            "PeerInfo": {"ID": node.node_id, "Addrs": []},
            "NodeType": "Compute",
            "Labels": dict(node.labels),
            "ComputeNodeInfo": compute_info,
        }
        return json_response(info)

    async def id(self, request: web.Request) -> web.Response:
        return json_response(self.node.node_id)  # v0.3.23 wrote the ID as a JSON string

    async def livez(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def version(self, request: web.Request) -> web.Response:
        await json_body(request, empty_ok=True)  # v0.3.23 required a JSON body ({"client_id"}) and ignored it
        return json_response({"build_version_info": _build_version()})

    # -- helpers ----------------------------------------------------------------------------------
    async def _request_job(self, request: web.Request) -> JobRecord:
        body = await json_body(request, empty_ok=True)
        return await self._own_job(str_field(body, "client_id"), str_field(body, "job_id"))

    async def _own_job(self, client_id: str, job_id: str, signed: bool = False) -> JobRecord:
        """The job `job_id` (full or short ID) if it is this client's; NotFound otherwise.

        Jobs of other clients and jobs from /api/v1/jobs (no client) look absent, so the
        API does not reveal them; a signed cancel learns of another owner (403) instead.
        """
        if not job_id:
            raise SpecError([("job_id", "is required")])
        if not client_id:
            raise SpecError([("client_id", "is required")])
        rec = await self.node.client_job(client_id, job_id, SHORT_ID)
        if rec is not None:
            return rec
        if signed:
            try:
                rec = await self.node.job_record(job_id)
            except NotFound:
                pass
            else:
                if rec.client_id:
                    return rec
        raise NotFound(f"job {job_id}")

    async def _job_state(self, rec: JobRecord, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        """v0.3's JobState of `rec`; `doc` is its job JSON when the caller has parsed it already."""
        executions = await self.node.executions(job_id=rec.id)
        by_shard: dict[int, list[Execution]] = {}
        for ex in sorted(executions, key=lambda e: e.created_at):
            by_shard.setdefault(ex.shard_index, []).append(ex)
        timeout = _timeout(doc if doc is not None else json.loads(rec.job_json))
        timeout_at = rec.created_at + timeout if timeout else 0.0
        return {
            "JobID": rec.id,
            "Shards": {str(i): self._shard(rec, i, exs) for i, exs in sorted(by_shard.items())},
            "State": rec.state.value,  # stored with each change of its executions
            "Version": sum(e.version for e in executions) or 1,
            "CreateTime": _time(rec.created_at),
            "UpdateTime": _time(max([rec.updated_at, *(e.updated_at for e in executions)])),
            "TimeoutAt": _time(timeout_at),
        }

    def _shard(self, rec: JobRecord, index: int, executions: list[Execution]) -> dict[str, Any]:
        return {
            "JobID": rec.id,
            "ShardIndex": index,
            "State": _shard_state(executions, rec.cancelled),
            "Executions": [self._execution(ex) for ex in executions],
            "Version": sum(e.version for e in executions),
            "CreateTime": _time(rec.created_at),
            "UpdateTime": _time(max(e.updated_at for e in executions)),
        }

    def _execution(self, ex: Execution) -> dict[str, Any]:
        rejected = ex.state is S.FAILED and ex.comment.startswith("result rejected")
        complete = rejected or ex.state in (S.RESULT_ACCEPTED, S.PUBLISHING, S.COMPLETED)
        out: dict[str, Any] = {
            "JobID": ex.job_id,
            "ShardIndex": ex.shard_index,
            "NodeId": self.node.node_id,
            "ComputeReference": ex.id,
            "State": "ResultRejected" if rejected else V03_EXECUTION_STATE[ex.state],
            "Status": ex.comment,
            "VerificationResult": {"Complete": complete, "Result": complete and not rejected},
            "PublishedResults": (ex.published or StorageSpec()).to_wire(),
            "Version": ex.version,
            "CreateTime": _time(ex.created_at),
            "UpdateTime": _time(ex.updated_at),
        }
        if ex.proposal:
            # A list of byte values, not Go's base64: the Python client reads this field as
            # list[int] and fails on a string; Go's decoder accepts both for []byte.
            out["VerificationProposal"] = list(ex.proposal)
        if ex.run_output is not None:
            out["RunOutput"] = ex.run_output.to_wire()
        return out

    async def _history(self, rec: JobRecord) -> list[dict[str, Any]]:
        created = {
            "Type": "JobLevel",
            "JobID": rec.id,
            "PreviousState": "New",
            "NewState": "InProgress",
            "JobState": {"Previous": "New", "New": "InProgress"},
            "NewVersion": 1,
            "Comment": "Job created",
            "Time": _time(rec.created_at),
        }
        timed: list[tuple[float, dict[str, Any]]] = [(rec.created_at, created)]
        for ex in await self.node.executions(job_id=rec.id):
            for version, t in enumerate(await self.node.execution_history(ex.id), start=1):
                timed.append((t.time, self._execution_event(ex, version, t)))
        timed.sort(key=lambda pair: pair[0])  # by the number: the strings vary in length
        return [event for _, event in timed]

    def _execution_event(self, ex: Execution, version: int, t: Transition) -> dict[str, Any]:
        previous = V03_EXECUTION_STATE[t.previous] if t.previous else "New"
        new = V03_EXECUTION_STATE[t.new]
        return {
            "Type": "ExecutionLevel",
            "JobID": ex.job_id,
            "ShardIndex": ex.shard_index,
            "NodeID": self.node.node_id,
            "ComputeReference": ex.id,
            "PreviousState": previous,
            "NewState": new,
            "NewStateType": new,
            "ExecutionState": {"Previous": previous, "New": new},
            "NewVersion": version,
            "Comment": t.comment,
            "Time": _time(t.time),
        }


def _shard_state(executions: list[Execution], cancelled: bool) -> str:
    """v0.3.23's ShardStateType over a shard's executions: InProgress, Cancelled, Error, Completed."""
    states = {e.state for e in executions}
    if any(not s.is_terminal for s in states):
        return "InProgress"
    if S.COMPLETED in states:
        return "Completed"
    if cancelled or states <= {S.CANCELLED}:
        return "Cancelled"
    return "Error"


async def job_from_payload(signed: SignedPayload) -> Job:
    """The Job a verified JobCreatePayload asks for, owned by the signer.

    Shapes: {ClientID, APIVersion, Spec} (v0.3.23, the SDK), {ClientID, Job, Context}
    (Context: a base64 tar) and {"data": {ClientID, Job}}. The job always gets a fresh ID:
    a client never picks (or overwrites) an existing job's ID.
    """
    payload = _unwrap(signed.payload)
    job_doc, spec = field(payload, "Job"), field(payload, "Spec")
    if isinstance(job_doc, dict):
        doc = job_doc
    elif isinstance(spec, dict):
        doc = {"APIVersion": field(payload, "APIVersion") or "V1beta1", "Spec": spec}
    else:
        raise SpecError([("job_create_payload", "must contain a Spec (or a Job) object")])
    job = job_from_document(doc)
    meta = job.metadata.model_copy(update={"id": "", "created_at": None, "client_id": signed.client_id})
    job = job.model_copy(update={"metadata": meta})
    context = field(payload, "Context")
    if context:
        job = await _with_context(job, context)
    return job


async def _with_context(job: Job, context: Any) -> Job:
    """Mount a payload's base64 tar Context as a directory at /job, as an Inline gzip tar context."""
    if not isinstance(context, str):
        raise SpecError([("job_create_payload.Context", "must be a base64 string")])
    try:
        data = base64.b64decode(context, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError([("job_create_payload.Context", "is not base64")]) from None
    if not data.startswith(b"\x1f\x8b"):
        # A plain tar: gzip it, since an Inline application/gzip spec is what extracts to a directory.
        data = await asyncio.to_thread(gzip.compress, data, 6, mtime=0)
    url = "data:application/gzip;base64," + base64.b64encode(data).decode()
    ctx = StorageSpec(storage_source=StorageSource.INLINE, name="context", url=url, path=CONTEXT_PATH)
    spec = job.spec.model_copy(update={"contexts": [*job.spec.contexts, ctx]})
    return job.model_copy(update={"spec": spec})


def _unwrap(payload: dict[str, Any]) -> dict[str, Any]:
    data = field(payload, "data")
    if isinstance(data, dict) and field(payload, "Spec") is None and field(payload, "Job") is None:
        return data
    return payload


def _timeout(doc: dict[str, Any]) -> float:
    """Spec.Timeout of a stored (normalised, api/ JSON of model.Job) job."""
    spec = doc.get("Spec")
    value = spec.get("Timeout") if isinstance(spec, dict) else None
    return float(value) if isinstance(value, int | float) else 0.0


def _list_query(body: dict[str, Any]) -> ClientJobQuery:
    """v0.3.23's list filters: id, include/exclude tags (Spec.Annotations), sort, max_jobs."""
    max_jobs = field(body, "max_jobs")
    limit = max_jobs if isinstance(max_jobs, int) and 0 < max_jobs <= MAX_LIST else MAX_LIST
    return ClientJobQuery(
        id=str_field(body, "id"),
        prefix_len=SHORT_ID,
        include=tuple(str(t) for t in field(body, "include_tags") or []),
        exclude=tuple(str(t) for t in field(body, "exclude_tags") or []),
        sort_by=str_field(body, "sort_by") or "created_at",
        reverse=bool(field(body, "sort_reverse")),
        limit=limit,
    )


def _build_version() -> dict[str, str]:
    """The v0.3 API level this node speaks, so v0.3.23 clients' version checks pass."""
    return {
        "major": "0",
        "minor": "3",
        "gitversion": "v0.3.23",
        "gitcommit": f"computenode-{package_version()}",
        "builddate": GO_ZERO_TIME,
        "goos": "linux",
        "goarch": "amd64",
    }
