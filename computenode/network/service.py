"""The node as a compute node of a Bacalhau v0.3.23 network: the asyncio side of the libp2p host.

The transport is only an adapter. Offers and execution calls go to the same Compute methods as
the HTTP compute endpoint; an execution's requester is `p2p://<peer id>`, so its callbacks go
through the same persisted per-destination queue (callbacks.py), delivered by Libp2pTransport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computenode.callbacks import P2P
from computenode.compute import Compute
from computenode.config import NetworkConfig
from computenode.errors import DependencyDown, InvalidTransition, NotFound, Rejected, SpecError
from computenode.metrics import Metrics
from computenode.model.parse import job_from_document
from computenode.network.bridge import TrioThread
from computenode.network.host import Libp2pHost, Refused, load_or_make_key, parse_peer
from computenode.network.wire import (
    NodeFacts,
    callback_protocol,
    encode,
    node_info,
    with_routing,
)

log = logging.getLogger(__name__)

REDIAL_S = 10.0
WATCH_S = 1.0
# After a configured peer connects, NodeInfo goes out at once and again shortly after: the
# requester's gossipsub takes a heartbeat or two to graft us into the topic's mesh.
REPUBLISH_AFTER_S = (0.0, 2.0, 5.0)
RECENT_REFUSALS = 50
MAX_SHARD_INDEXES = 1000
MAX_COUNTED = 256  # requesters counted one by one in status
OTHERS = "(others)"


@dataclass(frozen=True, slots=True)
class Refusal:
    at: float
    peer: str
    job_id: str
    reason: str


@dataclass(slots=True)
class RequesterCounts:
    offers: int = 0
    bids: int = 0
    refused: int = 0
    calls: int = 0


class Libp2pTransport:
    """callbacks.Transport for `p2p://<peer id>`: a stream to that peer on the callback's protocol."""

    def __init__(self, network: Network) -> None:
        self.network = network

    async def deliver(self, address: str, name: str, body: str) -> str | None:
        net = self.network
        try:
            data = with_routing(body, net.peer_id, address)
            await net.bridge.call(net.host.send, address, callback_protocol(name), data)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None


