"""The network-namespace half of tests/storage/test_url.py's deny_private tests.

Run by test_url.py as `unshare --net --mount -- python -m tests.storage.url_netns NET MNT`
(NET and MNT: the test's own namespaces, which this refuses to change). Inside, it
brings `lo` up with 1.1.1.1/32 on it, an address Python's ipaddress calls global, so
deny_private lets it through; it never leaves the namespace. A hosts file bind-mounted
over /etc/hosts (in the private mount namespace) names public.test (1.1.1.1) and
inside.test (127.0.0.1), so names resolve through the real resolver. It serves

    http://1.1.1.1/file           200 "public"
    http://1.1.1.1/redirect       302 to http://127.0.0.1:8080/secret
    http://1.1.1.1/redirect-name  302 to http://inside.test:8080/secret
    http://127.0.0.1:8080/secret  200 "secret", counting its requests

runs URLStorage on each case and prints one JSON object: case name -> outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from computenode.config import URLConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSource, StorageSpec
from computenode.storage.url import URLStorage

PUBLIC = "1.1.1.1"
INSIDE_PORT = 8080
HOSTS = f"{PUBLIC} public.test\n127.0.0.1 inside.test\n"


def setup_namespace(hosts_file: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{PUBLIC}/32", "dev", "lo"], check=True)
    hosts_file.write_text(HOSTS)
    subprocess.run(["mount", "--bind", str(hosts_file), "/etc/hosts"], check=True)


async def serve() -> tuple[web.AppRunner, dict[str, int]]:
    hits = {"secret": 0}

    async def file(request: web.Request) -> web.Response:
        return web.Response(text="public")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{INSIDE_PORT}/secret")

    async def redirect_name(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://inside.test:{INSIDE_PORT}/secret")

    async def secret(request: web.Request) -> web.Response:
        hits["secret"] += 1
        return web.Response(text="secret")

    app = web.Application()
    app.router.add_get("/file", file)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/redirect-name", redirect_name)
    app.router.add_get("/secret", secret)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, PUBLIC, 80).start()
    await web.TCPSite(runner, "127.0.0.1", INSIDE_PORT).start()
    return runner, hits


async def download(cfg: URLConfig, url: str, workdir: Path, hits: dict[str, int]) -> dict[str, Any]:
    storage = URLStorage(cfg, backoff_s=0.01)
    before = hits["secret"]
    spec = StorageSpec(storage_source=StorageSource.URL_DOWNLOAD, url=url, path="/inputs")
    try:
        vol = await storage.prepare(spec, workdir)
        assert vol.host_file is not None
        outcome: dict[str, Any] = {"ok": True, "name": vol.host_file.name, "body": vol.host_file.read_text()}
    except InputUnavailable as exc:
        outcome = {"ok": False, "error": str(exc), "retryable": exc.retryable}
    outcome["size"] = await storage.size(spec)
    await storage.aclose()
    outcome["secret_hits"] = hits["secret"] - before  # requests that reached 127.0.0.1
    return outcome


async def run(workdir: Path) -> dict[str, dict[str, Any]]:
    deny = URLConfig(deny_private=True, retries=2, fetch_timeout=20)
    allow = URLConfig(deny_private=True, allow_private=["127.0.0.1/32"], retries=2, fetch_timeout=20)
    open_ = URLConfig(retries=2, fetch_timeout=20)
    cases = {
        "direct": (deny, f"http://{PUBLIC}/file"),
        "public_name": (deny, "http://public.test/file"),
        "redirect_literal": (deny, f"http://{PUBLIC}/redirect"),
        "redirect_name": (deny, f"http://{PUBLIC}/redirect-name"),
        "inside_name": (deny, f"http://inside.test:{INSIDE_PORT}/secret"),
        "mapped": (deny, f"http://[::ffff:127.0.0.1]:{INSIDE_PORT}/secret"),
        "mapped_open": (open_, f"http://[::ffff:127.0.0.1]:{INSIDE_PORT}/secret"),
        "allowed_redirect": (allow, f"http://{PUBLIC}/redirect"),
        "allowed_name": (allow, f"http://{PUBLIC}/redirect-name"),
        "open_redirect": (open_, f"http://{PUBLIC}/redirect"),
    }
    runner, hits = await serve()
    try:
        return {name: await download(cfg, url, workdir, hits) for name, (cfg, url) in cases.items()}
    finally:
        await runner.cleanup()


def main() -> None:
    parent_net, parent_mnt = sys.argv[1:3]
    # Refuse to touch the caller's own network or /etc/hosts: only inside fresh namespaces.
    if os.readlink("/proc/self/ns/net") == parent_net or os.readlink("/proc/self/ns/mnt") == parent_mnt:
        sys.exit(
            "url_netns: not inside new network and mount namespaces (run it under unshare --net --mount)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        setup_namespace(Path(tmp) / "hosts")
        results = asyncio.run(run(Path(tmp)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
