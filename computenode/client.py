"""A small synchronous client of the node's HTTP API, for the CLI's client commands.

Every non-2xx answer becomes NodeError with the node's own reasons (field errors, rejection
reasons); an unreachable node becomes NodeUnreachable. Results are fetched as archives and
extracted with tarfile's "data" filter, which refuses absolute paths, `..`, links that leave
the destination and device files.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from computenode.multiaddr import http_url

DEFAULT_NODE = "http://127.0.0.1:1234"
DEFAULT_IPFS_API = "/ip4/127.0.0.1/tcp/5001"
LONG_POLL_S = 60.0  # one long poll's wait; the node allows up to 5m, proxies often cut at 60-100 s
TERMINAL_JOB_STATES = frozenset({"Completed", "PartialError", "Error", "Cancelled"})
# Called as bytes arrive: (what, bytes so far, total bytes or None when the sender did not say).
OnBytes = Callable[[str, int, int | None], None]
# What a results dir holds at its top level; used to find it inside an archive.
RESULT_FILES = ("stdout", "stderr", "exitCode")


class ClientError(Exception):
    """A failure the CLI reports in one or more lines, without a traceback."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NodeUnreachable(ClientError):
    pass


class NodeError(ClientError):
    """The node answered with an error status; `details` holds its reasons or field errors."""

    def __init__(self, status: int, message: str, details: list[str] | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})", details)
        self.status = status


