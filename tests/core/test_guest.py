"""Real guests: the tiny image booted by QEMU (TCG here) on this machine's libvirtd, through the API."""

import os
import subprocess
import time

import libvirt
import pytest
from typer.testing import CliRunner

from vpool.hypervisor import localhost
from vpool.hypervisor.console import SerialConsole
from vpool.hypervisor.domain_xml import dimm_xml
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.placement.request import count

from vpool.cli.main import app

from ..guests import counters, http, local_control_plane, status
from ..serving import cli_env
from .conftest import eventually

pytestmark = pytest.mark.guest


GUESTS = ("guest1", "guest2")


@pytest.fixture(scope="module")
def local_api(tmp_path_factory):
    with local_control_plane(tmp_path_factory, "vpool-test", "/var/lib/vpool/test-images", GUESTS) as api:
        yield api


def test_tiny_guest_life_cycle(local_api, monkeypatch):
    api = local_api
    # 3.5 GiB: the smallest VM whose guest pays nothing for memory room (model.hotplug); TCG touches little of it
    api.task(api.post("/vms", json={"name": "guest1", "image": "tiny", "memory": "3584M", "disk": "1G"}))
    vm = api.get("/vms/guest1").json()
    assert vm["state"] == "running" and vm["host"] == "local"
    ip = eventually(lambda: api.get("/vms/guest1").json()["ip"], timeout=60, interval=0.5)
    assert ip, "the guest never got an address"
    assert eventually(lambda: http(ip) == "guest1", timeout=90, interval=0.5)
    assert counters(ip)["boots"] == 1
    assert status(ip)["disk_sectors"] == str(2**30 // 512)
    grown = api.task(api.post("/vms/guest1/resize", json={"disk": "2G"}))["result"]
    assert "the guest sees 2 GiB now" in grown["note"]
    assert eventually(lambda: status(ip)["disk_sectors"] == str(2 * 2**30 // 512), timeout=30)  # live, by qemu
    # vCPUs and memory are plugged into the running guest, which onlines them (the tiny guest by
    # itself, a distribution by udev's rules)
    memtotal = int(status(ip)["memtotal_kb"])
    host = api.get("/hosts/local").json()
    if host["virt_type"] == "qemu":  # TCG: a vCPU plugged live can crash the guest (model.hotplug)
        r = api.post("/vms/guest1/resize", json={"cpus": 2})
        assert r.status_code == 409 and "runs under QEMU's emulator (TCG)" in r.json()["detail"], r.text
        cpus, body = 1, {"memory": "3840M"}
    else:
        cpus, body = 2, {"cpus": 2, "memory": "3840M"}
    plugged = api.task(api.post("/vms/guest1/resize", json=body))["result"]
    assert f"the guest has {count(cpus, 'vCPU')} and 3840 MiB now" in plugged["note"]
    assert eventually(lambda: status(ip)["ncpu"] == str(cpus), timeout=30)
    assert eventually(lambda: int(status(ip)["memtotal_kb"]) - memtotal == 256 * 1024, timeout=30)
    assert counters(ip)["boots"] == 1  # without a restart
    r = api.post("/vms/guest1/resize", json={"memory": "3584M"})
    assert r.status_code == 409 and "cannot give vCPUs or memory back" in r.json()["detail"]
    drv = api.cp.connections.driver(host["id"])
    assert drv.size(vm["uuid"]) == (cpus, 3840)  # what the reconciler reads, the DIMM included
    both = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    drv.conn.lookupByUUIDString(vm["uuid"]).attachDeviceFlags(dimm_xml(128), both)  # behind vpool's back, as virsh
    assert eventually(lambda: api.get("/vms/guest1").json()["memory_mib"] == 3968, timeout=10)  # its device event
    if host["virt_type"] != "qemu":
        drv.conn.lookupByUUIDString(vm["uuid"]).setVcpusFlags(3, both)  # `virsh setvcpus --live --config`: no event
        api.cp.telemetry.collect_once()  # the interval's bulk statistics carry the size
        cpus = 3
    assert api.get("/vms/guest1").json()["cpus"] == cpus

    stop = api.task(api.post("/vms/guest1/stop", json={"timeout": 60}), timeout=90)
    assert stop["result"] == {"state": "shutoff", "how": "ACPI shutdown"}
    assert drv.size(vm["uuid"]) == (cpus, 3968)  # the definition kept what was plugged
    api.task(api.post("/vms/guest1/resize", json={"cpus": 3, "memory": "320M", "disk": "3G"}))
    assert "model='dimm'" not in drv.conn.lookupByUUIDString(vm["uuid"]).XMLDesc(0)  # folded, slots free
    api.task(api.post("/vms/guest1/start"))
    ip = eventually(lambda: api.get("/vms/guest1").json()["ip"], timeout=60, interval=0.5)
    assert eventually(lambda: http(ip) == "guest1", timeout=90, interval=0.5)
    assert counters(ip)["boots"] == 2  # the overlay kept what the guest wrote
    assert status(ip)["ncpu"] == "3"  # resized while it was off
    assert status(ip)["disk_sectors"] == str(3 * 2**30 // 512)  # grown by libvirt's storage driver

    # its serial console: a shell on ttyS0 answers through the API's WebSocket and the CLI
    with cli_env(api.cp, monkeypatch):
        with api.client.websocket_connect("/vms/guest1/console", headers=api.headers) as first:
            assert first.receive_json() == {"console": "guest1"}
            taken = CliRunner().invoke(app, ["vm", "console", "guest1"], input=b"echo vpool-$((6*7))\n")
            assert taken.exit_code == 1 and "--force takes it over" in taken.stderr, taken.output
            r = CliRunner().invoke(app, ["vm", "console", "guest1", "--force"], input=b"\necho vpool-$((6*7))\n")
            assert r.exit_code == 0 and "vpool-42" in r.stdout, r.output
            while isinstance(frame := first.receive(), dict) and "text" not in frame:
                pass  # the guest's bytes until the session ends, taken over
            assert "another session took it" in frame["text"], frame
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        SerialConsole(localhost.LOCAL_URI, vm["uuid"], "guest1", True, lambda data: None, lambda why: None).close()
    assert len(os.listdir("/proc/self/fd")) - before < 5  # each session closes its connection (2 fds) at once

    disk = drv.volume_path("vpool-test", "vm-guest1.qcow2")
    assert disk
    info = subprocess.run(["qemu-img", "info", "-U", disk], capture_output=True, text=True).stdout
    assert "backing file: /var/lib/vpool/test-images/img-tiny-" in info  # a linked clone, not a copy
    assert "virtual size: 3 GiB" in info

    api.task(api.delete("/vms/guest1"))
    conn = libvirt.open(localhost.LOCAL_URI)
    try:
        assert "guest1" not in [d.name() for d in conn.listAllDomains()]
        assert "vm-guest1.qcow2" not in conn.storagePoolLookupByName("vpool-test").listVolumes()
    finally:
        conn.close()


def test_virsh_changes_show_within_seconds(local_api):
    api = local_api
    api.task(api.post("/vms", json={"name": "guest2", "image": "tiny", "memory": "256M", "disk": "1G"}))
    conn = libvirt.open(localhost.LOCAL_URI)
    try:
        started = time.monotonic()
        conn.lookupByName("guest2").destroy()
        assert eventually(lambda: api.get("/vms/guest2").json()["state"] == "shutoff", timeout=10)
        assert time.monotonic() - started < 10
        conn.lookupByName("guest2").create()
        assert eventually(lambda: api.get("/vms/guest2").json()["state"] == "running", timeout=10)
    finally:
        conn.close()
    api.task(api.delete("/vms/guest2"))


def test_a_storage_pool_whose_directory_is_gone_is_built_again(local_api, tmp_path):
    """libvirt keeps a pool's definition after its directory is removed (by hand, or a tmpfs
    after a reboot); starting such a pool, or refreshing it while active, fails."""
    path = tmp_path / "pool"
    drv = LibvirtDriver(localhost.LOCAL_URI)
    try:
        drv.ensure_storage_pool("vpool-test-gone", str(path))
        pool = drv.conn.storagePoolLookupByName("vpool-test-gone")
        path.rmdir()
        assert drv.ensure_storage_pool("vpool-test-gone", str(path))["name"] == "vpool-test-gone"
        assert path.is_dir() and pool.isActive()
        pool.destroy()
        path.rmdir()
        drv.ensure_storage_pool("vpool-test-gone", str(path))
        assert path.is_dir() and pool.isActive()
    finally:
        pool = drv.conn.storagePoolLookupByName("vpool-test-gone")
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        drv.close()


def test_image_import_checks_the_file(local_api, tmp_path):
    api = local_api
    good = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(good), "64M"], check=True)
    r = api.put("/images/small", content=good.read_bytes())
    assert r.status_code == 201 and r.json()["format"] == "qcow2"
    assert r.json()["virtual_size_bytes"] == 64 * 2**20
    assert api.put("/images/small", content=good.read_bytes()).status_code == 409

    chained = tmp_path / "chained.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(good), "-F", "qcow2", str(chained)], check=True)
    r = api.put("/images/chained", content=chained.read_bytes())
    assert r.status_code == 422 and "backing file" in r.json()["detail"]
    r = api.put("/images/rawdisk", content=b"\0" * 65536)  # anything that is not a known format is raw
    assert r.status_code == 201 and r.json()["format"] == "raw"
    assert api.put("/images/a%20b", content=b"x").status_code == 422
    assert api.delete("/images/small").status_code == 204
    assert api.get("/images/small").status_code == 404
