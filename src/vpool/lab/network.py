"""The lab's wires: a management bridge, an isolated guest L2 spanning every lab host, DHCP.

root netns:  <mgmt_bridge> .1  <-veth->  labN: eth0 .(10+N)            management and migration
             <guest_bridge> .1 <-veth->  labN: <guest_bridge> (no IP)  the guests' one L2 segment

Guests of every host share the guest L2, so a guest keeps its DHCP lease and its address when it
moves. That L2 is isolated by construction: DHCP hands out no router, lab hosts get no default
route, and an nftables table drops anything the root namespace would forward into or out of the
lab's bridges (guests, hosts and tests talk only to addresses inside what the lab created).
DHCP is the lab's own dnsmasq rather than a libvirt network, so the lab owns every process it
depends on and needs no particular libvirtd to be running.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from vpool.lab.procs import LabError, Proc, run, spawn

MAX_HOSTS = 9
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,5}")  # "<prefix>9-m" must fit IFNAMSIZ (15)
IFNAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,14}")
SUBNET_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}")
HOST_MGMT_IF = "eth0"
HOST_UPLINK_IF = "uplink"


@dataclass(frozen=True)
class Topology:
    """Names and /24 subnets of one lab; a second lab on the machine (a test's) picks other ones."""

    prefix: str = "lab"
    mgmt_bridge: str = "labmgmt0"
    guest_bridge: str = "labbr0"
    mgmt_subnet: str = "10.88.0"
    guest_subnet: str = "10.77.0"

    def __post_init__(self):
        if not PREFIX_RE.fullmatch(self.prefix):
            raise LabError(f"lab prefix {self.prefix!r} must be 1-6 lower-case letters or digits, "
                           "starting with a letter")
        for name in (self.mgmt_bridge, self.guest_bridge):
            if not IFNAME_RE.fullmatch(name):
                raise LabError(f"bridge name {name!r} must be 1-15 lower-case letters, digits, '_' or '-'")
        if self.mgmt_bridge == self.guest_bridge:
            raise LabError("the management and the guest bridge need different names")
        nets = []
        for subnet in (self.mgmt_subnet, self.guest_subnet):
            try:
                if not SUBNET_RE.fullmatch(subnet):
                    raise ValueError
                nets.append(ipaddress.ip_network(f"{subnet}.0/24"))
            except ValueError:
                raise LabError(f"subnet {subnet!r} must be the first three octets of a /24, like 10.88.0") from None
        if nets[0] == nets[1]:
            raise LabError("the management and the guest subnet must differ")

    @classmethod
    def from_json(cls, data: dict) -> Topology:
        return cls(**data)

    def to_json(self) -> dict:
        return asdict(self)

    def host_name(self, n: int) -> str:
        check_host_number(n)
        return f"{self.prefix}{n}"

    def host_address(self, n: int) -> str:
        check_host_number(n)
        return f"{self.mgmt_subnet}.{10 + n}"

    @property
    def mgmt_address(self) -> str:
        return f"{self.mgmt_subnet}.1"

    @property
    def guest_address(self) -> str:
        return f"{self.guest_subnet}.1"

    def veths(self, n: int) -> tuple[str, str]:
        """Root-side ends of host n's management and guest veths."""
        name = self.host_name(n)
        return f"{name}-m", f"{name}-g"

    @property
    def firewall_table(self) -> str:
        return f"vpool_lab_{self.prefix}"


def check_host_number(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_HOSTS:
        raise LabError(f"a lab has hosts 1 to {MAX_HOSTS}, not {n!r}")
    return n


def _ip(*args: str, netns: str | None = None) -> str:
    return run(["ip", *(("-n", netns) if netns else ()), *args])


def link_exists(name: str, netns: str | None = None) -> bool:
    return bool(links(netns).get(name))


def links(netns: str | None = None) -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(_ip("-j", "link", "show", netns=netns) or "[]")}


def netns_list() -> set[str]:
    return {ns["name"] for ns in json.loads(run(["ip", "-j", "netns", "list"]) or "[]")}


def _ensure_address(dev: str, cidr: str, netns: str | None = None) -> None:
    _ip("addr", "replace", cidr, "dev", dev, netns=netns)


def ensure_bridge(name: str, cidr: str | None, netns: str | None = None) -> bool:
    """Bring the bridge up (with its address); True if this call created it."""
    created = not link_exists(name, netns)
    if created:
        _ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=netns)
    if cidr:
        _ensure_address(name, cidr, netns)
    _ip("link", "set", name, "up", netns=netns)
    return created


def remove_link(name: str, netns: str | None = None) -> None:
    if link_exists(name, netns):
        _ip("link", "del", name, netns=netns)


def ensure_root(topo: Topology, owned: set[str]) -> set[str]:
    """The two bridges in the root netns. A bridge of that name the lab did not create belongs to
    someone else (another lab, a libvirt network) and is never taken over; returns the bridges
    created now."""
    created = set()
    for bridge, addr in ((topo.mgmt_bridge, topo.mgmt_address), (topo.guest_bridge, topo.guest_address)):
        if bridge not in owned and link_exists(bridge):
            raise LabError(f"a bridge named {bridge} already exists and this lab did not create it; "
                           "take it down first or give the lab other names")
        if ensure_bridge(bridge, f"{addr}/24"):
            created.add(bridge)
    return created


