"""HTTP helpers every handler uses: bounded bodies parsed off the loop, JSON answers and errors.

Errors keep the API's shapes: 400 `{"error", "errors": [{"field", "message"}]}`, 409
`{"error", "reasons"}`, 404 and 401 `{"error"}`, 410 `{"error", "JobID"}` (a job deleted after
retention.history_for). An exception the handler did not expect is a
bug: it is logged with its traceback and answered with a JSON 500, and the node keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from computenode.errors import JobDeleted, Rejected, SpecError
from computenode.model import load_document
from computenode.store import InvalidTransition, NotFound

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

MAX_BODY = 11 * 1024 * 1024  # a job document's 10 MB limit plus its envelope
THREAD_PARSE_BYTES = 64 * 1024  # larger bodies are parsed in a thread, not on the event loop
INTERNAL_ERROR = "internal error, see node log"
RESPONSE_STARTED = web.RequestKey("response_started", bool)


# -- answers ------------------------------------------------------------------------------------
def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def error_response(status: int, error: str, reasons: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if reasons is not None:
        body["reasons"] = reasons
    return json_response(body, status)


def spec_error_response(exc: SpecError) -> web.Response:
    errors = [{"field": f, "message": m} for f, m in exc.errors]
    return json_response({"error": "invalid job spec", "errors": errors}, 400)


def http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (unknown path, wrong method, body too large) as JSON."""
    text = (exc.text or exc.reason).removeprefix(f"{exc.status}: ")
    resp = error_response(exc.status, text)
    if "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SpecError as exc:
        return spec_error_response(exc)
    except Rejected as exc:
        return error_response(409, "the node will not run this job", exc.reasons)
    except InvalidTransition as exc:
        return error_response(409, str(exc), [str(exc)])
    except JobDeleted as exc:
        return json_response({"error": str(exc), "JobID": exc.job_id}, 410)
    except NotFound as exc:
        return error_response(404, f"not found: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except ConnectionResetError:
        raise  # the client went away mid-answer: nothing to answer, and not a bug
    except Exception:
        log.exception("request failed", extra={"method": request.method, "path": request.path})
        if request.get(RESPONSE_STARTED):
            raise  # part of the answer is sent: aiohttp closes the connection instead
        return error_response(500, INTERNAL_ERROR)


async def mark_response_started(request: web.Request, response: web.StreamResponse) -> None:
    """An on_response_prepare hook: a streamed answer has begun, so no error answer can follow."""
    request[RESPONSE_STARTED] = True


# -- bodies -------------------------------------------------------------------------------------
async def off_loop(fn: Callable[[bytes], T], raw: bytes) -> T:
    """fn(raw), in a thread when raw is large enough to stall the event loop."""
    if len(raw) > THREAD_PARSE_BYTES:
        return await asyncio.to_thread(fn, raw)
    return fn(raw)


async def read_body(request: web.Request) -> bytes:
    """The whole body, at most the app's client_max_size (else aiohttp's 413, answered as JSON)."""
    return await request.read()


async def json_body(request: web.Request, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` when empty_ok, else a 400."""
    raw = await read_body(request)
    if not raw and empty_ok:
        return {}
    return await off_loop(_json_object, raw)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise SpecError([("", "body is not JSON")]) from None
    if not isinstance(body, dict):
        raise SpecError([("", "body must be a JSON object")])
    return body


async def document_body(request: web.Request) -> Any:
    """The body as a job document, JSON or YAML (SpecError when it is neither)."""
    return await off_loop(load_document, await read_body(request))


# -- fields -------------------------------------------------------------------------------------
def field(body: dict[str, Any], name: str, default: Any = None) -> Any:
    """The value of `name` in body, its key matched case-insensitively as Go's decoder does."""
    wanted = name.lower()
    for k, v in body.items():
        if isinstance(k, str) and k.lower() == wanted:
            return v
    return default


def required_field(body: dict[str, Any], name: str) -> Any:
    """field(), or a 400 naming `name` when the body lacks it."""
    value = field(body, name, ...)
    if value is ...:
        raise SpecError([(name, "is required")])
    return value


def str_field(body: dict[str, Any], name: str) -> str:
    """A string field; "" when absent or null, a 400 when it is not a string."""
    value = field(body, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpecError([(name, "must be a string")])
    return value
