"""Cluster membership: nodes join and leave __meta's Raft group while the cluster runs.

Adding a node (`chronik-trio node --node-id 4 --peers 4@HOST:RAFTPORT --join MEMBER:KAFKAPORT`
on an empty data dir; docs/operations.md):

1. The new node does not bootstrap __meta. It opens the group with no configuration, starts
   its Raft transport, and sends AddRaftVoter (Kafka API 80, KIP-853's request for adding a
   metadata voter) with its id and Raft address to the member named by --join, again until
   answered. The member commits NodeJoinRequested through __meta (refused, DUPLICATE_VOTER,
   when the id belongs to a registered broker or is already a voter).
2. Every node learns the joiner's Raft address from __meta (sync_peers): the transport adds
   it as a peer at run time. The same list (registered brokers' Raft addresses, joining
   nodes, the node's own --peers, less removed nodes) is how a restarted node finds its
   peers again: it is in __meta, which every member keeps on disk.
3. The __meta leader (drive) adds it as a learner. Its log must not start at index 1 then,
   so the leader snapshots __meta first; the learner receives that snapshot, then the
   entries after it (raft_group.RaftGroup.deliver refuses entries from the start of the log
   to a group without a configuration). Once the learner's log has reached the commit index
   (within CATCH_UP_LAG_ENTRIES), the leader makes it a voter through a joint configuration
   (ConfChangeV2 JOINT_IMPLICIT, left automatically): old and new voters must both agree.
4. The new node waits to be a voter, then registers as a broker (it then appears in
   Metadata and DescribeCluster and is given partitions like any other broker).

`--join ID@HOST:PORT` names a member's Raft address instead: steps 1's DescribeQuorum and
AddRaftVoter are then one call of the peer transport (JOIN_CALL, proto/meta.proto's
JoinAnswer), made and authenticated like the Raft traffic itself: under peer TLS the joining
node shows its node certificate (signed by the cluster's CA, naming node-<id>), and the
member refuses a call asking to add any other id. So a node joins a cluster whose Kafka
listeners all require SASL or TLS client certificates with the credential it needs anyway to
be a member, and no Kafka principal (docs/security.md).

Removing a node (remove_node: `admin remove-node N`, RemoveRaftVoter; `admin decommission`
calls it after moving the node's replicas): refused while the node hosts partition
replicas (naming them), for an unknown id, and for __meta's last voter. NodeRemoved takes
it out of the broker registry (a removed node's registration is refused from then on); the
__meta leader then removes it from __meta's voters through a joint configuration. A dead
node that still hosts replicas (a lost machine) can be removed with force (UnregisterBroker,
`admin remove-node N --force`) only if no answering node heard from it for NODE_DEAD_S, and
every partition with a replica on it keeps a majority of its replicas alive; its replicas
stay in the assignments (offline) until moved.
"""

from __future__ import annotations

import logging
import uuid

import google.protobuf.message
import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import ClusterError
from chronik_trio.errors import BrokerError, NotLeader, ProposalFailed, RequestTimedOut
from chronik_trio.kafka.codec import decode_client_response, encode_client_request
from chronik_trio.kafka.handlers.context import MetaQuorum
from chronik_trio.pb import meta_pb2
from chronik_trio.raft.types import ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2
from chronik_trio.transport.rpc import Connect, RpcFailed, RpcRefused

from .meta_group import MetaMachine, MetaService
from .peers import PeerNetwork
from .raft_group import RaftGroup
from .raft_runtime import RaftRuntime
from .seams import RunSync
from .snapshots import take_meta_snapshot

log = logging.getLogger(__name__)

DRIVE_S = 0.5  # the __meta leader looks at pending joins and removals at least this often
CATCH_UP_LAG_ENTRIES = 64  # a learner this close to the commit index is promoted
NODE_DEAD_S = 10.0  # a forced removal needs the node unheard for this long
ADD_RAFT_VOTER_KEY, DESCRIBE_QUORUM_KEY, DESCRIBE_QUORUM_VERSION = 80, 55, 2
JOIN_REQUEST_TIMEOUT_S = 20.0
JOIN_RETRY_S = 1.0
JOIN_WAIT_LOG_S = 10.0
RESPONSE_BYTES_MAX = 1 << 20
RAFT_LISTENER = "RAFT"  # the name of the listener a joining node gives in AddRaftVoter
JOIN_CALL = "membership-join"  # the peer transport's call of a node joining (--join ID@HOST:PORT)
# Answers a joining node tries again: the cluster is busy (no __meta leader for now).
RETRIABLE_JOIN_ERRORS = (ErrorCode.request_timed_out, ErrorCode.not_controller, ErrorCode.unknown_server_error)


