"""What Bacalhau v0.3.23 sends over libp2p: protocol IDs, stream framing, NodeInfo.

Plain Python, no libp2p: the host (host.py) moves the bytes, this module shapes them.
The facts are in ../shared/BACALHAU-NETWORK.md and docs/network.md.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from computenode.model import ResourceUsageData

CALLBACKS = ("on_run_complete", "on_publish_complete", "on_cancel_complete", "on_compute_failure")
NODE_INFO_TOPIC = "bacalhau-node-info"
# The version the requester's min-version ranker sees (its default minimum is v0.3.20).
BACALHAU_VERSION = {
    "major": "0",
    "minor": "3",
    "gitversion": "v0.3.23",
    "gitcommit": "",
    "builddate": "0001-01-01T00:00:00Z",  # a Go time.Time: "" fails its parse and drops the NodeInfo
    "goos": "linux",
    "goarch": "amd64",
}
NODE_TYPE_COMPUTE = 1  # model.NodeType: a plain integer on the wire
MAX_REQUEST_BYTES = 16 << 20  # one offer with its job spec; inline data over 5 KiB is moved to IPFS


def compute_protocol(name: str) -> str:
    return f"/bacalhau/compute/{name}/1.0.0"


def callback_protocol(name: str) -> str:
    return f"/bacalhau/callback/{name}/1.0.0"


class FrameError(ValueError):
    """A request that is not one JSON value, or too large."""


async def read_one_json(read: Callable[[], Awaitable[bytes]], limit: int = MAX_REQUEST_BYTES) -> Any:
    """One JSON value from a stream whose writer keeps its side open after writing it (the
    requester does): decode what has arrived after each chunk, do not wait for EOF.
    `read()` returns b"" at EOF."""
    buf = bytearray()
    decoder = json.JSONDecoder()
    while True:
        chunk = await read()
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise FrameError(f"request larger than {limit} bytes")
        try:
            text = buf.decode()
        except UnicodeDecodeError:
            continue  # a character cut between chunks; garbage is refused at EOF
        text = text.lstrip()
        try:
            value, _end = decoder.raw_decode(text)
        except json.JSONDecodeError as exc:
            if _truncated(exc, text):
                continue  # the rest is on its way
            raise FrameError(f"request is not one JSON value: {exc}") from None
        return value
    try:
        return json.loads(buf)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"request is not one JSON value: {exc}") from None


def _truncated(exc: json.JSONDecodeError, text: str) -> bool:
    """Whether `text` could still become valid JSON with more bytes (else it is garbage already)."""
    return exc.pos >= len(text) or exc.msg.startswith("Unterminated string")


def encode(value: Any) -> bytes:
    """One JSON value and a newline, as Go's encoder writes it."""
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def resources(usage: ResourceUsageData) -> dict[str, Any]:
    return {"CPU": usage.cpu, "Memory": usage.memory, "Disk": usage.disk, "GPU": usage.gpu}


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node tells the network about itself, read from its state when published."""

    engines: list[str]  # usable now
    labels: Mapping[str, str]
    total: ResourceUsageData
    available: ResourceUsageData
    job_max: ResourceUsageData
    running: int
    queued: int


def node_info(peer_id: str, addrs: list[str], facts: NodeFacts) -> dict[str, Any]:
    """model.NodeInfo of v0.3.23 for gossip on NODE_INFO_TOPIC."""
    return {
        "BacalhauVersion": BACALHAU_VERSION,
        "PeerInfo": {"ID": peer_id, "Addrs": addrs},
        "NodeType": NODE_TYPE_COMPUTE,
        "Labels": dict(facts.labels),
        "ComputeNodeInfo": {
            "ExecutionEngines": facts.engines,
            "MaxCapacity": resources(facts.total),
            "AvailableCapacity": resources(facts.available),
            "MaxJobRequirements": resources(facts.job_max),
            "RunningExecutions": facts.running,
            "EnqueuedExecutions": facts.queued,
        },
    }


def with_routing(body: str, source: str, target: str) -> bytes:
    """A stored callback body (callbacks.py keeps it transport-neutral) with the peer IDs the
    requester's handler expects in it."""
    data = json.loads(body)
    return encode({"SourcePeerID": source, "TargetPeerID": target, **data})
