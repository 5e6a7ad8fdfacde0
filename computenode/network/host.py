"""The libp2p host, on trio: listens, dials the configured requesters, answers compute streams,
opens callback streams and gossips NodeInfo. Everything here runs on the trio thread (bridge.py).

The stack is what a v0.3.23 requester speaks (../shared/BACALHAU-NETWORK.md): TCP, Noise or TLS
(given explicitly: py-libp2p's default list also offers plaintext), yamux only (the Go side does
not speak mplex), identify, gossipsub with strict signing and Go's 1 s heartbeat.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStore
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS
from libp2p.security.tls.transport import TLSTransport
from libp2p.tools.anyio_service import background_trio_service

from computenode.compute import CALLS
from computenode.network.wire import (
    NODE_INFO_TOPIC,
    FrameError,
    compute_protocol,
    encode,
    read_one_json,
)

log = logging.getLogger(__name__)

GOSSIPSUB = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]
READ_TIMEOUT_S = 30.0  # a peer that opens a stream and sends nothing holds no handler longer
MAX_INBOUND = 64  # compute streams answered at once; more are reset (each may bid: probes, the store)
DIAL_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 256
# py-libp2p's swarm dials peers of its peerstore to keep 50+ connections (a DHT node's habit): a
# compute node wants only its requesters, which Network redials itself. The auto-connector then
# has nothing to aim at but still wakes, so it wakes rarely.
CONNECTIONS = ConnectionConfig(
    max_connections=MAX_CONNECTIONS,
    min_connections=0,
    low_watermark=0,
    high_watermark=MAX_CONNECTIONS,
    auto_connect_interval=3600.0,
)

# (call name, remote peer ID, request) -> response; runs the node's code (on asyncio, bridged).
Handler = Callable[[str, str, Any], Awaitable[Any]]


class Refused(Exception):
    """A compute call this peer may not make (another requester's execution): the stream is reset
    and the reason logged, as v0.3.23 signals an error on these calls."""


def load_or_make_key(path: Path) -> KeyPair:
    """The node's Ed25519 identity from `path` (libp2p's protobuf key encoding, as go-libp2p writes
    it), made once with mode 0600: a restarted worker keeps its peer ID, and requesters that
    remember it (NodeInfo for 10 minutes) keep reaching it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pair = create_new_key_pair()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pair.private_key.serialize())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return pair
    try:
        private = deserialize_private_key(data)
    except Exception as exc:
        raise ValueError(f"{path} is not a libp2p private key: {exc}") from None
    return KeyPair(private, private.get_public_key())


class DialOnlyConfigured(PeerStore):
    """A peerstore that keeps addresses only for the configured requesters, and only their configured
    ones. Identify and peer exchange teach every address a requester has (private ranges, QUIC,
    other interfaces); this node dials exactly what its operator wrote in network.peers. A peer that
    is not configured is never dialled: it connects to us, and its callbacks wait until it does."""

    def __init__(self, own: ID, configured: dict[ID, list[multiaddr.Multiaddr]]) -> None:
        super().__init__()
        self.own = own
        self.configured = configured

    def add_addrs(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr], ttl: int = 0) -> None:
        if peer_id == self.own:
            keep = list(addrs)
        else:
            allowed = self.configured.get(peer_id, [])
            keep = [a for a in addrs if a in allowed]
        super().add_addrs(peer_id, keep, ttl)


def parse_peer(addr: str) -> tuple[ID, multiaddr.Multiaddr]:
    """`/ip4/H/tcp/P/p2p/<id>` -> (peer ID, `/ip4/H/tcp/P`)."""
    head, _, peer = addr.rpartition("/p2p/")
    return ID.from_base58(peer), multiaddr.Multiaddr(head)


