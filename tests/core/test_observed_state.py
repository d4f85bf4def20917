"""The store follows what the hypervisor does, and a restart leaves nothing half-made."""

import uuid as uuidlib
from datetime import timedelta

import libvirt
import pytest
from sqlalchemy import select

from vpool.hypervisor.domain_xml import DomainSpec, domain_xml
from vpool.services.controlplane import ControlPlane
from vpool.services.reconciler import GONE, _news
from vpool.store.tables import VM, Task, utcnow

from .conftest import Api, eventually


def test_state_changes_made_outside_vpool_show_up(api, tmp_path):
    api.add_sim_host(tmp_path, "h1")
    api.task(api.post("/vms", json={"name": "w", "cpus": 1, "memory": "256M", "disk": "1G"}))
    conn = api.cp.connections.driver(api.get("/hosts/h1").json()["id"]).conn
    conn.lookupByName("w").destroy()
    assert eventually(lambda: api.get("/vms/w").json()["state"] == "shutoff", timeout=10)
    conn.lookupByName("w").create()
    assert eventually(lambda: api.get("/vms/w").json()["state"] == "running", timeout=10)
    conn.lookupByName("w").destroy()
    conn.lookupByName("w").undefine()
    assert eventually(lambda: api.get("/vms/w").json()["state"] == "missing", timeout=10)


