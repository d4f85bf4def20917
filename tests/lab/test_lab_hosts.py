"""The lab for real: two namespaced libvirtd hosts, their network, DHCP, and a guest that moves.

The lab here has names and subnets of its own (vt1, vt2, vtmgmt0, vtbr0, 10.89.0/10.79.0) and
a temporary state directory, so it can run beside a developer's `vpool lab up`. It is taken down
at the end whatever happened; the last test checks that `down` leaves nothing behind.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest
from typer.testing import CliRunner

from vpool.cli.lab import app as lab_cli
from vpool.config import Settings
from vpool.hypervisor.domain_xml import DomainSpec, capabilities_facts, domain_xml
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.lab import network
from vpool.lab.hosts import PRIVATE_POOL, Lab
from vpool.lab.network import Topology, check_host_number
from vpool.lab.procs import LabError, Proc

TOPOLOGY = Topology(prefix="vt", mgmt_bridge="vtmgmt0", guest_bridge="vtbr0", mgmt_subnet="10.89.0",
                    guest_subnet="10.79.0")
TOOLS = ("ip", "nsenter", "unshare", "dnsmasq", "nft", "libvirtd", "virtlogd", "mount")
HOSTS = (1, 2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, bridges, mounts)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    lab = Lab(tmp_path_factory.mktemp("lab"), TOPOLOGY)
    try:
        lab.up(len(HOSTS))
        yield lab
    finally:
        lab.down(fence=False)


def _in_netns(lab: Lab, n: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", lab.topology.host_name(n), *argv],
                          capture_output=True, text=True, timeout=30)


# --- without a lab ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 10, -1, True, "3"])
def test_host_numbers_are_one_to_nine(n):
    with pytest.raises(LabError):
        check_host_number(n)


@pytest.mark.parametrize("fields", [{"prefix": "Lab"}, {"prefix": "toolong7"}, {"prefix": "a;b"},
                                    {"guest_bridge": "br0 up"}, {"guest_bridge": "labmgmt0"},
                                    {"mgmt_subnet": "10.88"}, {"guest_subnet": "10.88.0"},
                                    {"guest_subnet": "300.1.2"}])
def test_topology_refuses_names_and_subnets_it_cannot_use(fields):
    with pytest.raises(LabError):
        Topology(**fields)


def test_cli_refuses_more_than_nine_hosts():
    result = CliRunner().invoke(lab_cli, ["up", "--hosts", "10", "--no-register"])
    assert result.exit_code == 2


# --- a running lab -------------------------------------------------------------------------------
def test_each_host_answers_over_tcp_as_itself(lab):
    seen = set()
    for status in lab.status():
        conn = libvirt.open(status.uri)
        try:
            assert conn.getHostname() == status.name
            host_uuid = capabilities_facts(conn.getCapabilities())["host_uuid"]
        finally:
            conn.close()
        assert host_uuid == status.host_uuid
        seen.add(host_uuid)
    assert len(seen) == len(HOSTS)


def test_hosts_share_vpools_storage_path_and_keep_a_private_dir(lab):
    (lab.shared_dir / "probe-shared.img").write_bytes(b"\0" * 4096)
    (lab.host_dir(1) / "var/lib/libvirt/images/probe-private.img").write_bytes(b"\0" * 4096)
    seen = {}
    for n in HOSTS:
        drv = LibvirtDriver(lab.uri(n))
        try:
            drv.ensure_storage_pool(Settings().storage_pool, Settings().storage_path)
            shared = drv.conn.storagePoolLookupByName(Settings().storage_pool)
            private = drv.conn.storagePoolLookupByName(PRIVATE_POOL)
            for pool in (shared, private):
                pool.refresh(0)
            seen[n] = (set(shared.listVolumes()), set(private.listVolumes()))
        finally:
            drv.close()
    assert all("probe-shared.img" in shared for shared, _ in seen.values())
    assert "probe-private.img" in seen[1][1] and "probe-private.img" not in seen[2][1]


def test_hosts_reach_each_other_and_nothing_else(lab):
    for n in HOSTS:
        assert _in_netns(lab, n, "ip", "route", "show", "default").stdout.strip() == ""
        other = lab.topology.host_address(3 - n)
        probe = _in_netns(lab, n, sys.executable, "-c",
                          f"import socket; socket.create_connection(('{other}', 16509), 5)")
        assert probe.returncode == 0, probe.stderr
    rules = subprocess.run(["nft", "list", "table", "inet", lab.topology.firewall_table],
                           capture_output=True, text=True, check=True).stdout
    for bridge in (lab.topology.mgmt_bridge, lab.topology.guest_bridge):
        assert f'iifname "{bridge}" oifname != "{bridge}" drop' in rules
        assert f'oifname "{bridge}" iifname != "{bridge}" drop' in rules


def test_up_again_changes_nothing_and_restarts_only_what_died(lab):
    before = {s.name: s.pids for s in lab.status()}
    links_before = set(network.links())
    reopened = Lab(lab.root)  # as a later `vpool lab up` would: the topology comes from the state dir
    assert reopened.topology == TOPOLOGY
    assert {s.name: s.pids for s in reopened.up(len(HOSTS))} == before
    assert set(network.links()) == links_before

    dead = Proc.of(before["vt2"]["libvirtd"])
    dead.stop()
    after = {s.name: s for s in Lab(lab.root).up(len(HOSTS))}
    assert after["vt1"].pids == before["vt1"]
    assert after["vt2"].pids["holder"] == before["vt2"]["holder"]
    assert after["vt2"].pids["virtlogd"] == before["vt2"]["virtlogd"]
    assert after["vt2"].pids["libvirtd"] != before["vt2"]["libvirtd"]
    assert after["vt2"].answers


def test_cli_status_json(lab, monkeypatch):
    monkeypatch.setenv("VPOOL_LAB_DIR", str(lab.root))
    result = CliRunner().invoke(lab_cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    hosts = json.loads(result.output)
    assert [(h["name"], h["uri"], h["answers"]) for h in hosts] == [
        ("vt1", "qemu+tcp://10.89.0.11/system", True), ("vt2", "qemu+tcp://10.89.0.12/system", True)]


@pytest.fixture
def served_control_plane(tmp_path, monkeypatch):
    """A real control plane behind a real HTTP server, as `vpool lab up` finds it."""
    import dataclasses

    from tests.serving import cli_env
    from vpool.services.controlplane import ControlPlane

    cp = ControlPlane(dataclasses.replace(Settings(data_dir=tmp_path / "data"), sync_interval_s=60))
    cp.start()
    try:
        with cli_env(cp, monkeypatch):
            yield cp
    finally:
        cp.stop()


def test_up_registers_the_hosts_once(lab, served_control_plane, monkeypatch):
    monkeypatch.setenv("VPOOL_LAB_DIR", str(lab.root))
    for _ in range(2):
        result = CliRunner().invoke(lab_cli, ["up", "--hosts", str(len(HOSTS))])
        assert result.exit_code == 0, result.output
    with served_control_plane.store.session() as s:
        hosts = served_control_plane.hosts.describe_all(s)
    assert [(h["name"], h["uri"], h["state"], h["virt_type"], h["network"], h["host_uuid"]) for h in hosts] == [
        (st.name, st.uri, "up", "qemu", "bridge:vtbr0", st.host_uuid) for st in lab.status()]
    assert result.output.count("host.add") == 0  # the second run found them registered


@pytest.mark.guest
def test_guest_gets_an_address_and_keeps_it_across_a_live_migration(lab):
    from vpool.lab.tiny_image import build_tiny, wait_for_ready

    tiny = build_tiny()
    disk = lab.shared_dir / "vt-guest.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(tiny.base_disk), str(disk)],
                   check=True)
    spec = DomainSpec(name="vt-guest", uuid=str(uuid.uuid4()), cpus=1, memory_mib=128, virt_type="qemu",
                      disk_path=f"{Settings().storage_path}/{disk.name}", network=f"bridge:{TOPOLOGY.guest_bridge}",
                      kernel=str(tiny.kernel), initrd=str(tiny.initrd), cmdline=tiny.cmdline("vt-guest"),
                      console_log="/var/log/libvirt/qemu/vt-guest.console.log")
    src, dst = libvirt.open(lab.uri(1)), libvirt.open(lab.uri(2))
    try:
        dom = src.createXML(domain_xml(spec), 0)
        mac = ET.fromstring(dom.XMLDesc()).find("devices/interface/mac").get("address")
        ready = wait_for_ready(lab.host_dir(1) / "var/log/libvirt/qemu/vt-guest.console.log", 120,
                               alive=lambda: dom.isActive() == 1)
        address = lab.leases()[mac]
        assert ready["ip"] == address and address.startswith(f"{TOPOLOGY.guest_subnet}.")

        def status() -> dict:
            with urllib.request.urlopen(f"http://{address}/cgi-bin/status", timeout=10) as r:
                return dict(w.split("=", 1) for w in r.read().decode().split() if "=" in w)

        before = status()
        assert before["host"] == "vt-guest"
        dom.migrateToURI3(lab.uri(2), {}, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                          | libvirt.VIR_MIGRATE_UNSAFE)
        assert dst.lookupByName("vt-guest").isActive() == 1
        assert "vt-guest" not in [d.name() for d in src.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
        after = status()
        assert after["boots"] == before["boots"] == "1"
        assert int(after["tick"]) >= int(before["tick"])
        assert lab.leases()[mac] == address
    finally:
        src.close()
        dst.close()


def _unreachable_routes() -> set[str]:
    out = subprocess.run(["ip", "-j", "route", "show", "type", "unreachable"], capture_output=True, text=True,
                         check=True).stdout
    return {r["dst"] for r in json.loads(out or "[]")}


def test_down_leaves_nothing_behind(lab):
    """Runs last: the guest (if the test above left one) and every recorded process must go;
    the subnets stay fenced until the next up, or until a down without the fence."""
    recorded = [Proc.of(pid) for s in lab.status() for pid in s.pids.values()]
    recorded.append(lab.dhcp())
    guests = [Proc.of(pid) for n in HOSTS for pid in network.netns_pids(lab.topology, n)]
    subnets = {f"{lab.topology.mgmt_subnet}.0/24", f"{lab.topology.guest_subnet}.0/24"}
    lab.down()
    assert not any(p and p.alive() for p in recorded + guests)
    assert not {lab.topology.host_name(n) for n in HOSTS} & network.netns_list()
    names = set(network.links())
    assert not {lab.topology.mgmt_bridge, lab.topology.guest_bridge} & names
    assert not {veth for n in HOSTS for veth in lab.topology.veths(n)} & names
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert lab.topology.firewall_table not in tables
    assert all(not s.libvirtd and not s.pids for s in lab.status())

    assert subnets <= _unreachable_routes()
    with pytest.raises(OSError):
        socket.create_connection((lab.topology.host_address(1), 16509), timeout=5)
    lab.down(fence=False)
    assert not subnets & _unreachable_routes()


def test_up_lifts_a_fence_it_has_no_record_of(lab, tmp_path):
    """A fence outlives the state that recorded it (another data directory, a wiped
    /var/lib/vpool/lab); up must still lift it, or every host's libvirtd is unreachable."""
    subnets = {f"{lab.topology.mgmt_subnet}.0/24", f"{lab.topology.guest_subnet}.0/24"}
    network.fence(lab.topology)
    fresh = Lab(tmp_path, lab.topology)
    try:
        fresh.up(1)
        assert not subnets & _unreachable_routes()
        socket.create_connection((lab.topology.host_address(1), 16509), timeout=5).close()
    finally:
        fresh.down(fence=False)
