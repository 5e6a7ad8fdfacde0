"""The node's one HTTP server (aiohttp): status, the compute endpoint and jobs owned by the node."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from computenode.api.base import NodeView
from computenode.api.dashboard import render
from computenode.api.events import stream_events, until_job_ends, wait_seconds
from computenode.api.http import (
    MAX_BODY,
    Handler,
    document_body,
    error_response,
    errors_middleware,
    field,
    json_body,
    json_response,
    mark_response_started,
    required_field,
)
from computenode.api.logs import stream_logs
from computenode.api.pacing import Pacer, pacing_middleware
from computenode.api.paging import add_paging_routes
from computenode.api.requester import add_requester_routes
from computenode.api.views import execution_view, latest_per_shard, progress_view, shard_state
from computenode.compute import CALLS
from computenode.errors import SpecError
from computenode.events import TERMINAL_JOB_STATES
from computenode.model import ExecutionState, job_from_document
from computenode.model.base import MAX_LIST_ELEMENTS
from computenode.model.parse import unknown_keys
from computenode.store import NotFound
from computenode.version import version

log = logging.getLogger(__name__)


# GET /api/v1/jobs/{id} takes a prefix this long or longer (docs/cli.md): a job ID is a UUID, and
# a shorter prefix names one job only on a node that holds very few.
MIN_JOB_PREFIX = 4
PREFIX_MATCHES = 5  # an ambiguous prefix's 409 lists this many of the jobs it names


# With api.token set, only these answer without it: liveness and readiness for probes, and the
# v0.3 requester API, whose calls are signed or scoped to one client as its clients send them.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version"})


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/requester/")


def given_token(request: web.Request) -> bytes:
    """The token of a bearer header, or the password of HTTP Basic auth (for the dashboard)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except ValueError:
            return b""
    return b""


