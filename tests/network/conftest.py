"""Fixtures for tests against a real Go Bacalhau v0.3.23 requester (tests/network/requester.py).

* ``bacalhau_bin`` (session): the binary the test bed built (COMPUTENODE_TEST_BACALHAU_BIN,
  else ``scripts/bacalhau.sh bin``); a missing binary fails the test with the command
  that builds it.
* ``requester``: a fresh requester for the test, stopped and reaped after it.
* ``start_requester``: a factory, ``await start_requester()``, for tests that need two
  requesters (or ``node_type="requester,compute"``: a Go hybrid that runs the jobs
  itself, as a reference worker); every one it started is stopped and reaped after the test.

Each requester has its own directory under the test's tmp_path, free loopback ports and
the test bed's kubo (the ``ipfs_api`` fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from tests import services
from tests.network.requester import Requester
from tests.node.conftest import make_node  # noqa: F401  (the in-process node, for tests of the libp2p side)


@pytest.fixture(scope="session")
def bacalhau_bin() -> str:
    """Path of the Go bacalhau v0.3.23 binary."""
    path, reason = services.bacalhau_bin()
    if reason is None:
        reason = services.probe_bacalhau_bin(path)
    if reason:
        pytest.fail(
            f"the Go bacalhau {services.BACALHAU_VERSION} binary is not available: {reason}\n"
            f"Build it with:  {services.BACALHAU_BUILD_HINT}\n"
            f"(or {services.START_HINT}, which builds it; about 3 min cold)",
            pytrace=False,
        )
    return path


class StartRequester(Protocol):
    def __call__(
        self,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        node_type: str = "requester",
    ) -> Awaitable[Requester]: ...


@pytest.fixture
async def start_requester(bacalhau_bin: str, ipfs_api: str, tmp_path: Path) -> AsyncIterator[StartRequester]:
    """``await start_requester(extra_args=(...), env={...}, node_type=...)``: a started ``Requester``.

    ``extra_args`` go after the serve flags (e.g. ``--job-selection-accept-networked``);
    ``env`` adds to the requester's environment (e.g. ``{"LOG_LEVEL": "debug"}``).
    """
    started: list[Requester] = []

    async def start(
        *, extra_args: Sequence[str] = (), env: dict[str, str] | None = None, node_type: str = "requester"
    ) -> Requester:
        root = tmp_path / f"requester{len(started)}"
        r = Requester(bacalhau_bin, root, ipfs_api, extra_args=extra_args, env=env, node_type=node_type)
        started.append(r)
        await r.start()
        return r

    try:
        yield start
    finally:
        for r in started:
            try:
                await r.stop()
            finally:
                r.kill()  # no-op once stopped; reaps it if stop() was interrupted


@pytest.fixture
async def requester(start_requester: StartRequester) -> Requester:
    """A fresh requester for this test (its own BACALHAU_PATH, ports; the test bed's kubo)."""
    return await start_requester()