def fence(topo: Topology) -> None:
    """While the lab is down its subnets are unreachable rather than routed by default.

    A control plane that still has the lab's hosts registered keeps reconnecting to them; with
    the bridges gone, those packets would take the machine's default route out, which the
    network rule forbids. An `unreachable` route makes them fail at once, inside the machine."""
    for subnet in (topo.mgmt_subnet, topo.guest_subnet):
        _ip("route", "replace", "unreachable", f"{subnet}.0/24")


def unfence(topo: Topology) -> None:
    for subnet in (topo.mgmt_subnet, topo.guest_subnet):
        if json.loads(_ip("-j", "route", "show", "type", "unreachable", f"{subnet}.0/24") or "[]"):
            _ip("route", "del", "unreachable", f"{subnet}.0/24")


def ensure_isolation(topo: Topology) -> None:
    """Nothing is routed between the lab's bridges and anything else, whatever ip_forward says.

    Traffic within one bridge passes: where br_netfilter is loaded it meets this hook too, with
    the bridge as both its in- and out-interface, and it is how guests and hosts talk. The table
    is declared, deleted and declared again in one transaction, so re-running this leaves
    exactly one copy of the rules."""
    table = f"inet {topo.firewall_table}"
    rules = "".join(f"    iifname \"{b}\" oifname != \"{b}\" drop\n    oifname \"{b}\" iifname != \"{b}\" drop\n"
                    for b in (topo.mgmt_bridge, topo.guest_bridge))
    run(["nft", "-f", "-"], input=(
        f"table {table}\ndelete table {table}\n"
        f"table {table} {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n"
        f"{rules}  }}\n}}\n"))


def remove_isolation(topo: Topology) -> None:
    table = f"inet {topo.firewall_table}"
    run(["nft", "-f", "-"], input=f"table {table}\ndelete table {table}\n")


def ensure_host_links(topo: Topology, n: int, owned: bool) -> bool:
    """Host n's netns and its two veths; True if the netns was created now."""
    ns = topo.host_name(n)
    mgmt, guest = topo.veths(n)
    created = ns not in netns_list()
    if not created and not owned:
        raise LabError(f"a network namespace named {ns} already exists and this lab did not create it")
    if created:
        run(["ip", "netns", "add", ns])
    _ip("link", "set", "lo", "up", netns=ns)
    if not link_exists(mgmt):
        remove_link(HOST_MGMT_IF, ns)
        _ip("link", "add", mgmt, "type", "veth", "peer", "name", HOST_MGMT_IF, "netns", ns)
    _ip("link", "set", mgmt, "master", topo.mgmt_bridge, "up")
    _ensure_address(HOST_MGMT_IF, f"{topo.host_address(n)}/24", ns)
    _ip("link", "set", HOST_MGMT_IF, "up", netns=ns)
    # No default route: a lab host reaches the management subnet and nothing else.
    if not link_exists(guest):
        remove_link(HOST_UPLINK_IF, ns)
        _ip("link", "add", guest, "type", "veth", "peer", "name", HOST_UPLINK_IF, "netns", ns)
    _ip("link", "set", guest, "master", topo.guest_bridge, "up")
    ensure_bridge(topo.guest_bridge, None, ns)
    _ip("link", "set", HOST_UPLINK_IF, "master", topo.guest_bridge, "up", netns=ns)
    return created


def remove_host_links(topo: Topology, n: int) -> None:
    """Deleting a root-side veth deletes its peer; deleting the netns takes the rest."""
    for veth in topo.veths(n):
        remove_link(veth)
    if topo.host_name(n) in netns_list():
        run(["ip", "netns", "del", topo.host_name(n)])


def netns_pids(topo: Topology, n: int) -> list[int]:
    """Whatever still runs in host n's netns: guests whose libvirtd died before `down`."""
    if topo.host_name(n) not in netns_list():
        return []
    return [int(p) for p in run(["ip", "netns", "pids", topo.host_name(n)]).split()]


# --- DHCP -------------------------------------------------------------------------------------
def lease_file(state_dir: Path) -> Path:
    return state_dir / "net" / "dnsmasq.leases"


def start_dhcp(topo: Topology, state_dir: Path) -> Proc:
    """dnsmasq serving DHCP on the guest bridge only: no DNS (port 0), no router, no DNS server
    option, so a guest learns an address and nothing that would lead it out."""
    leases = lease_file(state_dir)
    leases.parent.mkdir(parents=True, exist_ok=True)
    leases.touch()
    return spawn([
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        f"--interface={topo.guest_bridge}", "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range={topo.guest_subnet}.100,{topo.guest_subnet}.199,255.255.255.0,12h",
        "--dhcp-option=option:router", "--dhcp-option=option:dns-server",
        "--dhcp-authoritative", "--dhcp-no-override", f"--dhcp-leasefile={leases}",
        "--pid-file",  # none written: the lab records the PID itself
        f"--log-facility={state_dir / 'logs' / 'dnsmasq.log'}", "--log-dhcp",
    ], state_dir / "logs" / "dnsmasq.out")


def leases(state_dir: Path) -> dict[str, str]:
    """MAC -> IPv4 address for every guest on the lab's L2, whichever host it runs on.

    The lab hosts' libvirtd cannot tell: their guests sit on a plain bridge, not on a libvirt
    network, so libvirt has no lease for them."""
    out = {}
    try:
        text = lease_file(state_dir).read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out[fields[1].lower()] = fields[2]
    return out
