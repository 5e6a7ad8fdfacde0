"""Multiaddrs of HTTP services, as kubo's RPC API is named (`/ip4/127.0.0.1/tcp/5001`)."""

from __future__ import annotations

import re

_MADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/https?)?/?$")


def http_url(addr: str) -> str:
    """`/ip4/127.0.0.1/tcp/5001` -> `http://127.0.0.1:5001`; an http(s) URL passes through.

    A trailing `/https` (or `/http`) picks the scheme. ValueError for anything else.
    """
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    m = _MADDR.match(addr.strip())
    if not m:
        raise ValueError(f"{addr!r} is not an IPFS API multiaddr like /ip4/127.0.0.1/tcp/5001")
    proto, host, port, scheme = m.groups()
    host = f"[{host}]" if proto == "ip6" else host
    return f"{(scheme or '/http')[1:]}://{host}:{port}"
