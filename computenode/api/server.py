"""The node's one HTTP server (aiohttp): status, the compute endpoint and jobs owned by the node."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from computenode.api.views import execution_view, job_state, latest_per_shard, shard_state
from computenode.errors import Rejected, SpecError
from computenode.model import ExecutionState, job_from_document, load_document
from computenode.store import InvalidTransition, NotFound

if TYPE_CHECKING:
    from computenode.node import Node

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 11 * 1024 * 1024  # the 10 MB spec guard plus envelope


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _spec_error(exc: SpecError) -> web.Response:
    errors = [{"field": f, "message": m} for f, m in exc.errors]
    return _json({"error": "invalid job spec", "errors": errors}, 400)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SpecError as exc:
        return _spec_error(exc)
    except Rejected as exc:
        return _json({"error": "the node will not run this job", "reasons": exc.reasons}, 409)
    except InvalidTransition as exc:
        return _json({"error": str(exc), "reasons": [str(exc)]}, 409)
    except NotFound as exc:
        return _json({"error": f"not found: {exc}"}, 404)


class ApiServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.app = web.Application(middlewares=[errors_middleware, self._auth], client_max_size=MAX_BODY)
        self.runner: web.AppRunner | None = None
        r = self.app.router
        r.add_get("/", self.dashboard)
        r.add_get("/metrics", self.metrics)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/api/v1/node", self.node_info)
        r.add_post("/api/v1/node/drain", self.drain)
        r.add_get("/api/v1/executions", self.executions)
        r.add_get("/api/v1/executions/{id}", self.execution)
        r.add_get("/api/v1/executions/{id}/logs", self.logs)
        r.add_get("/api/v1/executions/{id}/results", self.results)
        for name in ("ask_for_bid", "bid_accepted", "bid_rejected", "result_accepted", "result_rejected", "cancel"):
            r.add_post(f"/api/v1/compute/{name}", getattr(self, name))
        r.add_post("/api/v1/jobs", self.submit)
        r.add_get("/api/v1/jobs/{id}", self.get_job)
        r.add_post("/api/v1/jobs/{id}/cancel", self.cancel_job)
        from computenode.api.requester import add_requester_routes  # Bacalhau v0.3 clients (issue 8)
        add_requester_routes(self.app, node)

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
            return _json({"status": "starting", "error": "node is starting"}, 503)
        token = self.node.settings.api.token
        if token and request.method != "GET":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _json({"error": "missing or wrong bearer token"}, 401)
        return await handler(request)

    # -- status -----------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    def readiness(self) -> tuple[int, dict[str, Any]]:
        node = self.node
        reasons = node.health.reasons
        checks: dict[str, dict[str, Any]] = {}
        for name, reason in sorted(reasons.items()):
            checks[name] = {"ok": reason is None, **({"reason": reason} if reason else {})}
        draining = node.compute.draining
        checks["draining"] = {"ok": not draining, **({"reason": "node is draining"} if draining else {})}
        from computenode.backends import engine_key

        engines_up = [e for e in node.backends.executors if reasons.get(engine_key(e), "unchecked") is None]
        blockers = [n for n in ("store", "disk") if reasons.get(n)]
        if not engines_up:
            blockers.append("no engine can run jobs")
        if draining:
            blockers.append("draining")
        degraded = any(not c["ok"] for c in checks.values())
        status = "unavailable" if blockers else ("degraded" if degraded else "ok")
        return (503 if blockers else 200), {"status": status, "checks": checks}

    async def readyz(self, request: web.Request) -> web.Response:
        code, body = self.readiness()
        return _json(body, code)

    async def dashboard(self, request: web.Request) -> web.Response:
        from computenode.api.dashboard import render

        return web.Response(text=await render(self.node, self.readiness()), content_type="text/html")

    async def metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        node, m = self.node, self.node.metrics
        sched = node.compute.scheduler
        counts = await node.store.counts()
        for state in ExecutionState:
            m.executions.labels(state.value).set(counts.get(state, 0))
        m.queue_depth.set(len(sched.queued))
        m.running.set(len(sched.running))
        for key, value in node.limits.total.to_wire().items():
            m.capacity_total.labels(key.lower()).set(value)
        for key, value in sched.available.to_wire().items():
            m.capacity_available.labels(key.lower()).set(value)
        body = generate_latest(m.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def node_info(self, request: web.Request) -> web.Response:
        node = self.node
        sched = node.compute.scheduler
        return _json({
            "ID": node.node_id,
            "Labels": node.labels,
            "Engines": sorted(e.value for e in node.backends.executors),
            "StorageSources": sorted(s.value for s in node.backends.storage),
            "Publishers": sorted(p.value for p in node.backends.publishers),
            "Capacity": {
                "Total": node.limits.total.to_wire(),
                "Available": sched.available.to_wire(),
                "Reserved": sched.pending_usage.to_wire(),
                "Running": sched.running_usage.to_wire(),
                "JobMax": node.limits.job_max.to_wire(),
            },
            "Running": len(sched.running),
            "Enqueued": len(sched.queued),
            "Draining": node.compute.draining,
            "Version": _version(),
        })  # fmt: skip

    async def drain(self, request: web.Request) -> web.Response:
        body = await _body(request)
        mode = str(body.get("Mode", "graceful")).lower()
        if mode not in ("graceful", "fast", "off"):
            raise SpecError([("Mode", f"{mode!r} is not one of graceful, fast, off")])
        await self.node.set_drain(mode)
        return _json({"Draining": self.node.compute.draining, "Mode": mode})

    # -- executions -------------------------------------------------------------------------------
    async def executions(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        try:
            wanted = ExecutionState(state) if state else None
        except ValueError:
            raise SpecError([("state", f"{state!r} is not an execution state")]) from None
        rows = await self.node.store.executions(state=wanted, job_id=request.query.get("job_id"))
        return _json({"Executions": [execution_view(e) for e in rows]})

    async def execution(self, request: web.Request) -> web.Response:
        eid = request.match_info["id"]
        ex = await self.node.store.get(eid)
        return _json(execution_view(ex, await self.node.store.history(eid)))

    async def logs(self, request: web.Request) -> web.StreamResponse:
        from computenode.api.logs import stream_logs

        return await stream_logs(self.node, request)

    async def results(self, request: web.Request) -> web.StreamResponse:
        eid = request.match_info["id"]
        await self.node.store.get(eid)
        from computenode.model import Publisher

        local = self.node.backends.publishers.get(Publisher.LOCAL)
        path = local.path_for(eid) if local is not None else None  # type: ignore[attr-defined]
        if path is None or not path.exists():
            raise NotFound(f"no local results for execution {eid}")
        return web.FileResponse(path, headers={"Content-Type": "application/gzip",
                                               "Content-Disposition": f'attachment; filename="{eid}.tar.gz"'})  # fmt: skip

    # -- compute endpoint -------------------------------------------------------------------------
    async def ask_for_bid(self, request: web.Request) -> web.Response:
        body = await _body(request)
        job = job_from_document(_field(body, "Job"))
        indexes = _field(body, "ShardIndexes", [0])
        if not isinstance(indexes, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indexes):
            raise SpecError([("ShardIndexes", "must be a list of shard indexes")])
        url = _field(body, "CallbackURL", "") or ""
        if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
            raise SpecError([("CallbackURL", f"{url!r} is not an http(s) URL")])
        answers = await self.node.compute.ask_for_bid(job, indexes, url)
        return _json({"ShardResponse": [a.to_wire() for a in answers]})

    async def _execution_call(self, request: web.Request, fn: Callable[..., Awaitable[Any]], *, why: bool) -> web.Response:
        body = await _body(request)
        eid = _field(body, "ExecutionID")
        if not isinstance(eid, str) or not eid:
            raise SpecError([("ExecutionID", "is required")])
        args = (eid, str(_field(body, "Justification", "") or "")) if why else (eid,)
        ex = await fn(*args)
        return _json({"ExecutionID": ex.id, "JobID": ex.job_id, "ShardIndex": ex.shard_index, "State": ex.state.value})

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
        job = job_from_document(load_document(await request.read()))
        job, executions = await self.node.compute.submit(job)
        return _json({"JobID": job.id, "Executions": [execution_view(e) for e in executions]}, 201)

    async def get_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        rec = await self.node.store.get_job(job_id)
        executions = await self.node.store.executions(job_id=job_id)
        shards = latest_per_shard(executions)
        return _json({
            "Job": json.loads(rec.job_json),
            "State": job_state(executions, rec.cancelled).value,
            "Shards": [shard_state(self.node.node_id, shards[i]) for i in sorted(shards)],
        })  # fmt: skip

    async def cancel_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        cancelled = await self.node.compute.cancel_job(job_id)
        return _json({"JobID": job_id, "Cancelled": [e.id for e in cancelled]})


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise SpecError([("", "body is not JSON")]) from None
    if not isinstance(body, dict):
        raise SpecError([("", "body must be a JSON object")])
    return body


def _field(body: dict[str, Any], name: str, default: Any = ...) -> Any:
    """A body key matched case-insensitively, as Go's decoder does."""
    for k, v in body.items():
        if k.lower() == name.lower():
            return v
    if default is ...:
        raise SpecError([(name, "is required")])
    return default


def _version() -> str:
    from computenode.node import VERSION

    return VERSION



