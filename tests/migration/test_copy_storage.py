"""A migration that needs a guest of its own: its disk copied to a host that does not share it
(--copy-storage), after which the other tests' shared-storage moves no longer apply."""

import os
import re
import signal
import subprocess
import time

import libvirt
import pytest
from typer.testing import CliRunner

from tests.core.conftest import eventually
from tests.guests import counters
from tests.serving import cli_env
from vpool.cli.main import app
from vpool.lab.hosts import PRIVATE_POOL

from .conftest import HOSTS, TOPOLOGY, in_phase, other, running_on
from .test_live import SLOW, _end, _libvirtd_pid, _restart, _vm

pytestmark = pytest.mark.guest


def _volume_on(lab, host: str, path: str) -> bool:
    conn = libvirt.open(lab.uri(HOSTS.index(host) + 1))
    try:
        for pool in conn.listAllStoragePools():
            pool.refresh(0)
        conn.storageVolLookupByPath(path)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def test_copy_storage_moves_the_disk_and_the_guest_keeps_writing(lab, pool, guest):
    name, ip = guest
    vm = vm_before = _vm(pool, name)
    dst = other(vm["host"])
    before = counters(ip)
    r = pool.post(f"/vms/{name}/migrate", json={"to": dst, "copy_storage": True})
    assert r.status_code == 409 and f"{dst} already sees the storage it is on" in r.json()["detail"], r.text
    # The lab's hosts share their own pools' storage; each has a private pool too (vpool.lab.hosts).
    task = pool.task(pool.post(f"/vms/{name}/migrate", json={"to": dst, "copy_storage": True,
                                                            "storage_pool": PRIVATE_POOL}), timeout=240)
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (dst, "running") and running_on(lab, vm["uuid"]) == [dst]
    assert task["result"]["destination"] == dst
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    # The guest's disk counter (synced to /dev/vda every second) goes on from where it was.
    assert eventually(lambda: counters(ip)["disk"] > before["disk"], timeout=30, interval=0.5)
    migration = pool.get(f"/vms/{name}/migrations").json()["items"][0]
    assert migration["state"] == "succeeded" and migration["copy_storage"] is True
    assert migration["undecided_disks"] == {}  # the source's copy went with the move
    assert not _volume_on(lab, other(dst), vm_before["disk_path"])
    # The disk is now in the destination's own pool: no other host sees it, and vpool says so.
    shared = {h["storage"] for h in pool.get("/hosts").json()["items"] if h["name"] in HOSTS}
    assert len(shared) == 1 and vm["storage"] not in shared | {None}, (shared, vm["storage"])
    r = pool.post(f"/vms/{name}/migrate", json={})
    assert r.status_code == 409 and "cannot see its disk" in r.json()["detail"], r.text
    assert name in pool.get("/plans/ha").json()["unplaced"]  # if its host fails, it cannot restart elsewhere


