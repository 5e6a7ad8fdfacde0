"""Session fixtures for the real services of the test bed (scripts/testbed.sh).

Each fixture reads its COMPUTENODE_TEST_* variable (default: the test bed's
address), checks that the service really answers, and fails the test with the
command that starts it when it does not. Nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from computenode.store import Store

# loopblock: a test whose event loop was blocked fails (tests/loopblock.py).
# pytester: tests/test_loopblock.py runs the plugin on a test of its own.
pytest_plugins = ["tests.loopblock", "pytester"]

try:  # tests/ as a package (tests/__init__.py) or as a plain rootdir
    from tests import services
except ImportError:  # pragma: no cover - depends on how pytest imported conftest
    import services  # type: ignore[no-redef]


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The Docker engine's address, e.g. ``unix:///var/run/docker.sock``."""
    host = services.docker_host()
    reason = services.probe_docker(host)
    if reason:
        pytest.fail(services.not_running_message("Docker engine", host, reason), pytrace=False)
    return host


@pytest.fixture(scope="session")
def registry() -> str:
    """The local image registry as ``host:port`` (it holds ``busybox:1``)."""
    hostport = services.registry()
    reason = services.probe_registry(hostport)
    if reason:
        pytest.fail(services.not_running_message("Image registry", hostport, reason), pytrace=False)
    return hostport


@pytest.fixture(scope="session")
def ipfs_api() -> str:
    """kubo's RPC API as a multiaddr, e.g. ``/ip4/127.0.0.1/tcp/5101``."""
    api = services.ipfs_api()
    reason = services.probe_ipfs(api)
    if reason:
        pytest.fail(services.not_running_message("IPFS (kubo)", api, reason), pytrace=False)
    return api


@pytest.fixture(scope="session")
def ipfs_bin() -> str:
    """Path of the kubo binary; IPFS_PATH is set to the test bed's repo if unset."""
    path = services.ipfs_bin()
    reason = services.probe_ipfs_bin(path)
    if reason:
        pytest.fail(services.not_running_message("kubo binary", path, reason), pytrace=False)
    os.environ.setdefault("IPFS_PATH", services.ipfs_path())
    if not (Path(os.environ["IPFS_PATH"]) / "config").exists():
        api = services.ipfs_api()
        if reason := services.probe_ipfs(api):
            pytest.fail(services.not_running_message("IPFS (kubo)", api, reason), pytrace=False)
        # The test bed reuses a kubo it finds answering on its port; one that another test bed
        # (another COMPUTENODE_TESTBED_DIR) started keeps its repo there, and the CLI needs it.
        pytest.fail(
            f"no kubo repo at IPFS_PATH={os.environ['IPFS_PATH']}: the kubo answering at "
            f"{api} was not started by this test bed. Stop it, or run the tests "
            "with the COMPUTENODE_TESTBED_DIR (or IPFS_PATH) of the test bed that started it.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def wasm_modules_dir() -> Path:
    """Directory of the WASM test modules built by tests/wasm/build.sh."""
    path = services.wasm_modules_dir()
    reason = services.probe_wasm_dir(path)
    if reason:
        pytest.fail(services.not_running_message("WASM test modules", str(path), reason), pytrace=False)
    return path


# -- nothing of the tests remains -------------------------------------------------------------
# After the whole suite, no container made by a test node, no mount and no child process of the
# tests may be left. What was there before the session (a developer's own node) is not counted.
_MANAGED = "label=io.computenode.managed=1"


def _containers() -> set[str]:
    import subprocess

    done = subprocess.run(["docker", "ps", "-aq", "--filter", _MANAGED], capture_output=True, text=True)
    return set(done.stdout.split())


def _test_mounts() -> set[str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1] for line in f if "/pytest-of-" in line.split()[1]}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_before_key] = _containers()


_before_key = pytest.StashKey[set[str]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import psutil

    if session.config.option.collectonly or getattr(session.config, "workerinput", None) is not None:
        return
    before = session.config.stash.get(_before_key, set())
    left = {
        "containers": sorted(_containers() - before),
        "mounts": sorted(_test_mounts()),
        "processes": sorted(
            f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in psutil.Process().children(recursive=True)
        ),
    }
    left = {k: v for k, v in left.items() if v}
    if left and session.testscollected > 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the tests left things behind: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real store in the test's own directory, closed after it."""
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    yield s
    await s.close()
