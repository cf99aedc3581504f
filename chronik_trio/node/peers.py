"""This node's traffic with its peers: Raft messages by group, and node-level liveness.

Outgoing, Raft messages go to the transport by (peer, group); every LIVENESS_EVERY_TICKS the
runtime sends each peer one liveness message (group LIVENESS_GROUP) carrying this process's
incarnation, so a restarted peer is told from the one before it. Incoming batches are
delivered to their groups' inboxes; liveness messages and any batch at all tell the
runtime the sender is alive. broker_alive is what clients are told (Metadata).

The transport comes from a TransportFactory the node is given (the seam for a simulated
network; node/faults.py wraps the default one).
"""

from __future__ import annotations

import logging
import typing

import google.protobuf.message
import trio
from prometheus_client import CollectorRegistry

from chronik_trio.pb import meta_pb2, raft_pb2, transport_pb2
from chronik_trio.raft.convert import message_to_pb, peer_message_from_pb
from chronik_trio.raft.types import Message, MessageType
from chronik_trio.transport.tls import PeerTLS
from chronik_trio.transport.transport import Transport

from .meta_group import META_GROUP_ID
from .raft_runtime import RaftRuntime

log = logging.getLogger(__name__)

LIVENESS_GROUP = ""  # transport messages of this group only say "I am alive"


def _forwardable(gm: transport_pb2.GroupMessage) -> bool:
    """Whether a proposal from a peer is one a follower forwards: only __meta's followers do
    (MetaService.propose_anywhere), with normal entries that are MetaCommands. A committed
    entry __meta cannot decode would stop every replica on every replay."""
    if gm.group != META_GROUP_ID:
        return False
    try:
        for entry in gm.message.entries:
            if entry.type != raft_pb2.ENTRY_NORMAL:
                return False
            meta_pb2.MetaCommand.FromString(entry.data)
    except google.protobuf.message.DecodeError:
        return False
    return True


class PeerNetwork:
    def __init__(self, node_id: int, *, has_peers: bool, incarnation: int) -> None:
        self.node_id = node_id
        self._has_peers = has_peers
        # Set by the node once it built the runtime (which is given this network's send).
        self.runtime: RaftRuntime | None = None
        self.transport: Transport | None = None  # set once the node made it
        self._liveness: dict[int, bytes] = {}
        # Tells this process from an earlier one of the same node in its liveness messages
        # (random, nonzero: the node draws it from its rng).
        self._incarnation = incarnation

    def send(self, group_id: str, message: Message) -> None:
        if self.transport is not None:
            self.transport.send(message.to, group_id, message_to_pb(message))

    def heartbeat(self, peer: int) -> None:
        if self.transport is not None:
            alive = self._liveness.get(peer)
            if alive is None:  # addressed like any message, so the peer's server accepts it
                # term carries this process's incarnation (RaftRuntime.liveness_from)
                alive = self._liveness[peer] = raft_pb2.Message(
                    to=peer, term=self._incarnation, **{"from": self.node_id}).SerializeToString()
            self.transport.send(peer, LIVENESS_GROUP, alive)

    def on_batch(self, batch: transport_pb2.RaftBatch) -> None:
        runtime = self.runtime
        runtime.heard_from(batch.from_node)
        for gm in batch.messages:
            if gm.group == LIVENESS_GROUP:  # its term carries the sender's incarnation
                runtime.liveness_from(batch.from_node, gm.message.term)
                continue
            message = peer_message_from_pb(gm.message)
            if message is not None and message.type == MessageType.PROPOSE and not _forwardable(gm):
                message = None
            if message is None:  # an enum value outside the protocol, a local-only type, ...
                runtime.malformed_drops += 1
                log.debug("dropped a message of type %d from node %d for group %s", gm.message.type,
                          batch.from_node, gm.group)
                continue
            if not runtime.deliver(gm.group, message):
                # A group deleted here, or not created yet (its topic is still being applied).
                runtime.unknown_group_drops += 1
                log.debug("dropped a message from node %d for unknown group %s", batch.from_node, gm.group)

    def report_unreachable(self, peer: int, group_id: str) -> None:
        group = self.runtime.groups.get(group_id)
        if group is not None:
            group.report_unreachable(peer)

    def report_snapshot(self, peer: int, group_id: str, ok: bool) -> None:
        group = self.runtime.groups.get(group_id)
        if group is not None:
            group.report_snapshot(peer, ok)

    def peer_down(self, peer: int) -> None:
        self.runtime.peer_down(peer)

    def broker_alive(self, node_id: int) -> bool:
        """Whether this node hears from that broker (itself: always), and its connection to
        it has not broken since (a killed process shows as down at once)."""
        if not self._has_peers:
            return node_id == self.node_id
        runtime = self.runtime
        if not runtime.is_reachable(node_id, trio.current_time()):
            return False
        if node_id != self.node_id and self.transport is not None and self.transport.peer_closed(node_id):
            # Its process died a moment ago and our read loop has not run yet: act on it now
            # (the groups it led start their election too), as the transport will shortly.
            runtime.peer_down(node_id)
            return False
        return True


class TransportFactory(typing.Protocol):
    """Makes the node's transport. The node passes `tls` and `public_listen` only when its
    config asks for them (mutual TLS between nodes, a cleartext /health listener)."""

    def __call__(self, node_id: int, listen: tuple[str, int], peers: dict[int, tuple[str, int]],
                 network: PeerNetwork, registry: CollectorRegistry,
                 health: typing.Callable[[], dict], **options) -> Transport: ...


def tcp_transport(node_id: int, listen: tuple[str, int], peers: dict[int, tuple[str, int]],
                  network: PeerNetwork, registry: CollectorRegistry,
                  health: typing.Callable[[], dict], *, tls: PeerTLS | None = None,
                  public_listen: tuple[str, int] | None = None) -> Transport:
    """The HTTP/2 transport over TCP: Raft ingress from peers, /health and /metrics."""
    return Transport(node_id, listen, peers, network.on_batch, network.report_unreachable,
                     report_snapshot=network.report_snapshot, registry=registry, health=health,
                     on_peer_down=network.peer_down, tls=tls, public_listen=public_listen)