class JoinRefused(Exception):
    """The cluster refused this node's request to join (the message says why)."""


def parse_address(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host, int(port)


def members_of(conf_state) -> set[int]:
    return (set(conf_state.voters) | set(conf_state.learners) | set(conf_state.voters_outgoing)
            | set(conf_state.learners_next))


class Membership:
    def __init__(self, node_id: int, config_peers: dict[int, tuple[str, int]], machine: MetaMachine,
                 meta_service: MetaService, runtime: RaftRuntime, network: PeerNetwork,
                 run_sync: RunSync) -> None:
        """config_peers: --peers, this node's own entry included."""
        self.node_id = node_id
        self._own_address = config_peers.get(node_id)
        self._config_peers = {n: a for n, a in config_peers.items() if n != node_id}
        self._machine = machine
        self._meta_service = meta_service
        self._runtime = runtime
        self._network = network
        self._run_sync = run_sync
        self._known: dict[int, tuple[str, int]] = {}  # the transport's peers
        machine.listeners.append(self.sync_peers)

    # --- every node: whom to talk to ------------------------------------------------------------

    def addresses(self) -> dict[int, tuple[str, int]]:
        """Every other member's Raft address: what __meta knows (registered brokers, joining
        nodes), where --peers names a node its entry instead (the operator's word wins: e.g.
        the chaos harness routes each link through a proxy), less removed nodes."""
        state = self._machine.state
        out: dict[int, tuple[str, int]] = {}
        for broker in state.brokers.values():
            if (address := parse_address(broker.raft_address)) is not None:
                out[broker.node_id] = address
        for node_id, raft_address in state.joining.items():
            if (address := parse_address(raft_address)) is not None:
                out[node_id] = address
        out.update(self._config_peers)
        for node_id in state.removed_nodes:
            out.pop(node_id, None)
        out.pop(self.node_id, None)
        return out

    def learn(self, addresses: dict[int, tuple[str, int]]) -> None:
        """Peers a joining node was told of (DescribeQuorum) before it has __meta's state."""
        self._config_peers.update({n: a for n, a in addresses.items() if n != self.node_id})
        self.sync_peers()

    def quorum(self) -> MetaQuorum:
        group = self._meta_service.group
        conf = self._machine.conf_state
        addresses = self.addresses()
        if self._own_address is not None:
            addresses[self.node_id] = self._own_address
        match = {n: m for n, m in group.node.match_indexes().items()} if group.is_leader else {}
        return MetaQuorum(group.leader_id, group.term, group.node.committed_index, tuple(conf.voters),
                          tuple(conf.learners), addresses, match)

    def transport_started(self, peers: dict[int, tuple[str, int]]) -> None:
        """The transport was made with these peers."""
        self._known = dict(peers)
        self.sync_peers()

    def sync_peers(self) -> None:
        """Bring the transport's peers and the runtime's liveness list in line with
        addresses() (called after every __meta change; no await)."""
        transport = self._network.transport
        if transport is None:
            return
        wanted = self.addresses()
        for node_id, address in sorted(wanted.items()):
            if self._known.get(node_id) != address:
                log.info("node %d: peer node %d at %s:%d", self.node_id, node_id, *address)
                transport.add_peer(node_id, address)
        for node_id in sorted(set(self._known) - set(wanted)):
            log.info("node %d: node %d is no longer a peer", self.node_id, node_id)
            transport.remove_peer(node_id)
        self._known = wanted
        self._runtime.set_peers(sorted(set(wanted) | {self.node_id}))

    # --- the __meta leader: carry joins and removals out ------------------------------------------

    async def run(self) -> None:
        group = self._meta_service.group
        while True:
            with trio.move_on_after(DRIVE_S):
                await self._machine.changed.wait()
            if not group.is_leader:
                continue
            try:
                await self._drive(group)
            except (NotLeader, ProposalFailed) as exc:
                log.info("membership change not proposed now (%s); trying again", exc)

    async def _drive(self, group: RaftGroup) -> None:
        """At most one conf change per call: Raft takes one at a time."""
        state, conf = self._machine.state, group.node.status().conf_state
        if conf.voters_outgoing:
            return  # leaving a joint configuration (automatic): the next change waits
        members = members_of(conf)
        for node_id in sorted(state.removed_nodes & members):
            if set(conf.voters) <= {node_id}:
                continue  # never the last voter (remove_node refuses it; a race is left alone)
            log.info("removing node %d from __meta's voters (joint consensus)", node_id)
            await group.propose_conf_change(ConfChangeV2(
                (ConfChangeSingle(ConfChangeType.REMOVE_NODE, node_id),), ConfChangeTransition.JOINT_IMPLICIT))
            return
        progress = group.node.progress()
        for node_id in sorted(state.joining):
            if node_id not in members:
                await self._snapshot_if_log_starts_at_one(group)
                log.info("adding node %d to __meta as a learner", node_id)
                await group.propose_conf_change(ConfChangeV2(
                    (ConfChangeSingle(ConfChangeType.ADD_LEARNER_NODE, node_id),)))
                return
            if node_id not in conf.learners or node_id not in progress:
                continue
            if progress[node_id].match == 0:
                await self._snapshot_if_log_starts_at_one(group)  # e.g. a new leader since
            elif progress[node_id].match + CATCH_UP_LAG_ENTRIES >= group.node.committed_index:
                log.info("node %d caught up (index %d of %d): making it a voter of __meta (joint consensus)",
                         node_id, progress[node_id].match, group.node.committed_index)
                await group.propose_conf_change(ConfChangeV2(
                    (ConfChangeSingle(ConfChangeType.ADD_NODE, node_id),), ConfChangeTransition.JOINT_IMPLICIT))
                return

    async def _snapshot_if_log_starts_at_one(self, group: RaftGroup) -> None:
        if group.storage.snapshot_index == 0:
            await take_meta_snapshot(self._meta_service, self._run_sync)

    # --- what the Kafka handlers call ---------------------------------------------------------------

    async def add_node(self, node_id: int, raft_address: str) -> None:
        """AddRaftVoter: record node_id as joining (the leader does the rest). Raises
        ClusterError (DUPLICATE_VOTER, INVALID_REQUEST) or MetaUnavailable."""
        if node_id in self._machine.conf_state.voters:
            raise ClusterError(f"node {node_id} is already a voter of __meta", ErrorCode.duplicate_voter)
        if parse_address(raft_address) is None:
            raise ClusterError(f"the joining node's Raft address {raft_address!r} is not HOST:PORT",
                               ErrorCode.invalid_request)
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(
            node_join_requested=meta_pb2.NodeJoinRequested(node_id=node_id, raft_address=raft_address)))
        if not applied.ok:
            raise applied.error
        log.info("node %d asked to join at %s", node_id, raft_address)

    def register(self, transport) -> None:
        """Serve JOIN_CALL on the peer transport."""
        transport.add_rpc_handler(JOIN_CALL, self._serve_join)

    async def _serve_join(self, from_node: int, body: bytes) -> bytes:
        """JOIN_CALL from from_node (named by its certificate under peer TLS): add_node, and
        every member's Raft address."""
        try:
            call = meta_pb2.NodeJoinRequested.FromString(body)
        except google.protobuf.message.DecodeError as exc:
            raise RpcRefused(f"not a NodeJoinRequested: {exc}") from None
        if call.node_id != from_node:
            raise RpcRefused(f"node {from_node} asked to add node {call.node_id}: a node joins only as itself")
        answer = meta_pb2.JoinAnswer()
        try:
            await self.add_node(call.node_id, call.raft_address)
        except BrokerError as exc:
            log.info("join of node %d (peer call) refused: %s", call.node_id, exc)
            answer.error_code, answer.error_message = int(exc.error_code), str(exc)
        for node_id, (host, port) in sorted(self.quorum().addresses.items()):
            answer.members.add(node_id=node_id, raft_address=f"{host}:{port}")
        return answer.SerializeToString()

    async def remove_node(self, node_id: int, *, force: bool = False, timeout_s: float = 30.0) -> None:
        """Take node_id out of the cluster: the broker registry, then __meta's voters (the
        step `admin decommission` ends with). Returns once this node has applied the new
        configuration. Raises ClusterError: BROKER_ID_NOT_REGISTERED for an id that is
        neither a broker nor a member; INVALID_REQUEST for __meta's last voter, for a node
        that hosts replicas (unless force), and for a forced removal of a node that is not
        dead or whose partitions would lose their majority; RequestTimedOut."""
        state, conf = self._machine.state, self._machine.conf_state
        if node_id not in state.brokers and node_id not in state.joining and node_id not in members_of(conf):
            raise ClusterError(f"unknown broker id {node_id}", ErrorCode.broker_id_not_registered)
        if set(conf.voters) <= {node_id}:
            raise ClusterError(f"node {node_id} is the last voter of __meta; a cluster keeps at least one",
                               ErrorCode.invalid_request)
        if force:
            self._check_forced_removal(node_id)
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(
            node_removed=meta_pb2.NodeRemoved(node_id=node_id, force=force)))
        if not applied.ok:
            raise applied.error
        log.info("node %d removed from the broker registry%s; leaving __meta's voters", node_id,
                 " (forced: its replicas are offline until moved)" if force else "")
        with trio.move_on_after(timeout_s):
            while node_id in members_of(self._machine.conf_state):
                await self._machine.changed.wait()
            return
        raise RequestTimedOut(f"node {node_id} is out of the broker registry but still a member of __meta "
                              f"after {timeout_s:.0f} s (no __meta leader?); the leader goes on removing it")

    def _check_forced_removal(self, node_id: int) -> None:
        now = trio.current_time()
        heard = self._runtime.peers.get(node_id)
        if node_id == self.node_id or (heard is not None and now - heard < NODE_DEAD_S):
            raise ClusterError(f"node {node_id} is alive (heard from within {NODE_DEAD_S:.0f} s): force is for a "
                               f"dead node only; move its replicas first (decommission)", ErrorCode.invalid_request)
        state = self._machine.state
        lost = []
        for topic in state.topics.values():
            for partition, replicas in enumerate(topic.replicas):
                if node_id in replicas:
                    alive = [r for r in replicas if r != node_id and self._runtime.is_alive(r, now)]
                    if len(alive) <= len(replicas) // 2:
                        lost.append(f"{topic.name}-{partition}")
        if lost:
            raise ClusterError(f"removing node {node_id} would leave partition(s) without a live majority: "
                               f"{', '.join(lost[:10])}", ErrorCode.invalid_request)