def error_from_response(resp: httpx.Response) -> NodeError:
    """The node's error body (`error`, `errors`, `reasons`) as one message and its detail lines."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = resp.text.strip().splitlines()
        return NodeError(resp.status_code, text[0] if text else resp.reason_phrase)
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    details = [f"{e.get('field') or '(document)'}: {e.get('message')}" for e in errors]
    details += [str(r) for r in body.get("reasons") or []]
    return NodeError(resp.status_code, str(body.get("error") or resp.reason_phrase), details)


def multiaddr_to_url(addr: str) -> str:
    """`/ip4/127.0.0.1/tcp/5001` -> `http://127.0.0.1:5001` (an http(s) URL passes through)."""
    try:
        return http_url(addr)
    except ValueError as exc:
        raise ClientError(str(exc)) from None


class NodeClient:
    """The node's API: submit, jobs, status, drain, and result downloads."""

    def __init__(self, base_url: str = DEFAULT_NODE, token: str = "", timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0), follow_redirects=True)

    @property
    def auth_headers(self) -> dict[str, str]:
        """The Authorization header this client sends (empty without a token), for streams it opens."""
        return dict(self._auth)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, extra: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            resp = self.http.request(method, url, headers=self._auth | (extra or {}), **kw)
        except httpx.TimeoutException:
            raise NodeUnreachable(f"the node at {self.base_url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise NodeUnreachable(f"cannot reach the node at {self.base_url}: {exc}") from None
        return resp

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        if resp.status_code not in ok:
            raise error_from_response(resp)
        try:
            return resp.json()
        except ValueError:
            raise NodeError(
                resp.status_code, f"the node answered {path} with something that is not JSON"
            ) from None

    # -- the API --------------------------------------------------------------------------------
    def submit(self, document: bytes, content_type: str = "application/json") -> dict[str, Any]:
        """POST /api/v1/jobs with the job file's bytes (a Job or the submit envelope)."""
        resp = self._request("POST", "/api/v1/jobs", content=document, extra={"Content-Type": content_type})
        if resp.status_code != 201:
            raise error_from_response(resp)
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/jobs/{job_id}")

    def wait(self, job_id: str, poll_s: float = 0.5, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait until the job's State is terminal (Completed, PartialError, Error, Cancelled) with
        long polls (`GET /api/v1/jobs/{id}?wait=`): the node answers as soon as the job ends.
        An answer that comes back early and not terminal (a node without long polls, or one
        stopping) is followed by a `poll_s` pause, so the loop never spins."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = LONG_POLL_S if deadline is None else min(LONG_POLL_S, deadline - time.monotonic())
            started = time.monotonic()
            job = self._json(
                "GET",
                f"/api/v1/jobs/{job_id}",
                params={"wait": f"{max(left, 0.0):.3f}s"},
                timeout=httpx.Timeout(max(left, 0.0) + 30.0, connect=5.0),
            )
            if job.get("State") in TERMINAL_JOB_STATES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise ClientError(f"job {job_id} is still {job.get('State')} after {timeout_s:g} s")
            if time.monotonic() - started < left / 2:
                time.sleep(poll_s)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/api/v1/jobs/{job_id}/cancel")

    def execution(self, execution_id: str) -> dict[str, Any]:
        """One execution with its History (each transition's time, states and reason)."""
        return self._json("GET", f"/api/v1/executions/{execution_id}")

    def jobs(
        self,
        limit: int = 20,
        cursor: str = "",
        state: str = "",
        label: str = "",
        since: float = 0.0,
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of GET /api/v1/jobs, newest first: (its items, the next page's cursor)."""
        when = datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z") if since else ""
        params = {"limit": str(limit), "cursor": cursor, "state": state, "label": label, "since": when}
        resp = self._request("GET", "/api/v1/jobs", params={k: v for k, v in params.items() if v})
        if resp.status_code != 200:
            raise error_from_response(resp)
        try:
            body = resp.json()
        except ValueError:
            raise NodeError(200, "the node answered /api/v1/jobs with something that is not JSON") from None
        return list(body.get("Jobs") or []), str(body.get("Next") or "")

    def check(self, document: bytes, content_type: str = "application/json") -> dict[str, Any]:
        """POST /api/v1/jobs/check: the node's verdicts on a job, stored nowhere."""
        return self._json(
            "POST", "/api/v1/jobs/check", ok=(200,), content=document, extra={"Content-Type": content_type}
        )

    def logs(self, execution_id: str, stream: str, follow: bool, out: IO[bytes]) -> None:
        """Copy an execution's stdout or stderr into out as it comes (until it ends, with follow)."""
        params = {"stream": stream, **({"follow": "1"} if follow else {})}
        # Following has no overall deadline: the stream stays open while the execution runs.
        timeout = httpx.Timeout(None, connect=5.0) if follow else self.http.timeout
        try:
            with self.http.stream(
                "GET", f"{self.base_url}/api/v1/executions/{execution_id}/logs", params=params,
                headers=self._auth, timeout=timeout,
            ) as resp:  # fmt: skip
                if resp.status_code != 200:
                    resp.read()
                    raise error_from_response(resp)
                for chunk in resp.iter_raw():
                    out.write(chunk)
                    out.flush()
        except httpx.TransportError as exc:
            raise NodeUnreachable(f"cannot read the logs from {self.base_url}: {exc}") from None

    def node(self) -> dict[str, Any]:
        return self._json("GET", "/api/v1/node")

    def executions(self, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else {}
        return list(self._json("GET", "/api/v1/executions", params=params).get("Executions") or [])

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """The readiness status code (200 or 503) and its body."""
        resp = self._request("GET", "/readyz")
        if resp.status_code not in (200, 503):
            raise error_from_response(resp)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {}

    def drain(self, mode: str) -> dict[str, Any]:
        return self._json("POST", "/api/v1/node/drain", json={"Mode": mode})

    # -- results --------------------------------------------------------------------------------
    def download_url(self, url: str, dest: Path, on_bytes: OnBytes | None = None) -> Path:
        """GET a tar.gz of a results dir and extract it into dest; the dir holding the results."""
        # The token goes only to the node itself, never to another host named in a spec.
        headers = self._auth if url.startswith(self.base_url + "/") else {}
        with self._archive() as tmp:
            try:
                with self.http.stream("GET", url, headers=headers) as resp:
                    if resp.status_code != 200:
                        resp.read()
                        raise error_from_response(resp)
                    _copy(resp, tmp, url, on_bytes)
            except httpx.TransportError as exc:
                raise ClientError(f"cannot download {url}: {exc}") from None
            return extract(tmp, dest, "r:*")

    def download_ipfs(self, api: str, cid: str, dest: Path, on_bytes: OnBytes | None = None) -> Path:
        """kubo's /api/v0/get?arg=CID&archive=true (a tar) extracted into dest."""
        base = multiaddr_to_url(api)
        with self._archive() as tmp:
            try:
                with self.http.stream(
                    "POST", f"{base}/api/v0/get", params={"arg": cid, "archive": "true"}
                ) as resp:
                    if resp.status_code != 200:
                        resp.read()
                        raise ClientError(
                            f"IPFS get {cid} failed (HTTP {resp.status_code}): {_ipfs_message(resp)}"
                        )
                    _copy(resp, tmp, cid, on_bytes)
            except httpx.TransportError as exc:
                raise ClientError(f"cannot reach the IPFS API at {api}: {exc}") from None
            return extract(tmp, dest, "r:")

    def add_to_ipfs(self, api: str, path: Path, only_hash: bool = False) -> str:
        """`ipfs add -r` of a local file or directory through kubo's RPC API at `api`; its CID (a
        directory's CID is that of the directory itself, not wrapped). With only_hash kubo computes
        the CID and stores nothing (for --dry-run). The files are streamed, not read into memory."""
        base = multiaddr_to_url(api)
        root = path.name or "input"
        with contextlib.ExitStack() as opened:
            parts: list[tuple[str, tuple[str, IO[bytes] | bytes, str]]] = []
            if path.is_dir():
                parts.append(("file", (quote(root, safe=""), b"", "application/x-directory")))
                for entry in sorted(path.rglob("*")):
                    name = quote(f"{root}/{entry.relative_to(path).as_posix()}", safe="")
                    if entry.is_dir():
                        parts.append(("file", (name, b"", "application/x-directory")))
                    elif entry.is_file():
                        parts.append(
                            (
                                "file",
                                (name, opened.enter_context(entry.open("rb")), "application/octet-stream"),
                            )
                        )
            else:
                parts.append(
                    (
                        "file",
                        (
                            quote(root, safe=""),
                            opened.enter_context(path.open("rb")),
                            "application/octet-stream",
                        ),
                    )
                )
            params = {"pin": "true", "quieter": "true", "only-hash": str(only_hash).lower()}
            try:
                resp = self.http.post(f"{base}/api/v0/add", params=params, files=parts,
                                      timeout=httpx.Timeout(None, connect=5.0))  # fmt: skip
            except httpx.TransportError as exc:
                raise ClientError(f"cannot reach the IPFS API at {api} to add {path}: {exc}") from None
        if resp.status_code != 200:
            raise ClientError(f"IPFS add {path} failed (HTTP {resp.status_code}): {_ipfs_message(resp)}")
        # One JSON line per added entry; with `quieter`, only the root's.
        lines = [line for line in resp.text.splitlines() if line.strip()]
        try:
            return str(json.loads(lines[-1])["Hash"])
        except (IndexError, KeyError, ValueError):
            raise ClientError(f"IPFS add {path}: kubo answered {resp.text[:200]!r}") from None

    @contextmanager
    def _archive(self) -> Iterator[IO[bytes]]:
        with tempfile.TemporaryFile() as tmp:
            yield tmp


def _copy(resp: httpx.Response, out: IO[bytes], what: str, on_bytes: OnBytes | None) -> None:
    length = resp.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    done = 0
    for chunk in resp.iter_bytes():
        out.write(chunk)
        done += len(chunk)
        if on_bytes is not None:
            on_bytes(what, done, total)


def _named(on_bytes: OnBytes, name: str) -> OnBytes:
    return lambda _what, done, total: on_bytes(name, done, total)


def job_id_of(item: dict[str, Any]) -> str:
    """A job's ID in a list item: {Job: {Metadata: {ID}}}, or a flat ID/JobID."""
    inner = item.get("Job")
    job: dict[str, Any] = inner if isinstance(inner, dict) else item
    return str((job.get("Metadata") or {}).get("ID") or item.get("JobID") or item.get("ID") or "")


def _ipfs_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("Message", resp.text))
    except ValueError:
        return resp.text.strip()


def extract(archive: IO[bytes], dest: Path, mode: str) -> Path:
    """Extract safely into dest; return the results dir inside (descending a single top folder)."""
    archive.seek(0)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=archive, mode=mode) as tar:  # type: ignore[call-overload]
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ClientError(f"the results archive could not be extracted: {exc}") from None
    return results_root(dest)


def results_root(path: Path) -> Path:
    """Archives may wrap the results dir in one folder (IPFS names it after the CID)."""
    entries = list(path.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not any((path / f).exists() for f in RESULT_FILES):
        return results_root(entries[0])
    return path


def move_contents(src: Path, dest: Path) -> None:
    """Move everything in src into dest (dest is created; an existing entry is replaced)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(entry), target)


def fetch_job_results(
    client: NodeClient, job: dict[str, Any], out: Path, ipfs_api: str, on_bytes: OnBytes | None = None
) -> list[str]:
    """Lay a job's results out under `out`; the warnings for shards without results.

    out/per_shard/<index>/  that shard's results dir (stdout, stderr, exitCode, a folder per output)
    out/combined/<Name>/    each output's files merged over the shards, later shards overwriting
    out/combined/stdout     the shards' streams appended in shard order (stderr likewise)
    """
    warnings: list[str] = []
    shards = sorted(job.get("Shards") or [], key=lambda s: int(s.get("ShardIndex") or 0))
    dirs = []
    for shard in shards:
        index = int(shard.get("ShardIndex") or 0)
        shard_dir = out / "per_shard" / str(index)
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
        shard_dir.mkdir(parents=True)
        warning = fetch_shard(client, shard, shard_dir, ipfs_api, on_bytes)
        if warning:
            warnings.append(f"shard {index}: {warning}")
        dirs.append(shard_dir)
    combine(dirs, out / "combined")
    return warnings


def fetch_shard(
    client: NodeClient, shard: dict[str, Any], shard_dir: Path, ipfs_api: str, on_bytes: OnBytes | None = None
) -> str | None:
    """Download one shard's PublishedResults into shard_dir; a warning when it had none."""
    published = shard.get("PublishedResults") or {}
    source = str(published.get("StorageSource") or "")
    if on_bytes is not None:  # progress names the shard, not the URL or CID
        on_bytes = _named(on_bytes, f"shard {shard.get('ShardIndex') or 0}")
    with tempfile.TemporaryDirectory(dir=shard_dir.parent) as tmp:
        if source.lower() == "urldownload" and published.get("URL"):
            move_contents(client.download_url(published["URL"], Path(tmp), on_bytes), shard_dir)
            return None
        if source.lower() == "ipfs" and published.get("CID"):
            move_contents(client.download_ipfs(ipfs_api, published["CID"], Path(tmp), on_bytes), shard_dir)
            return None
    run = shard.get("RunOutput")
    if not run:
        return f"no results (state {shard.get('State')}: {shard.get('Status') or 'nothing published'})"
    # Nothing published (the Noop publisher): keep what the node reported inline.
    (shard_dir / "stdout").write_text(run.get("stdout") or "")
    (shard_dir / "stderr").write_text(run.get("stderr") or "")
    (shard_dir / "exitCode").write_text(str(run.get("exitCode", "")))
    cut = run.get("stdouttruncated") or run.get("stderrtruncated")
    what = f"published nothing{' via ' + source if source else ''}; wrote its inline output"
    return what + (" (truncated to 2048 bytes)" if cut else "")


def combine(shard_dirs: list[Path], combined: Path) -> None:
    if combined.exists():
        shutil.rmtree(combined)
    combined.mkdir(parents=True)
    streams = {name: (combined / name).open("wb") for name in ("stdout", "stderr")}
    try:
        for shard_dir in shard_dirs:
            for entry in sorted(shard_dir.iterdir()):
                if entry.name in streams and entry.is_file():
                    with entry.open("rb") as src:
                        shutil.copyfileobj(src, streams[entry.name])
                elif entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, combined / entry.name, dirs_exist_ok=True, symlinks=True)
    finally:
        for out in streams.values():
            out.close()