def test_cut_link_during_the_disk_copy_ends_the_task_in_bounded_time(lab, pool, guest, monkeypatch):
    """The disk copy's NBD connection stalls when the destination's link goes down, and qemu
    cannot cancel it until TCP gives up (many minutes): the task still fails within the stall
    timeout twice over, saying so, and the guest never leaves its source."""
    name, ip = guest
    vm = _vm(pool, name)
    src, dst = vm["host"], other(vm["host"])
    before = counters(ip)
    stall = pool.get("/migrations/policy").json()["stall_timeout_s"]
    assert pool.patch("/migrations/policy", json={"stall_timeout_s": 10}).status_code == 200
    link = TOPOLOGY.veths(HOSTS.index(dst) + 1)[0]  # the destination's management link, root side
    try:
        r = pool.post(f"/vms/{name}/migrate", json={"to": dst, "copy_storage": True, "storage_pool": PRIVATE_POOL,
                                                    "bandwidth_mib_s": SLOW})
        assert r.status_code == 202, r.text
        copying = in_phase(pool, r.json()["id"], lambda message: re.search(r"disk [1-9]\d*/", message), timeout=90)
        assert copying and copying["state"] == "running", copying
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        cut = time.monotonic()
        try:
            task = _end(pool, r.json()["id"], timeout=240)
            assert task, "the task had not ended 240 s after the cut"
            print(f"\ncopy-storage migration failed {time.monotonic() - cut:.1f} s after the cut: {task['error']}")
            assert task["state"] == "failed" and "no data moved" in task["error"], task
            assert (_vm(pool, name)["host"], _vm(pool, name)["state"]) == (src, "running")
            # the copy on the unreachable destination could not be removed: it is recorded
            leftover = pool.get(f"/vms/{name}/migrations").json()["items"][0]["leftover_disk"]
            assert leftover and leftover.endswith(f"vm-{name}.qcow2"), leftover
            with cli_env(pool.cp, monkeypatch):
                r = CliRunner().invoke(app, ["vm", "migrations", name])
            assert r.exit_code == 0 and f"left {leftover} on a host out of reach" in " ".join(r.stdout.split())
        finally:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
    finally:
        pool.patch("/migrations/policy", json={"stall_timeout_s": stall})
    assert eventually(lambda: pool.get(f"/hosts/{dst}").json()["state"] == "up", timeout=60, interval=0.5)
    assert eventually(lambda: running_on(lab, vm["uuid"]) == [src], timeout=120, interval=0.5)
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    assert pool.get(f"/vms/{name}/migrations").json()["items"][0]["state"] == "failed"
    # ...and it goes once the destination is back
    assert eventually(lambda: pool.get(f"/vms/{name}/migrations").json()["items"][0]["leftover_disk"] is None,
                      timeout=60, interval=0.5)
    assert not _volume_on(lab, dst, leftover)


def test_source_libvirtd_killed_during_the_disk_copy_leaves_one_disk(lab, pool, guest, monkeypatch):
    """With the source's libvirtd gone mid-copy, the migration cannot tell where the VM is, so
    both copies of its disk stay at first; once the source is back and the VM found running on
    one host, the copy on the other goes, and the VM's disk is the one it runs on."""
    name, ip = guest
    vm = _vm(pool, name)
    src, dst = vm["host"], other(vm["host"])
    before = counters(ip)
    r = pool.post(f"/vms/{name}/migrate", json={"to": dst, "copy_storage": True, "storage_pool": PRIVATE_POOL,
                                                "bandwidth_mib_s": SLOW})
    assert r.status_code == 202, r.text
    copying = in_phase(pool, r.json()["id"], lambda message: re.search(r"disk [1-9]\d*/", message), timeout=90)
    assert copying and copying["state"] == "running", copying
    os.kill(_libvirtd_pid(lab, src), signal.SIGKILL)
    try:
        task = _end(pool, r.json()["id"], timeout=240)
        assert task and task["state"] == "failed" and "cannot tell where it runs" in task["error"], task
        copies = pool.get(f"/vms/{name}/migrations").json()["items"][0]["undecided_disks"]
        assert set(copies) == {src, dst} and copies[src] == vm["disk_path"], copies
        with cli_env(pool.cp, monkeypatch):
            r = CliRunner().invoke(app, ["vm", "migrations", name])
        assert r.exit_code == 0 and "keeps both copies of the disk" in " ".join(r.stdout.split()), r.output
    finally:
        _restart(lab, pool, src)

    def settled():
        hosts, now = running_on(lab, vm["uuid"]), _vm(pool, name)
        return (len(hosts) == 1 and now["host"] == hosts[0] and now["state"] == "running"
                and not pool.get(f"/vms/{name}/migrations").json()["items"][0]["undecided_disks"] and now)

    now = eventually(settled, timeout=120, interval=1)
    assert now, (running_on(lab, vm["uuid"]), _vm(pool, name))
    gone = other(now["host"])
    assert now["disk_path"] == copies[now["host"]] and _volume_on(lab, now["host"], copies[now["host"]])
    assert not _volume_on(lab, gone, copies[gone])
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
