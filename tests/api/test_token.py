"""With api.token set, nothing but liveness, readiness, version and the v0.3 requester calls
answers without it; the dashboard takes it as a bearer header or a Basic-auth password."""

from __future__ import annotations

import base64
from typing import Any

import httpx

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
GUARDED_GETS = [
    "/",
    "/metrics",
    "/api/v1/node",
    "/api/v1/executions",
    "/api/v1/executions/e-x",
    "/api/v1/executions/e-x/logs",
    "/api/v1/executions/e-x/results",
    "/api/v1/jobs/j-x",
    "/node_info",
    "/id",
]
GUARDED_POSTS = [
    "/api/v1/jobs",
    "/api/v1/node/drain",
    "/api/v1/compute/ask_for_bid",
    "/api/v1/jobs/j-x/cancel",
]


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_reads_and_writes_need_the_token(make_node: Any) -> None:
    rn = await make_node(api={"listen": "127.0.0.1:0", "token": TOKEN})
    for path in GUARDED_GETS:
        resp = await rn.http.get(path)
        assert resp.status_code == 401, path
        assert "token" in resp.json()["error"]
        assert (await rn.http.get(path, headers=BEARER)).status_code != 401, path
    for path in GUARDED_POSTS:
        assert (await rn.http.post(path, json={})).status_code == 401, path
        assert (
            await rn.http.post(path, json={}, headers={"Authorization": "Bearer wrong"})
        ).status_code == 401
    # A job's spec, executions and results are the owner's: not readable without the token.
    created = await rn.http.post("/api/v1/jobs", json={"Spec": {"Engine": "Noop"}}, headers=BEARER)
    job_id = created.json()["JobID"]
    assert (await rn.http.get(f"/api/v1/jobs/{job_id}")).status_code == 401


async def test_open_paths_answer_without_it(make_node: Any) -> None:
    rn = await make_node(api={"listen": "127.0.0.1:0", "token": TOKEN})
    assert (await rn.http.get("/healthz")).status_code == 200
    assert (await rn.http.get("/readyz")).status_code == 200
    assert (await rn.http.get("/livez")).status_code == 200
    assert (await rn.http.post("/version", json={})).status_code == 200
    # v0.3 clients send no token: their calls are scoped to the client (here: none named).
    listed = await rn.http.post("/requester/list", json={})
    assert listed.status_code == 400 and listed.json()["errors"][0]["field"] == "client_id"


async def test_dashboard_takes_the_token_as_a_basic_auth_password(make_node: Any) -> None:
    rn = await make_node(api={"listen": "127.0.0.1:0", "token": TOKEN})
    asked = await rn.http.get("/")
    assert asked.status_code == 401 and asked.headers["WWW-Authenticate"].startswith("Basic ")
    assert (await rn.http.get("/", headers=basic("wrong"))).status_code == 401
    page = await rn.http.get("/", headers=basic(TOKEN))
    assert page.status_code == 200 and "<html" in page.text.lower()
    # The way a browser sends it: credentials in the URL become the Basic header.
    async with httpx.AsyncClient(auth=httpx.BasicAuth("me", TOKEN)) as browser:
        assert (await browser.get(rn.url + "/")).status_code == 200