class Libp2pHost:
    def __init__(
        self,
        key_pair: KeyPair,
        listen: list[str],
        peers: list[str],
        handler: Handler,
        on_node_info: Callable[[bytes], None] | None = None,
    ) -> None:
        self.key_pair = key_pair
        self.peer_id = ID.from_pubkey(key_pair.public_key)
        self.listen = [multiaddr.Multiaddr(a) for a in listen]
        self.configured: dict[ID, list[multiaddr.Multiaddr]] = {}
        for addr in peers:
            pid, maddr = parse_peer(addr)
            self.configured.setdefault(pid, []).append(maddr)
        self.handler = handler
        self.on_node_info = on_node_info  # what others gossip; a worker drops it (None)
        self._host: Any = None
        self._pubsub: Any = None
        self._inbound = trio.CapacityLimiter(MAX_INBOUND)

    # -- the trio main ---------------------------------------------------------------------------
    async def main(self, ready: Callable[[], None], stopping: trio.Event) -> None:
        kp = self.key_pair
        security = {
            TProtocol(NOISE): NoiseTransport(kp, noise_privkey=x25519_key_pair().private_key),
            TProtocol(TLS): TLSTransport(kp),
        }
        host = new_host(
            key_pair=kp,
            sec_opt=security,
            muxer_opt=create_yamux_muxer_option(),
            peerstore_opt=DialOnlyConfigured(self.peer_id, self.configured),
            listen_addrs=self.listen,
            connection_config=CONNECTIONS,
        )
        for name in CALLS:
            # Registering the handler also lists the protocol in identify: a requester finds this
            # node by identify alone, before any NodeInfo.
            host.set_stream_handler(TProtocol(compute_protocol(name)), partial(self._serve, name))
        gossipsub = GossipSub(
            protocols=GOSSIPSUB,
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,  # Go's; py-libp2p's default is 120 s
            heartbeat_initial_delay=0.5,
        )
        pubsub = Pubsub(host, gossipsub, strict_signing=True)
        async with host.run(listen_addrs=self.listen):
            try:
                async with background_trio_service(pubsub), background_trio_service(gossipsub):
                    await pubsub.wait_until_ready()
                    # Subscribing makes this node a mesh peer of the topic, so its NodeInfo reaches
                    # the requesters; what others publish there is read (and dropped by a worker).
                    sub = await pubsub.subscribe(NODE_INFO_TOPIC)
                    self._host, self._pubsub = host, pubsub
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read_node_info, sub)
                        ready()
                        await stopping.wait()
                        nursery.cancel_scope.cancel()
            finally:
                # Close the connections before the swarm's tasks are cancelled: cancelled, they
                # leave their sockets open (ResourceWarning), and peers see a reset, not a close.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT_S):
                    await host.get_network().close()

    async def _read_node_info(self, sub: Any) -> None:
        while True:
            message = await sub.get()
            if self.on_node_info is not None:
                self.on_node_info(message.data)

    async def _serve(self, name: str, stream: Any) -> None:
        remote = str(stream.muxed_conn.peer_id)
        if self._inbound.available_tokens == 0:
            log.warning("too many compute streams at once: reset", extra={"call": name, "peer": remote})
            await stream.reset()
            return
        async with self._inbound:
            try:
                with trio.fail_after(READ_TIMEOUT_S):
                    request = await read_one_json(partial(_read, stream))
                answer = await self.handler(name, remote, request)
                await stream.write(encode(answer))
                await stream.close()
            except (FrameError, Refused, trio.TooSlowError) as exc:
                log.warning(
                    "compute stream refused: reset", extra={"call": name, "peer": remote, "reason": str(exc)}
                )
                await _reset(stream)
            except Exception:
                log.exception("compute stream failed: reset", extra={"call": name, "peer": remote})
                await _reset(stream)

    # -- calls from the node (through TrioThread.call) -------------------------------------------
    async def addrs(self) -> list[str]:
        """The addresses the host listens on (a port 0 resolved): the only ones it advertises."""
        return [str(a).partition("/p2p/")[0] for a in self._host.get_addrs()]

    async def connected(self) -> list[str]:
        return [str(p) for p in self._host.get_connected_peers()]

    async def dial(self, peer: ID) -> None:
        with trio.fail_after(DIAL_TIMEOUT_S):
            await self._host.connect(PeerInfo(peer, self.configured[peer]))

    async def publish(self, data: bytes) -> None:
        await self._pubsub.publish(NODE_INFO_TOPIC, data)

    async def send(self, peer: str, protocol: str, data: bytes) -> None:
        """Open a stream to `peer` (its connection, else a dial of its configured address), write
        `data`, close. Raises on any failure: the callback queue retries it."""
        with trio.fail_after(SEND_TIMEOUT_S):
            stream = await self._host.new_stream(ID.from_base58(peer), [TProtocol(protocol)])
            try:
                await stream.write(data)
                await stream.close()
            except BaseException:
                await _reset(stream)
                raise


async def _read(stream: Any) -> bytes:
    try:
        data: bytes = await stream.read(65536)
        return data
    except StreamEOF:  # py-libp2p raises at EOF instead of returning b""
        return b""


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception:  # already gone
        pass
