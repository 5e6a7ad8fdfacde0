"""Multiaddrs of HTTP services (kubo's RPC API) as URLs, and the package version."""

from __future__ import annotations

from importlib.metadata import version as dist_version

import pytest

from computenode.multiaddr import http_url
from computenode.version import __version__, version


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip6/::1/tcp/5101/", "http://[::1]:5101"),
        ("/dns/kubo.internal/tcp/443/https", "https://kubo.internal:443"),
        ("https://kubo.example/", "https://kubo.example"),
    ],
)
def test_http_url(addr: str, url: str) -> None:
    assert http_url(addr) == url


@pytest.mark.parametrize(
    "addr", ["", "/ip4/127.0.0.1", "/ip4/127.0.0.1/udp/1", "/unix/x/tcp/1", "/ip4/h/tcp/x"]
)
def test_http_url_refuses_other_addresses(addr: str) -> None:
    with pytest.raises(ValueError, match="multiaddr"):
        http_url(addr)


def test_version_is_the_installed_metadata() -> None:
    assert __version__ == version() == dist_version("computenode")