# --- the joining node -----------------------------------------------------------------------------

async def learn_members(member: str, connect: Connect = trio.open_tcp_stream) -> dict[int, tuple[str, int]]:
    """The Raft address of every member of the cluster, from member's DescribeQuorum answer
    (tried until it answers): the joining node must be able to answer the __meta leader.
    connect: opens the stream to the member's Kafka listener (kafka_call)."""
    body = {"topics": [{"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]}
    attempt = 0
    while True:
        attempt += 1
        try:
            answer = await kafka_call(member, DESCRIBE_QUORUM_KEY, DESCRIBE_QUORUM_VERSION, body,
                                      JOIN_REQUEST_TIMEOUT_S, connect)
        except (OSError, ValueError, trio.TooSlowError) as exc:
            if attempt == 1 or attempt % 10 == 0:
                log.warning("no answer to DescribeQuorum from %s (%s); trying again", member,
                            exc or type(exc).__name__)
            await trio.sleep(JOIN_RETRY_S)
            continue
        return {int(n.node_id): (listener.host, int(listener.port))
                for n in answer.nodes for listener in n.listeners[:1]}


async def ask_to_join(node_id: int, raft_address: tuple[str, int], member: str, cluster_id: str | None = None,
                      connect: Connect = trio.open_tcp_stream) -> None:
    """Send AddRaftVoter to member (a Kafka HOST:PORT) until it is answered without a
    retriable error. Raises JoinRefused when the cluster refuses. connect: as kafka_call's."""
    body = {"cluster_id": cluster_id, "timeout": int(JOIN_REQUEST_TIMEOUT_S * 1000), "voter_id": node_id,
            "voter_directory_id": uuid.UUID(int=0),
            "listeners": [{"name": RAFT_LISTENER, "host": raft_address[0], "port": raft_address[1]}]}
    attempt = 0
    while True:
        attempt += 1
        try:
            answer = await kafka_call(member, ADD_RAFT_VOTER_KEY, 0, body, JOIN_REQUEST_TIMEOUT_S + 5, connect)
        except (OSError, ValueError, trio.TooSlowError) as exc:
            if attempt == 1 or attempt % 10 == 0:
                log.warning("node %d: no answer to its join request from %s (%s); trying again",
                            node_id, member, exc or type(exc).__name__)
            await trio.sleep(JOIN_RETRY_S)
            continue
        code = ErrorCode(int(answer.error_code))
        if code == ErrorCode.none:
            log.info("node %d: %s accepted its join request", node_id, member)
            return
        if code in RETRIABLE_JOIN_ERRORS:
            log.warning("node %d: join request not done yet (%s: %s); trying again", node_id, code.name,
                        answer.error_message)
            await trio.sleep(JOIN_RETRY_S)
            continue
        raise JoinRefused(f"{member} refused node {node_id}'s join request: {code.name.upper()}: {answer.error_message}")


async def join_through_peer(transport, node_id: int, raft_address: tuple[str, int], member: int) -> dict[int, tuple[str, int]]:
    """Make JOIN_CALL to peer `member` (already a peer of transport) until it is answered
    without a retriable error; every member's Raft address. Raises JoinRefused."""
    body = meta_pb2.NodeJoinRequested(node_id=node_id, raft_address="%s:%d" % raft_address).SerializeToString()
    attempt = 0
    while True:
        attempt += 1
        try:
            answer = meta_pb2.JoinAnswer.FromString(
                await transport.call(member, JOIN_CALL, body, timeout_s=JOIN_REQUEST_TIMEOUT_S + 5))
        except (RpcFailed, google.protobuf.message.DecodeError) as exc:
            if ": answered b'400'" in str(exc):  # refused (rpc.py): malformed, or not as itself
                raise JoinRefused(f"node {member} refused node {node_id}'s join call: {exc}") from None
            if attempt == 1 or attempt % 10 == 0:
                log.warning("node %d: no answer to its join call from node %d (%s); trying again",
                            node_id, member, exc)
            await trio.sleep(JOIN_RETRY_S)
            continue
        code = ErrorCode(answer.error_code)
        if code in RETRIABLE_JOIN_ERRORS:
            log.warning("node %d: join not done yet (%s: %s); trying again", node_id, code.name,
                        answer.error_message)
            await trio.sleep(JOIN_RETRY_S)
            continue
        if code != ErrorCode.none:
            raise JoinRefused(f"node {member} refused node {node_id}'s join: {code.name.upper()}: "
                              f"{answer.error_message}")
        log.info("node %d: node %d accepted its join (peer call)", node_id, member)
        return {m.node_id: address for m in answer.members
                if (address := parse_address(m.raft_address)) is not None}


async def kafka_call(address: str, api_key: int, version: int, body, timeout_s: float,
                     connect: Connect = trio.open_tcp_stream):
    """One Kafka request on a fresh connection (opened by `connect`, the node's transport's
    stream opener: TCP, or a simulated network's); the decoded response body."""
    host, port = parse_address(address) or (address, 0)
    with trio.fail_after(timeout_s):
        stream = await connect(host, port)
        async with stream:
            await stream.send_all(encode_client_request(api_key, version, body, 1, "chronik-trio-node"))
            size = int.from_bytes(await _receive_exact(stream, 4), "big", signed=True)
            if not 0 < size <= RESPONSE_BYTES_MAX:
                raise ValueError(f"{address} answered a frame of {size} bytes")
            frame = await _receive_exact(stream, size)
    return decode_client_response(api_key, version, frame, 1)


async def _receive_exact(stream: trio.abc.ReceiveStream, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise OSError("connection closed before the answer was complete")
        data += chunk
    return bytes(data)


async def wait_until_voter(node_id: int, machine: MetaMachine) -> None:
    """The joining node: until __meta, as applied here, counts it among its voters."""
    with trio.move_on_after(JOIN_WAIT_LOG_S) as scope:
        while node_id not in machine.conf_state.voters:
            await machine.changed.wait()
    while node_id not in machine.conf_state.voters:
        if scope.cancelled_caught:
            conf = machine.conf_state
            log.info("node %d: waiting to become a voter of __meta (voters %s, learners %s)", node_id,
                     conf.voters, conf.learners)
        with trio.move_on_after(JOIN_WAIT_LOG_S) as scope:
            await machine.changed.wait()
    log.info("node %d: a voter of __meta", node_id)
