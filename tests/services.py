"""Where the test bed's real services are, and probes that they answer.

The addresses come from the environment that ``scripts/testbed.sh env`` prints
(``make test`` sources it); when a variable is unset the test bed's default is
used, so ``.venv/bin/pytest`` run by hand finds a test bed started with
``scripts/testbed.sh up``.

Every probe returns ``None`` when the service answers, else a short reason.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
START_HINT = "scripts/testbed.sh up"

TESTBED_DIR = Path(os.environ.get("COMPUTENODE_TESTBED_DIR", "/var/tmp/computenode-testbed"))
_CACHE_DIR = Path(
    os.environ.get("COMPUTENODE_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "computenode"
)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_IPFS_API = "/ip4/127.0.0.1/tcp/5101"
DEFAULT_IPFS_BIN = str(_CACHE_DIR / "bin" / "ipfs")
DEFAULT_IPFS_PATH = str(TESTBED_DIR / "ipfs" / "repo")
DEFAULT_WASM_DIR = str(REPO_ROOT / "tests" / "wasm" / "build")
KUBO_VERSION = "0.28.0"
BACALHAU_VERSION = "v0.3.23"
BACALHAU_BUILD_HINT = "scripts/bacalhau.sh build"

# Images the test bed builds (no image is ever pulled from the internet).
BUSYBOX_IMAGE = os.environ.get("COMPUTENODE_TEST_BUSYBOX_IMAGE", "computenode-test/busybox:latest")

PROBE_TIMEOUT = 5.0


def docker_host() -> str:
    return os.environ.get("COMPUTENODE_TEST_DOCKER_HOST") or DEFAULT_DOCKER_HOST


def registry() -> str:
    return os.environ.get("COMPUTENODE_TEST_REGISTRY") or DEFAULT_REGISTRY


def registry_image() -> str:
    return os.environ.get("COMPUTENODE_TEST_REGISTRY_IMAGE") or f"{registry()}/busybox:1"


def ipfs_api() -> str:
    return os.environ.get("COMPUTENODE_TEST_IPFS_API") or DEFAULT_IPFS_API


def ipfs_bin() -> str:
    return os.environ.get("COMPUTENODE_TEST_IPFS_BIN") or DEFAULT_IPFS_BIN


def ipfs_path() -> str:
    return os.environ.get("IPFS_PATH") or DEFAULT_IPFS_PATH


def bacalhau_bin() -> tuple[str, str | None]:
    """The Go bacalhau binary: COMPUTENODE_TEST_BACALHAU_BIN, else what
    ``scripts/bacalhau.sh bin`` prints. (path, None) or (path or "", why not)."""
    path = os.environ.get("COMPUTENODE_TEST_BACALHAU_BIN")
    if path:
        return path, None
    try:
        out = subprocess.run(
            [str(REPO_ROOT / "scripts" / "bacalhau.sh"), "bin"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", _reason(exc)
    if out.returncode != 0:
        return "", f"`scripts/bacalhau.sh bin` said {out.stderr.strip()[:300]!r}"
    return out.stdout.strip(), None


def wasm_modules_dir() -> Path:
    return Path(os.environ.get("COMPUTENODE_TEST_WASM_DIR") or DEFAULT_WASM_DIR)


def multiaddr_to_url(addr: str) -> str:
    """``/ip4/127.0.0.1/tcp/5101`` (or ``/dns/localhost/tcp/N``) -> ``http://127.0.0.1:5101``."""
    m = re.fullmatch(r"/(?:ip4|dns|dns4)/([^/]+)/tcp/(\d+)(?:/http)?", addr)
    if m:
        return f"http://{m.group(1)}:{m.group(2)}"
    m = re.fullmatch(r"/ip6/([^/]+)/tcp/(\d+)(?:/http)?", addr)
    if m:
        return f"http://[{m.group(1)}]:{m.group(2)}"
    raise ValueError(f"unsupported multiaddr {addr!r} (expected /ip4/HOST/tcp/PORT)")


def docker_client(host: str | None = None, timeout: float = PROBE_TIMEOUT) -> httpx.Client:
    """An httpx client for the Docker engine API at ``host`` (unix:// or tcp://)."""
    host = host or docker_host()
    if host.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=host.removeprefix("unix://"))
        return httpx.Client(transport=transport, base_url="http://docker", timeout=timeout)
    if host.startswith("tcp://"):
        return httpx.Client(base_url="http://" + host.removeprefix("tcp://"), timeout=timeout)
    raise ValueError(f"unsupported docker host {host!r}")


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def probe_docker(host: str) -> str | None:
    """GET /_ping on the engine."""
    try:
        with docker_client(host) as client:
            r = client.get("/_ping")
    except (httpx.HTTPError, ValueError, OSError) as exc:
        return _reason(exc)
    if r.status_code != 200 or r.text.strip() != "OK":
        return f"GET /_ping answered {r.status_code} {r.text[:200]!r}"
    return None


