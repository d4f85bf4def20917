"""Snapshots of a real tiny guest: memory snapshots go back in time, checkpoints never leave a
VM shut off, disk-only overlays merge on delete, and bad requests change nothing."""

import glob
import hashlib
import os
from pathlib import Path

import pytest

from vpool.hypervisor import protection_xml as px

from .conftest import counters, domain, eventually, wait_up

pytestmark = pytest.mark.guest


def names(api, vm):
    return [s["name"] for s in api.get(f"/vms/{vm}/snapshots").json()["snapshots"]]


def test_memory_snapshot_revert_resumes_at_the_captured_moment(guest_api, vms):
    api = guest_api
    vms("snapm")
    ip = wait_up(api, "snapm")
    at_snapshot = counters(ip)
    api.task(api.post("/vms/snapm/snapshots", json={"name": "s1", "memory": True, "description": "before"}))
    later = eventually(lambda: (c := counters(ip))["tick"] >= at_snapshot["tick"] + 5 and c, timeout=60)
    assert later

    result = api.task(api.post("/vms/snapm/snapshots/s1/revert"), timeout=120)["result"]
    assert result["state"] == "running" and result["checkpoints_dropped"] == []
    back = counters(ip)
    assert at_snapshot["tick"] <= back["tick"] < later["tick"]  # the RAM counter went back
    assert back["boots"] == at_snapshot["boots"]  # resumed, not rebooted
    tree = api.get("/vms/snapm/snapshots").json()
    assert tree["current"] == "s1"
    assert tree["snapshots"][0] | {"created": 0} == {
        "name": "s1", "parent": None, "depth": 0, "current": True, "state": "running", "kind": "disk + memory",
        "created": 0, "description": "before", "children": []}


def test_a_revert_brings_back_the_size_the_vm_had_and_its_host_counts_it(guest_api, vms):
    """libvirt restores a snapshot's definition, vCPUs and memory included: a VM resized since
    is recorded at the size it runs with again, not the one it was resized to."""
    api = guest_api
    vms("snapr", start=False)
    api.task(api.post("/vms/snapr/snapshots", json={"name": "small"}))
    api.task(api.post("/vms/snapr/resize", json={"cpus": 2, "memory": "384M"}))
    result = api.task(api.post("/vms/snapr/snapshots/small/revert"))["result"]
    assert result["note"] == "the snapshot's size came back with it: 1 vCPU / 256 MiB", result
    vm = api.get("/vms/snapr").json()
    assert (vm["cpus"], vm["memory_mib"], vm["state"]) == (1, 256, "shutoff")
    conn, dom = domain("snapr")
    assert dom.info()[1:4:2] == [256 * 1024, 1]
    conn.close()


def test_revert_with_backup_checkpoints_drops_them_and_keeps_the_vm_running(guest_api, vms):
    api = guest_api
    vms("snapck")
    ip = wait_up(api, "snapck")
    api.task(api.post("/vms/snapck/snapshots", json={"name": "m1", "memory": True}))
    api.task(api.post("/backups", json={"vm": "snapck"}))  # leaves a checkpoint: qemu would refuse the revert
    conn, dom = domain("snapck")
    assert [c.getName() for c in dom.listAllCheckpoints()]

    result = api.task(api.post("/vms/snapck/snapshots/m1/revert"), timeout=120)["result"]
    assert result["state"] == "running" and len(result["checkpoints_dropped"]) == 1
    assert "full" in result["note"]
    assert dom.listAllCheckpoints() == [] and api.get("/vms/snapck").json()["state"] == "running"
    assert counters(ip)["tick"] >= 0
    conn.close()

    # the disk went back in time, so the bitmaps are gone and an incremental becomes a full backup
    after = api.task(api.post("/backups", json={"vm": "snapck", "incremental": True}))["result"]
    assert after["kind"] == "full" and "snapshot revert" in after["note"]


def test_disk_only_snapshot_of_a_running_vm_is_an_overlay_that_merges_on_delete(guest_api, vms):
    api = guest_api
    vms("snapx")
    ip = wait_up(api, "snapx")
    api.task(api.post("/vms/snapx/snapshots", json={"name": "m1", "memory": True}))
    r = api.task(api.post("/vms/snapx/snapshots", json={"name": "d1"}))
    assert r["result"]["kind"] == "disk (external overlay)"
    overlay = "/var/lib/vpool/bk-test-images/vm-snapx@d1.qcow2"
    assert os.path.exists(overlay)
    assert [(s["name"], s["depth"], s["current"]) for s in api.get("/vms/snapx/snapshots").json()["snapshots"]] == [
        ("m1", 0, False), ("d1", 1, True)]

    # libvirt 9.0 cannot revert to it, nor take an internal snapshot above it: refused, nothing changed
    r = api.post("/vms/snapx/snapshots/d1/revert")
    assert r.status_code == 409 and "9.7" in r.json()["detail"]
    r = api.post("/vms/snapx/snapshots", json={"name": "m2", "memory": True})
    assert r.status_code == 409 and "overlay" in r.json()["detail"]
    assert names(api, "snapx") == ["m1", "d1"]

    before = counters(ip)["disk"]
    [image] = glob.glob(os.path.join(os.path.dirname(overlay), "img-tiny-*.qcow2"))
    image_digest = hashlib.sha256(Path(image).read_bytes()).hexdigest()
    # its parent is internal, which libvirt 9.0 cannot delete through: vpool merges it by hand,
    # into the VM's own disk, never into the image that every clone of it shares
    api.task(api.delete("/vms/snapx/snapshots/d1"), timeout=120)
    assert not os.path.exists(overlay)
    conn, dom = domain("snapx")
    assert px.domain_disks(dom.XMLDesc(0)) == {"vda": api.get("/vms/snapx").json()["disk_path"]}
    conn.close()
    assert hashlib.sha256(Path(image).read_bytes()).hexdigest() == image_digest
    assert names(api, "snapx") == ["m1"]
    assert eventually(lambda: counters(ip)["disk"] > before + 2, timeout=60)  # the guest keeps writing
    api.task(api.post("/vms/snapx/snapshots/m1/revert"), timeout=120)
    assert api.get("/vms/snapx").json()["state"] == "running"


def test_bad_snapshot_requests_are_refused_and_change_nothing(guest_api, vms):
    api = guest_api
    vms("snapbad", start=False)
    assert api.post("/vms/snapbad/snapshots", json={"name": "m", "memory": True}).status_code == 422
    api.task(api.post("/vms/snapbad/snapshots", json={"name": "cold"}))
    assert api.get("/vms/snapbad/snapshots").json()["snapshots"][0]["kind"] == "disk"
    assert api.post("/vms/snapbad/snapshots", json={"name": "cold"}).status_code == 409
    assert api.post("/vms/snapbad/snapshots", json={"name": "a b"}).status_code == 422
    r = api.post("/vms/snapbad/snapshots/nope/revert")
    assert r.status_code == 404 and "cold" in r.json()["detail"]
    assert api.delete("/vms/snapbad/snapshots/nope").status_code == 404
    assert api.get("/vms/nosuchvm/snapshots").status_code == 404

    os.unlink("/var/lib/vpool/bk-test-images/vm-snapbad.qcow2")  # the disk is lost behind vpool's back
    r = api.post("/vms/snapbad/snapshots/cold/revert")
    assert r.status_code == 409 and "no longer exists" in r.json()["detail"]
    assert names(api, "snapbad") == ["cold"] and api.get("/vms/snapbad").json()["state"] == "shutoff"