def test_a_vm_resized_behind_vpools_back_counts_at_its_new_size_once_it_starts(api, tmp_path):
    api.add_sim_host(tmp_path, "h1")
    api.task(api.post("/vms", json={"name": "w", "cpus": 1, "memory": "256M", "disk": "1G", "start": False}))
    conn = api.cp.connections.driver(api.get("/hosts/h1").json()["id"]).conn
    dom = conn.lookupByName("w")
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    dom.setVcpusFlags(3, config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)   # what `virsh setvcpus --config` does
    dom.setVcpusFlags(3, config)
    dom.setMemoryFlags(512 * 1024, config | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
    dom.create()
    assert eventually(lambda: api.get("/vms/w").json()["state"] == "running", timeout=10)
    vm = api.get("/vms/w").json()
    assert (vm["cpus"], vm["memory_mib"]) == (3, 512)
    assert api.get("/hosts/h1").json()["capacity"]["cpus"]["allocated"] == 3


def test_a_running_vm_grown_behind_vpools_back_counts_at_its_new_size_at_its_next_event(api, tmp_path):
    api.add_sim_host(tmp_path, "h1")
    api.task(api.post("/vms", json={"name": "w", "cpus": 1, "memory": "256M", "disk": "1G"}))
    host_id = api.get("/hosts/h1").json()["id"]
    dom = api.cp.connections.driver(host_id).conn.lookupByName("w")
    dom.setVcpusFlags(2, libvirt.VIR_DOMAIN_AFFECT_LIVE)               # `virsh setvcpus w 2 --live`: no event
    api.cp.reconciler.sync_domain(host_id, dom.UUIDString())         # what a device event runs; the state is the same
    assert api.get("/vms/w").json()["cpus"] == 2
    assert api.get("/hosts/h1").json()["capacity"]["cpus"]["allocated"] == 2


def test_a_vcpu_plugged_behind_vpools_back_counts_within_one_collection_interval(api, tmp_path):
    """No libvirt event says so; the collector's bulk read, which it makes every interval
    anyway, carries each running domain's size."""
    api.add_sim_host(tmp_path, "h1")
    api.task(api.post("/vms", json={"name": "w", "cpus": 1, "memory": "256M", "disk": "1G"}))
    host_id = api.get("/hosts/h1").json()["id"]
    dom = api.cp.connections.driver(host_id).conn.lookupByName("w")
    dom.setVcpusFlags(3, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    api.cp.telemetry.collect_once()
    assert (api.get("/vms/w").json()["cpus"], api.get("/hosts/h1").json()["capacity"]["cpus"]["allocated"]) == (3, 3)

    uuid = dom.UUIDString()
    before_a_write = utcnow() - timedelta(seconds=5)  # a reading older than the row's last write loses
    assert api.cp.reconciler.sync_sizes(host_id, before_a_write, {uuid: (4, 512)}) == 0
    assert api.cp.reconciler.sync_sizes(host_id, utcnow(), {uuid: (3, 256)}) == 0  # no change, no write
    other = api.add_sim_host(tmp_path, "h2")["id"]                   # the same domain read on another host is a copy
    assert api.cp.reconciler.sync_sizes(other, utcnow(), {uuid: (4, 512)}) == 0
    api.task(api.post("/vms/w/stop", json={"force": True}))
    assert api.cp.reconciler.sync_sizes(host_id, utcnow(), {uuid: (4, 512)}) == 0  # only a running VM has a live size
    assert api.get("/vms/w").json()["cpus"] == 3


def test_restart_fails_running_tasks_and_removes_half_made_vms(settings):
    first = ControlPlane(settings)
    first.start()
    api = Api(first)
    # test:///default keeps its state across connections in one process, like a real libvirtd.
    api.task(api.post("/hosts", json={"uri": "test:///default", "name": "h1"}))
    host_id = api.get("/hosts/h1").json()["id"]
    drv = first.connections.driver(host_id)
    # What a create looks like when the process dies after define: a booked VM, a domain, a disk.
    vm_uuid = str(uuidlib.uuid4())
    disk = drv.create_disk("default-pool", "vm-half.qcow2", 1)
    drv.define(domain_xml(DomainSpec("half", vm_uuid, 1, 256, "test", disk, "network:default")))
    with first.store.session() as s:
        s.add(VM(name="half", uuid=vm_uuid, host_id=host_id, state="creating", cpus=1, memory_mib=256, disk_gib=1,
                 disk_path=disk))
        s.add(Task(kind="vm.create", target="half", state="running", params={}))
        s.commit()
    first.stop()

    second = ControlPlane(settings)
    second.start()
    try:
        with second.store.session() as s:
            task = s.scalar(select(Task).where(Task.target == "half"))
            assert task.state == "failed" and "restarted" in task.error
            assert s.scalar(select(VM).where(VM.name == "half")) is None
        drv = second.connections.driver(host_id)
        assert "half" not in [d.name for d in drv.domains()]
        assert drv.volume_path("default-pool", "vm-half.qcow2") is None
    finally:
        second.stop()


HERE, THERE = 1, 2


@pytest.mark.parametrize("observed, stored, vm_host, ownership, news", [
    ("shutoff", "running", HERE, "managed", "shutoff"),      # stopped outside vpool
    ("running", "running", HERE, "managed", None),           # nothing new
    ("paused", "running", THERE, "managed", None),           # an incoming migration's copy is not the VM yet
    ("running", "running", THERE, "managed", "running"),     # it arrived: the VM is here now
    ("shutoff", "missing", THERE, "managed", "shutoff"),     # its host lost it, this one has it
    (None, "running", HERE, "managed", "missing"),           # gone from its host
    (None, "missing", HERE, "managed", None),                # already known gone
    (None, "running", HERE, "unmanaged", GONE),              # a foreign domain that went: its row goes
    (None, "running", THERE, "managed", None),               # another host's VM is no news here
])
def test_what_a_hosts_report_means_for_a_vm_row(observed, stored, vm_host, ownership, news):
    assert _news(HERE, observed, stored, vm_host, ownership) == news


def test_a_foreign_domains_disks_are_its_own_disks_not_its_cdroms():
    from vpool.hypervisor.domain_xml import domain_disk_paths

    xml = """<domain><devices>
      <disk type='file' device='cdrom'><source file='/iso/install.iso'/></disk>
      <disk type='file' device='disk'><source file='/var/lib/libvirt/images/a.qcow2'/></disk>
      <disk type='file'><source file='/var/lib/libvirt/images/b.raw'/></disk>
      <disk type='network' device='disk'><source protocol='rbd' name='pool/c'/></disk>
    </devices></domain>"""
    assert domain_disk_paths(xml) == ["/var/lib/libvirt/images/a.qcow2", "/var/lib/libvirt/images/b.raw"]