def probe_registry(hostport: str) -> str | None:
    """GET /v2/ on the registry (200 and the distribution API header)."""
    try:
        r = httpx.get(f"http://{hostport}/v2/", timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as exc:
        return _reason(exc)
    if r.status_code != 200:
        return f"GET /v2/ answered {r.status_code}"
    if r.headers.get("Docker-Distribution-Api-Version") != "registry/2.0":
        return "GET /v2/ answered 200 but not as a registry (no Docker-Distribution-Api-Version)"
    return None


def probe_ipfs(api: str) -> str | None:
    """POST /api/v0/version on kubo's RPC API."""
    try:
        r = httpx.post(multiaddr_to_url(api) + "/api/v0/version", timeout=PROBE_TIMEOUT)
    except (httpx.HTTPError, ValueError) as exc:
        return _reason(exc)
    if r.status_code != 200:
        return f"POST /api/v0/version answered {r.status_code}"
    try:
        version = r.json()["Version"]
    except (ValueError, KeyError):
        return f"POST /api/v0/version answered {r.text[:200]!r}"
    if not isinstance(version, str) or not version:
        return f"POST /api/v0/version answered {r.text[:200]!r}"
    return None


def probe_ipfs_bin(path: str) -> str | None:
    """The kubo binary exists and says it is the expected version."""
    if not os.access(path, os.X_OK):
        return f"{path} is not an executable file"
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _reason(exc)
    if out.stdout.strip() != f"ipfs version {KUBO_VERSION}":
        return f"`{path} version` said {out.stdout.strip()!r} {out.stderr.strip()[:200]!r}, expected {KUBO_VERSION}"
    return None


def probe_bacalhau_bin(path: str) -> str | None:
    """The binary exists and ``version --client`` says BACALHAU_VERSION."""
    if not os.access(path, os.X_OK):
        return f"{path} is not an executable file"
    env = {"HOME": str(Path.home()), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        out = subprocess.run(
            [path, "version", "--client"], capture_output=True, text=True, timeout=30, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _reason(exc)
    if BACALHAU_VERSION not in out.stdout:
        return f"`{path} version --client` said {out.stdout.strip()!r} {out.stderr.strip()[:200]!r}, expected {BACALHAU_VERSION}"
    return None


def probe_wasm_dir(path: Path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a directory (tests/wasm/build.sh builds it)"
    return None


def not_running_message(service: str, where: str, reason: str) -> str:
    return (
        f"{service} is not reachable at {where}: {reason}\n"
        f"Start the test bed with:  {START_HINT}\n"
        f"(see `scripts/testbed.sh status`; logs in {TESTBED_DIR})"
    )


class PrivateKubo:
    """A kubo of one test's own, which the test may stop and start again.

    It runs online (not --offline, where a missing block fails at once: here bitswap
    waits for a peer that never comes, as on a real network) yet reaches no one but
    loopback: no bootstrap peers, no MDNS, no routing, no NAT port mapping, no relay,
    swarm on 127.0.0.1 only.
    """

    def __init__(self, ipfs_bin: str, root: Path) -> None:
        self.bin, self.root = ipfs_bin, root  # root: short, kubo's repo holds unix sockets
        self.env = {"IPFS_PATH": str(root / "repo"), "PATH": "/usr/bin:/bin", "HOME": str(root)}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.api = f"/ip4/127.0.0.1/tcp/{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        out = subprocess.run([self.bin, *args], env=self.env, check=True, capture_output=True, timeout=60)
        return out.stdout.decode().strip()

    def _init(self) -> None:
        self.cli("init", "--profile", "test")
        for key, value in (
            ("Addresses.API", f'"{self.api}"'),
            ("Addresses.Gateway", "[]"),
            ("Addresses.Swarm", '["/ip4/127.0.0.1/tcp/0"]'),
            ("Bootstrap", "[]"),
            ("Discovery.MDNS.Enabled", "false"),
            ("Routing.Type", '"none"'),
            ("Swarm.DisableNatPortMap", "true"),
            ("Swarm.RelayClient.Enabled", "false"),
            ("Swarm.Transports.Network.Relay", "false"),
            ("AutoNAT.ServiceMode", '"disabled"'),
        ):
            self.cli("config", "--json", key, value)

    def start(self) -> None:
        """Start the daemon; the repo is made on the first start and reused after."""
        if not (self.root / "repo").exists():
            self._init()
        with open(self.root / "kubo.log", "ab") as log:
            self.proc = subprocess.Popen([self.bin, "daemon"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            if probe_ipfs(self.api) is None:
                return
            time.sleep(0.2)
        raise AssertionError("private kubo did not start: " + (self.root / "kubo.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