class ApiServer:
    def __init__(self, node: NodeView) -> None:
        self.node = node
        middlewares = [errors_middleware, self._auth, pacing_middleware(Pacer(node.read_rate))]
        self.app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
        self.app.on_response_prepare.append(mark_response_started)
        self.runner: web.AppRunner | None = None
        r = self.app.router
        r.add_get("/", self.dashboard)
        r.add_get("/metrics", self.metrics)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/api/v1/node", self.node_info)
        r.add_post("/api/v1/node/drain", self.drain)
        r.add_get("/api/v1/events", self.events)
        r.add_get("/api/v1/executions/{id}", self.execution)
        r.add_get("/api/v1/executions/{id}/logs", self.logs)
        r.add_get("/api/v1/executions/{id}/results", self.results)
        for name in CALLS:
            r.add_post(f"/api/v1/compute/{name}", getattr(self, name))
        r.add_post("/api/v1/jobs", self.submit)
        r.add_post("/api/v1/jobs/check", self.check_job)
        r.add_get("/api/v1/jobs/{id}", self.get_job)
        r.add_post("/api/v1/jobs/{id}/cancel", self.cancel_job)
        add_paging_routes(self.app, node)  # GET /api/v1/executions and /api/v1/jobs
        add_requester_routes(self.app, node)  # Bacalhau v0.3.23's requester API, for its clients

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        addr = self.runner.addresses[0]
        return addr[0], addr[1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- auth: a bearer token guards every mutating call when api.token is set ------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.node.ready and request.path != "/healthz":
            return json_response({"status": "starting", "error": "node is starting"}, 503)
        token = self.node.api_token
        if (
            token
            and not is_open(request.path)
            and not hmac.compare_digest(given_token(request), token.encode())
        ):
            resp = error_response(401, "missing or wrong token (Authorization: Bearer <api.token>)")
            if request.path == "/":  # a browser asks for the token as the password of Basic auth
                resp.headers["WWW-Authenticate"] = 'Basic realm="computenode", charset="UTF-8"'
            return resp
        return await handler(request)

    # -- status -----------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    def readiness(self) -> tuple[int, dict[str, Any]]:
        return readiness(self.node.dependency_reasons(), self.node.draining, bool(self.node.usable_engines()))

    async def readyz(self, request: web.Request) -> web.Response:
        code, body = self.readiness()
        return json_response(body, code)

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=await render(self.node, self.readiness()), content_type="text/html")

    async def metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        m, cap = self.node.metrics, self.node.capacity()
        counts = await self.node.execution_counts()
        for state in ExecutionState:
            m.executions.labels(state.value).set(counts.get(state, 0))
        m.queue_depth.set(cap.queued_executions)
        m.running.set(cap.running_executions)
        m.callbacks_pending.set(await self.node.pending_callbacks())
        for key, value in cap.total.to_wire().items():
            m.capacity_total.labels(key.lower()).set(value)
        for key, value in cap.available.to_wire().items():
            m.capacity_available.labels(key.lower()).set(value)
        body = generate_latest(m.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def node_info(self, request: web.Request) -> web.Response:
        node, cap = self.node, self.node.capacity()
        capacity = {
            "Total": cap.total.to_wire(),
            "Available": cap.available.to_wire(),
            "Reserved": cap.reserved.to_wire(),
            "Running": cap.running.to_wire(),
            "JobMax": cap.job_max.to_wire(),
        }
        info = {
            "ID": node.node_id,
            "Labels": dict(node.labels),
            "Engines": node.engines,
            "StorageSources": node.storage_sources,
            "Publishers": node.publishers,
            "Capacity": capacity,
            "Running": cap.running_executions,
            "Enqueued": cap.queued_executions,
            "Draining": node.draining,
            "Version": version(),
        }
        if node.ipfs_api:  # where `computenode get` fetches IPFS results and `run` adds large files
            info["IPFS"] = {"API": node.ipfs_api}
        if (network := node.network_status()) is not None:
            info["Network"] = network
        return json_response(info)

    async def drain(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        mode = str(field(body, "Mode", "graceful")).lower()
        if mode not in ("graceful", "fast", "off"):
            raise SpecError([("Mode", f"{mode!r} is not one of graceful, fast, off")])
        await self.node.set_drain(mode)
        return json_response({"Draining": self.node.draining, "Mode": mode})

    # -- executions -------------------------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        return await stream_events(self.node, request)

    async def execution(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        ex = await self.node.execution(eid)
        view = execution_view(ex, await self.node.execution_history(eid))
        view["Progress"] = progress_view(self.node.events.latest_progress(eid))
        return json_response(view)

    async def logs(self, request: web.Request) -> web.StreamResponse:
        return await stream_logs(self.node, request)

    async def results(self, request: web.Request) -> web.StreamResponse:
        eid = request.match_info["id"]
        await self.node.execution(eid)
        path = self.node.results_archive(eid)
        if path is None or not await asyncio.to_thread(path.is_file):
            raise NotFound(f"no local results for execution {eid}")
        headers = {
            "Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{eid}.tar.gz"',
        }
        return web.FileResponse(path, headers=headers)  # aiohttp sends the file off the loop

    # -- compute endpoint -------------------------------------------------------------------------
    async def ask_for_bid(self, request: web.Request) -> web.Response:
        self.node.metrics.offers.labels("http").inc()
        body = await json_body(request)
        job = job_from_document(required_field(body, "Job"))
        indexes = field(body, "ShardIndexes", [0])
        if not isinstance(indexes, list) or not all(_is_index(i) for i in indexes):
            raise SpecError([("ShardIndexes", "must be a list of shard indexes")])
        # Each listed index is one bid: a repeated index would bid twice on one shard, and an
        # unbounded list makes one request bid (and check capacity) without end.
        if len(indexes) > MAX_LIST_ELEMENTS:
            raise SpecError(
                [("ShardIndexes", f"{len(indexes)} indexes, more than the {MAX_LIST_ELEMENTS} allowed")]
            )
        if len(set(indexes)) != len(indexes):
            raise SpecError([("ShardIndexes", "lists a shard index more than once")])
        url = field(body, "CallbackURL", "") or ""
        if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
            raise SpecError([("CallbackURL", f"{url!r} is not an http(s) URL")])
        answers = await self.node.compute.ask_for_bid(job, indexes, url)
        return json_response({"ShardResponse": [a.to_wire() for a in answers]})

    async def _execution_call(
        self, request: web.Request, fn: Callable[..., Awaitable[Any]], *, why: bool
    ) -> web.Response:
        body = await json_body(request)
        eid = field(body, "ExecutionID")
        if not isinstance(eid, str) or not eid:
            raise SpecError([("ExecutionID", "is required")])
        args = (eid, str(field(body, "Justification", "") or "")) if why else (eid,)
        ex = await fn(*args)
        answer = {
            "ExecutionID": ex.id,
            "JobID": ex.job_id,
            "ShardIndex": ex.shard_index,
            "State": ex.state.value,
        }
        return json_response(answer)

    async def bid_accepted(self, request: web.Request) -> web.Response:
        return await self._execution_call(request, self.node.compute.bid_accepted, why=False)

    async def bid_rejected(self, request: web.Request) -> web.Response:
        return await self._execution_call(request, self.node.compute.bid_rejected, why=True)

    async def result_accepted(self, request: web.Request) -> web.Response:
        return await self._execution_call(request, self.node.compute.result_accepted, why=False)

    async def result_rejected(self, request: web.Request) -> web.Response:
        return await self._execution_call(request, self.node.compute.result_rejected, why=True)

    async def cancel(self, request: web.Request) -> web.Response:
        return await self._execution_call(request, self.node.compute.cancel, why=True)

    # -- jobs owned by the node -------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.Response:
        doc = await document_body(request)
        job = job_from_document(doc)
        job, executions = await self.node.compute.submit(job)
        answer = {"JobID": job.id, "Executions": [execution_view(e) for e in executions]}
        # Keys no field takes are ignored, as Go does; name them so a typo does not pass unnoticed.
        return json_response(
            answer | {"Warnings": [f"unknown key {k} (ignored)" for k in unknown_keys(doc)]}, 201
        )

    async def check_job(self, request: web.Request) -> web.Response:
        """A dry run of submit: every strategy's verdict with the node's running configuration;
        no job, execution or plan is stored."""
        doc = await document_body(request)
        job = job_from_document(doc)
        report = await self.node.check_job(job)
        warnings = [f"unknown key {k} (ignored)" for k in unknown_keys(doc)]
        return json_response(report.to_wire() | {"NodeID": self.node.node_id, "Warnings": warnings})

    async def get_job(self, request: web.Request) -> web.Response:
        job_id = await self._full_job_id(request.match_info["id"])
        if not isinstance(job_id, str):
            return job_id
        wait_s = wait_seconds(request)
        if not wait_s:
            return (await self._job_answer(job_id))[1]
        # Subscribed before the state is read, so an end between the read and the wait is seen.
        with self.node.events.subscribe(job_id=job_id) as sub:
            state, resp = await self._job_answer(job_id)
            if state in TERMINAL_JOB_STATES:
                return resp
            await until_job_ends(sub, wait_s)
        return (await self._job_answer(job_id))[1]

    async def _full_job_id(self, ref: str) -> str | web.Response:
        """The job's ID from its full ID or a unique prefix of at least MIN_JOB_PREFIX characters;
        else the 404 (none) or 409 (several, listed) to answer."""
        if len(ref) < MIN_JOB_PREFIX:
            return ref  # an exact ID only: the lookup answers 404 when there is none
        found = await self.node.job_ids_with_prefix(ref, PREFIX_MATCHES + 1)
        if len(found) == 1 or ref in found:
            return found[0] if len(found) == 1 else ref
        if not found:
            return ref
        more = " and more" if len(found) > PREFIX_MATCHES else ""
        return error_response(
            409, f"{ref!r} is the prefix of several jobs{more}: give more characters", found[:PREFIX_MATCHES]
        )

    async def _job_answer(self, job_id: str) -> tuple[str, web.Response]:
        """The job's state and its answer. The stored job JSON goes into the body as it is: never
        parsed and dumped again per request."""
        rec, executions = await self.node.job_with_executions(job_id)
        shards = latest_per_shard(executions)
        rest = {
            "State": rec.state.value,  # stored with each change of its executions
            "Shards": [shard_state(self.node.node_id, shards[i]) for i in sorted(shards)],
        }
        body = '{"Job": ' + rec.job_json + ", " + json.dumps(rest, default=str)[1:]
        return rec.state.value, web.Response(text=body, content_type="application/json")

    async def cancel_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        cancelled = await self.node.compute.cancel_job(job_id)
        return json_response({"JobID": job_id, "Cancelled": [e.id for e in cancelled]})


def readiness(
    reasons: Mapping[str, str | None], draining: bool, has_engine: bool
) -> tuple[int, dict[str, Any]]:
    """/readyz: 200 while the node can take some job (degraded when a dependency is down), else 503."""
    checks: dict[str, dict[str, Any]] = {}
    for name, reason in sorted(reasons.items()):
        checks[name] = {"ok": reason is None, **({"reason": reason} if reason else {})}
    checks["draining"] = {"ok": not draining, **({"reason": "node is draining"} if draining else {})}
    blockers = [n for n in ("store", "disk") if reasons.get(n)]
    if not has_engine:
        blockers.append("no engine can run jobs")
    if draining:
        blockers.append("draining")
    degraded = any(not c["ok"] for c in checks.values())
    status = "unavailable" if blockers else ("degraded" if degraded else "ok")
    return (503 if blockers else 200), {"status": status, "checks": checks}


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
