"""How nodes are wired: through the harness's TCP proxies (default) or in network namespaces.

Both give the cluster the same interface: where node n listens and what it is told
(`NodeAddresses`), how to start its process (`command_prefix`), and `set_link(a, b, state)`
to cut, black-hole or delay what node a sends to node b, and `heal()`.

ProxyNetwork needs no privileges: node i's --peers names the proxy of link i->j for each
peer j, and clients reach node i through its client proxy (--advertised).

NetnsNetwork (root only) puts each node in its own network namespace, joined by veth pairs
to a bridge in the harness's namespace, each node at 10.77.K.n. Links are cut with routes
inside the sender's namespace: `prohibit` (an immediate error, like a refused connection)
for a cut and `blackhole` (silence) for a black hole, so partitions happen in the kernel,
below the node's TCP. Delays need `tc netem`; where the kernel has no netem a delay fault
is refused with a message saying so. nftables is not needed for these faults.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import attrs
import trio

from .proxy import LinkState, Proxy

KAFKA_PORT_NETNS = 9092
RAFT_PORT_NETNS = 9093
NETNS_SUBNET_PREFIX = "10.77"
IP_TIMEOUT_S = 10.0


class NetworkUnavailable(Exception):
    """The network mode cannot run here (the message says why and what to use instead)."""


@attrs.frozen
class NodeAddresses:
    listen: str          # Kafka HOST:PORT the node binds
    advertised: str      # what clients are told
    raft_host: str       # where the harness reaches /health and /faults
    raft_port: int
    peers: str           # the node's --peers


class ProxyNetwork:
    name = "proxy"

    def __init__(self) -> None:
        self.client_proxies: dict[int, Proxy] = {}
        self.link_proxies: dict[tuple[int, int], Proxy] = {}
        self._kafka: dict[int, int] = {}
        self._raft: dict[int, int] = {}

    async def setup(self, nursery: trio.Nursery, ids: list[int], ports: list[int]) -> None:
        size = len(ids)
        self._kafka = {n: ports[i] for i, n in enumerate(ids)}
        self._raft = {n: ports[size + i] for i, n in enumerate(ids)}
        for n in ids:
            self.client_proxies[n] = Proxy(f"client->{n}", ("127.0.0.1", self._kafka[n]))
            await nursery.start(self.client_proxies[n].run)
            for m in ids:
                if m != n:
                    self.link_proxies[(n, m)] = Proxy(f"{n}->{m}", ("127.0.0.1", self._raft[m]))
                    await nursery.start(self.link_proxies[(n, m)].run)

    def addresses(self, n: int, ids: list[int]) -> NodeAddresses:
        peers = ",".join(f"{m}@127.0.0.1:{self._raft[m] if m == n else self.link_proxies[(n, m)].port}"
                         for m in ids)
        return NodeAddresses(listen=f"127.0.0.1:{self._kafka[n]}",
                             advertised=f"127.0.0.1:{self.client_proxies[n].port}",
                             raft_host="127.0.0.1", raft_port=self._raft[n], peers=peers)

    def command_prefix(self, n: int) -> list[str]:
        return []

    def bootstrap(self, ids: list[int]) -> str:
        return ",".join(f"127.0.0.1:{self.client_proxies[n].port}" for n in ids)

    def set_link(self, src: int, dst: int, state: LinkState, delay_s: float = 0.0) -> None:
        self.link_proxies[(src, dst)].set(state, delay_s)

    def set_client_link(self, n: int, state: LinkState, delay_s: float = 0.0) -> None:
        """The link between every client and node n (both ways)."""
        self.client_proxies[n].set(state, delay_s)

    def heal(self) -> None:
        for proxy in (*self.link_proxies.values(), *self.client_proxies.values()):
            proxy.heal()

    def teardown(self) -> None:
        pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and result.returncode != 0:
        raise NetworkUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def netns_unavailable_reason() -> str | None:
    """None when namespaces can be made here; else why not."""
    if os.geteuid() != 0:
        return "netns mode needs root (ip netns, veth, bridge); use network: proxy"
    if shutil.which("ip") is None:
        return "netns mode needs the `ip` tool (iproute2); use network: proxy"
    probe = f"chaos-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (NetworkUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` does not work here ({exc}); use network: proxy"
    _ip("netns", "del", probe, check=False)
    return None


class NetnsNetwork:
    name = "netns"

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        self.tag = f"{tag:05d}"
        self.bridge = f"chb{self.tag}"
        self.subnet = f"{NETNS_SUBNET_PREFIX}.{tag % 250}"
        self.namespaces: dict[int, str] = {}
        self.routes: set[tuple[int, int]] = set()
        self.netem: bool | None = None
        self._made: list[tuple[str, ...]] = []

    def ip_of(self, n: int) -> str:
        return f"{self.subnet}.{n}"

    async def setup(self, nursery: trio.Nursery, ids: list[int], ports: list[int]) -> None:
        reason = netns_unavailable_reason()
        if reason:
            raise NetworkUnavailable(reason)
        await trio.to_thread.run_sync(self._setup_sync, ids)

    def _setup_sync(self, ids: list[int]) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", "del", self.bridge))
        _ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n in ids:
            ns, veth = f"chaos{self.tag}n{n}", f"chv{self.tag}{n}"
            _ip("netns", "add", ns)
            self._made.append(("netns", "del", ns))
            self.namespaces[n] = ns
            _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            self._made.append(("link", "del", veth))
            _ip("link", "set", f"{veth}p", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self.ip_of(n)}/24", "dev", f"{veth}p")
            _ip("-n", ns, "link", "set", f"{veth}p", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        probe = subprocess.run(["ip", "netns", "exec", self.namespaces[ids[0]], "tc", "qdisc", "add",
                                "dev", "lo", "root", "netem", "delay", "1ms"], capture_output=True)
        self.netem = probe.returncode == 0
        if self.netem:
            subprocess.run(["ip", "netns", "exec", self.namespaces[ids[0]], "tc", "qdisc", "del", "dev",
                            "lo", "root"], capture_output=True)

    def addresses(self, n: int, ids: list[int]) -> NodeAddresses:
        peers = ",".join(f"{m}@{self.ip_of(m)}:{RAFT_PORT_NETNS}" for m in ids)
        return NodeAddresses(listen=f"{self.ip_of(n)}:{KAFKA_PORT_NETNS}",
                             advertised=f"{self.ip_of(n)}:{KAFKA_PORT_NETNS}",
                             raft_host=self.ip_of(n), raft_port=RAFT_PORT_NETNS, peers=peers)

    def command_prefix(self, n: int) -> list[str]:
        # `ip netns exec` execs the command: the PID the harness holds is the node's.
        return ["ip", "netns", "exec", self.namespaces[n]]

    def bootstrap(self, ids: list[int]) -> str:
        return ",".join(f"{self.ip_of(n)}:{KAFKA_PORT_NETNS}" for n in ids)

    def set_link(self, src: int, dst: int, state: LinkState, delay_s: float = 0.0) -> None:
        ns = self.namespaces[src]
        if (src, dst) in self.routes:
            _ip("-n", ns, "route", "del", f"{self.ip_of(dst)}/32", check=False)
            self.routes.discard((src, dst))
        if state is LinkState.CUT or state is LinkState.BLACKHOLE:
            kind = "prohibit" if state is LinkState.CUT else "blackhole"
            _ip("-n", ns, "route", "add", kind, f"{self.ip_of(dst)}/32")
            self.routes.add((src, dst))
        elif delay_s > 0:
            if not self.netem:
                raise NetworkUnavailable("this kernel has no tc netem: delays cannot be injected in "
                                         "netns mode (use network: proxy)")
            veth = f"chv{self.tag}{src}p"
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", veth, "root",
                            "netem", "delay", f"{int(delay_s * 1000)}ms"], capture_output=True, check=True)

    def set_client_link(self, n: int, state: LinkState, delay_s: float = 0.0) -> None:
        raise NetworkUnavailable("client links are not faulted in netns mode (the harness and "
                                 "its clients share one namespace); use network: proxy")

    def heal(self) -> None:
        for src, dst in list(self.routes):
            _ip("-n", self.namespaces[src], "route", "del", f"{self.ip_of(dst)}/32", check=False)
        self.routes.clear()
        if self.netem:
            for n, ns in self.namespaces.items():
                subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", f"chv{self.tag}{n}p",
                                "root"], capture_output=True)

    def teardown(self) -> None:
        """Delete every link and namespace this network made (after its processes ended)."""
        for args in reversed(self._made):
            _ip(*args, check=False)
        self._made.clear()


def make_network(name: str):
    return {"proxy": ProxyNetwork, "netns": NetnsNetwork}[name]()