class Network:
    def __init__(
        self,
        *,
        config: NetworkConfig,
        data_dir: Path,
        compute: Compute,
        facts: Callable[[], NodeFacts],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.key_path = Path(config.key_file) if config.key_file else data_dir / "libp2p.key"
        self.compute = compute
        self.facts = facts
        self.metrics = metrics
        self.configured = {str(parse_peer(a)[0]): a for a in config.peers}
        self.bridge: TrioThread
        self.host: Libp2pHost
        self.peer_id = ""
        self.addrs: list[str] = []
        self.connected: set[str] = set()
        self.last_error: dict[str, str] = {}  # configured peer -> why the last dial failed
        self.per_requester: dict[str, RequesterCounts] = {}
        self.refusals: deque[Refusal] = deque(maxlen=RECENT_REFUSALS)
        self._publish_now = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Network {self.peer_id} connected={sorted(self.connected)}>"

    async def start(self) -> None:
        """Start the host; its peer ID and listen addresses are known when this returns."""
        # py-libp2p logs its connection bookkeeping at INFO; the node logs what an operator needs.
        logging.getLogger("libp2p").setLevel(max(logging.WARNING, logging.getLogger().level))
        pair = await asyncio.to_thread(load_or_make_key, self.key_path)
        self.host = Libp2pHost(pair, self.config.listen, self.config.peers, self._on_request)
        self.bridge = TrioThread(asyncio.get_running_loop())
        await self.bridge.start(self.host.main)
        self.peer_id = str(self.host.peer_id)
        self.addrs = await self.bridge.call(self.host.addrs)
        if len(self.addrs) < len(self.config.listen):  # py-libp2p logs a failed listen and goes on
            await self.bridge.stop()
            why = (
                f"cannot listen on every address of network.listen {self.config.listen}"
                f" (listening on {self.addrs}); is the port in use?"
            )
            raise DependencyDown("network", why)
        self.compute.callbacks.transports[P2P] = Libp2pTransport(self)
        log.info("libp2p host started", extra={"peer_id": self.peer_id, "listen": self.addrs})

    async def aclose(self) -> None:
        self.compute.callbacks.transports.pop(P2P, None)
        if hasattr(self, "bridge"):
            await self.bridge.stop()

    # -- peers and gossip --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Dial configured requesters that are not connected (at once, then every REDIAL_S), and
        publish NodeInfo when one connects, every node_info_interval, and when asked (publish_soon)."""
        next_dial = next_info = 0.0
        pending: list[float] = []  # times of NodeInfo publications owed to new connections
        dialing: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                now = time.monotonic()
                pending += [now + d for _ in await self._refresh_connections() for d in REPUBLISH_AFTER_S]
                if now >= next_dial and (dialing is None or dialing.done()):
                    # In a task: a requester whose address drops packets holds a dial for its timeout,
                    # and the other requesters' gossip must not wait for it.
                    next_dial = now + REDIAL_S
                    dialing = asyncio.create_task(self._dial_missing(), name="network-dial")
                if any(t <= now for t in pending) or now >= next_info or self._publish_now.is_set():
                    self._publish_now.clear()
                    pending = [t for t in pending if t > now]
                    next_info = now + self.config.node_info_interval
                    await self._publish()
                try:
                    await asyncio.wait_for(_any(stop, self._publish_now), WATCH_S)
                except TimeoutError:
                    pass
        finally:
            if dialing is not None:
                dialing.cancel()
                await asyncio.gather(dialing, return_exceptions=True)

    async def _refresh_connections(self) -> set[str]:
        """Read who is connected now (starting the host again if its thread ended); the
        configured requesters that connected since the last call."""
        if self.bridge.ended.done():
            # Its thread ended on an error of py-libp2p's: a new host, same key and addresses.
            why = repr(self.bridge.ended.exception())
            log.error("the libp2p host ended; starting it again", extra={"reason": why})
            await self.start()
            self.connected = set()
        before = self.connected
        self.connected = set(await self.bridge.call(self.host.connected))
        new = (self.connected - before) & set(self.configured)
        for peer in new:
            log.info("requester connected", extra={"peer": peer})
        for peer in (before - self.connected) & set(self.configured):
            log.warning("requester disconnected", extra={"peer": peer})
        return new

    def publish_soon(self) -> None:
        """Labels or capacity changed (SIGHUP): tell the network now, not at the next interval."""
        self._publish_now.set()

    async def _dial_missing(self) -> None:
        missing = [p for p in self.configured if p not in self.connected]

        async def dial(peer: str) -> None:
            try:
                await self.bridge.call(self.host.dial, parse_peer(self.configured[peer])[0])
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                if self.last_error.get(peer) != why:
                    log.warning("cannot reach requester", extra={"peer": peer, "reason": why})
                self.last_error[peer] = why
            else:
                self.last_error.pop(peer, None)

        await asyncio.gather(*(dial(p) for p in missing))

    async def _publish(self) -> None:
        data = encode(node_info(self.peer_id, self.addrs, self.facts()))
        try:
            await self.bridge.call(self.host.publish, data)
        except Exception as exc:  # gossip is best effort: the next round sends it again
            log.warning("NodeInfo not published", extra={"reason": f"{type(exc).__name__}: {exc}"})

    # -- status --------------------------------------------------------------------------------------
    async def check(self) -> str | None:
        """/readyz `network`: degraded while no configured requester is connected (or none can send work)."""
        if self.bridge.ended.done():
            return "the libp2p host stopped; see the node log"
        if not self.configured:
            if self.config.accept_any_requester:
                return None
            return "network.peers is empty and accept_any_requester is false: no requester can send work"
        if self.connected & set(self.configured):
            return None
        why = "; ".join(f"{p}: {e}" for p, e in sorted(self.last_error.items()))
        return "no configured requester is connected" + (f" ({why})" if why else "")

    def status(self) -> dict[str, Any]:
        return {
            "PeerID": self.peer_id,
            "Listen": self.addrs,
            "Peers": [
                {"Address": addr, "Connected": pid in self.connected, "Error": self.last_error.get(pid, "")}
                for pid, addr in self.configured.items()
            ],
            "Connected": sorted(self.connected),
            "AcceptAnyRequester": self.config.accept_any_requester,
            "Requesters": {
                peer: {"Offers": c.offers, "Bids": c.bids, "Refused": c.refused, "Calls": c.calls}
                for peer, c in sorted(self.per_requester.items())
            },
            "RecentRefusals": [
                {"At": r.at, "Peer": r.peer, "JobID": r.job_id, "Reason": r.reason}
                for r in reversed(self.refusals)
            ],
        }

    # -- compute calls from requesters (run on asyncio, called from the trio host) -----------------
    async def _on_request(self, name: str, remote: str, request: Any) -> Any:
        return await self.bridge.to_asyncio(self.handle(name, remote, request))

    async def handle(self, name: str, remote: str, request: Any) -> dict[str, Any]:
        """One compute call from peer `remote` (authenticated by the connection's security).
        Refused is raised for a call this peer may not make: the host resets the stream."""
        if not isinstance(request, dict):
            raise Refused(f"{name}: the request is not a JSON object")
        counts = self._counts(remote)
        if name == "ask_for_bid":
            self.metrics.offers.labels("libp2p").inc()
            counts.offers += 1
            return await self._ask_for_bid(remote, request, counts)
        counts.calls += 1
        return await self._execution_call(name, remote, request)

    async def _ask_for_bid(
        self, remote: str, request: dict[str, Any], counts: RequesterCounts
    ) -> dict[str, Any]:
        indexes = request.get("ShardIndexes") or [0]
        if (
            not isinstance(indexes, list)
            or len(indexes) > MAX_SHARD_INDEXES
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indexes)
            or len(set(indexes)) != len(indexes)
        ):
            raise Refused("ask_for_bid: ShardIndexes is not a list of distinct shard indexes")
        doc = request.get("Job")
        job_id = str(((doc or {}).get("Metadata") or {}).get("ID", "")) if isinstance(doc, dict) else ""
        reason = ""
        if remote not in self.configured and not self.config.accept_any_requester:
            reason = f"peer {remote} is not a configured requester (network.peers)"
        else:
            try:
                job = job_from_document(doc)
                answers = await self.compute.ask_for_bid(job, indexes, f"{P2P}://{remote}")
            except (SpecError, Rejected) as exc:
                reason = str(exc)
            else:
                wire = [a.to_wire() for a in answers]
                for a in answers:
                    if a.accepted:
                        counts.bids += 1
                    else:
                        self._refused(remote, a.job_id, a.reason, counts)
                return {"ShardResponse": wire}
        self._refused(remote, job_id, reason, counts)
        shard = {"ExecutionID": "", "JobID": job_id, "Accepted": False, "Reason": reason}
        return {"ShardResponse": [shard | {"ShardIndex": i} for i in indexes]}

    def _counts(self, peer: str) -> RequesterCounts:
        """The peer's counters; peers beyond MAX_COUNTED share one entry (identities are free to make)."""
        if peer not in self.per_requester and len(self.per_requester) >= MAX_COUNTED:
            peer = OTHERS
        return self.per_requester.setdefault(peer, RequesterCounts())

    def _refused(self, peer: str, job_id: str, reason: str, counts: RequesterCounts) -> None:
        counts.refused += 1
        self.refusals.append(Refusal(time.time(), peer, job_id, reason))
        log.info("offer refused", extra={"peer": peer, "job_id": job_id, "reason": reason})

    async def _execution_call(self, name: str, remote: str, request: dict[str, Any]) -> dict[str, Any]:
        eid = request.get("ExecutionID")
        if not isinstance(eid, str) or not eid:
            raise Refused(f"{name}: ExecutionID is required")
        why = str(request.get("Justification") or "")
        try:
            ex = await self.compute.store.get(eid)
        except NotFound:
            raise Refused(f"{name}: no execution {eid}") from None
        if ex.callback_url != f"{P2P}://{remote}":
            raise Refused(f"{name}: execution {eid} is not peer {remote}'s")
        c = self.compute
        try:
            if name == "bid_accepted":  # v0.3.23 never sets its Accepted field: not read
                ex = await c.bid_accepted(eid)
            elif name == "bid_rejected":
                ex = await c.bid_rejected(eid, why)
            elif name == "result_accepted":
                ex = await c.result_accepted(eid)
            elif name == "result_rejected":
                ex = await c.result_rejected(eid, why)
            elif name == "cancel":
                ex = await c.cancel(eid, why)
            else:
                raise Refused(f"unknown call {name}")
        except InvalidTransition as exc:
            raise Refused(f"{name}: {exc}") from None
        return {"ExecutionID": ex.id, "JobID": ex.job_id, "ShardIndex": ex.shard_index}


async def _any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
