"""What libvirt does not carry in a migration, vpool does: a VM's snapshots (libvirt 9.0 refuses to
migrate a domain that has any) and its backup checkpoints (dropped, so the next backup was a full
one). A copy-storage move, which would lose them, is refused and changes nothing."""

import hashlib
import subprocess

import pytest

from vpool.hypervisor.libvirt_migration import LiveMigration
from vpool.model.errors import HypervisorError
from tests.core.conftest import eventually
from tests.guests import counters

from .conftest import other, running_on
from .test_live import _vm

pytestmark = pytest.mark.guest


def _digest(lab, path: str, tmp_path) -> str:
    """SHA-256 of the disk as the guest sees it, read where the lab hosts see their storage."""
    raw = tmp_path / "disk.raw"
    subprocess.run(lab._enter(1) + ["qemu-img", "convert", "-U", "-O", "raw", path, str(raw)], check=True)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    raw.unlink()
    return digest


def _snapshots(pool, name: str) -> list[tuple[str, bool]]:
    return [(s["name"], s["current"]) for s in pool.get(f"/vms/{name}/snapshots").json()["snapshots"]]


def test_snapshots_and_backup_checkpoints_go_with_the_vm(lab, pool, guest, tmp_path):
    name, ip = guest
    src = _vm(pool, name)["host"]
    dst = other(src)
    before = counters(ip)
    pool.task(pool.post(f"/vms/{name}/snapshots", json={"name": "m1", "memory": True}), timeout=120)
    full = pool.task(pool.post("/backups", json={"vm": name}), timeout=120)["result"]
    assert full["kind"] == "full"

    task = pool.task(pool.post(f"/vms/{name}/migrate", json={"to": dst}), timeout=120)
    assert "note" not in task["result"], task["result"]
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (dst, "running") and running_on(lab, vm["uuid"]) == [dst]
    assert _snapshots(pool, name) == [("m1", True)]

    # The guest writes on at its new host; the backup taken there holds only what changed since
    # the full one, and the chain restores to the disk as it was.
    start = counters(ip)["disk"]
    assert eventually(lambda: counters(ip)["disk"] >= start + 3, timeout=60)
    pool.task(pool.post(f"/vms/{name}/suspend"))
    inc = pool.task(pool.post("/backups", json={"vm": name, "incremental": True}), timeout=120)["result"]
    assert inc["kind"] == "incremental" and inc["chain"] == full["chain"], inc
    assert inc["size_bytes"] < full["size_bytes"] / 4
    pool.task(pool.post(f"/vms/{name}/stop", json={"force": True}))
    source = _digest(lab, vm["disk_path"], tmp_path)
    restored = pool.task(pool.post("/backups/restore", json={"vm": name, "as": "mgcopy", "start": False}),
                         timeout=180)["result"]
    try:
        assert restored["chain"] == [full["backup"], inc["backup"]]
        assert _digest(lab, _vm(pool, "mgcopy")["disk_path"], tmp_path) == source
    finally:
        pool.task(pool.delete("/vms/mgcopy"), timeout=120)

    # The memory snapshot taken on the first host brings the guest back on the second.
    pool.task(pool.post(f"/vms/{name}/snapshots/m1/revert"), timeout=120)
    assert _vm(pool, name)["state"] == "running"
    assert counters(ip)["boots"] == before["boots"]


def test_a_vm_on_an_overlay_migrates_and_the_overlay_merges_on_its_new_host(lab, pool, guest, tmp_path):
    name, ip = guest
    there = other(_vm(pool, name)["host"])
    pool.task(pool.post(f"/vms/{name}/snapshots", json={"name": "d1"}), timeout=120)  # an external overlay
    pool.task(pool.post(f"/vms/{name}/migrate", json={"to": there}), timeout=120)
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (there, "running")
    assert _snapshots(pool, name) == [("m1", False), ("d1", True)]
    [image] = lab.shared_dir.glob("img-tiny-*.qcow2")
    image_digest = hashlib.sha256(image.read_bytes()).hexdigest()
    written = counters(ip)["disk"]
    pool.task(pool.delete(f"/vms/{name}/snapshots/d1"), timeout=120)  # merged into the VM's own disk
    assert _snapshots(pool, name) == [("m1", True)]
    assert not (lab.shared_dir / f"vm-{name}@d1.qcow2").exists()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == image_digest
    assert eventually(lambda: counters(ip)["disk"] > written, timeout=30)  # the guest writes on


def test_a_copy_storage_migration_that_would_lose_snapshots_is_refused_and_changes_nothing(lab, pool, guest):
    name, _ip = guest
    vm = _vm(pool, name)
    pool.task(pool.post(f"/vms/{name}/snapshots", json={"name": "c1", "memory": True}), timeout=120)
    snapshots = _snapshots(pool, name)
    r = pool.post(f"/vms/{name}/migrate", json={"to": other(vm["host"]), "copy_storage": True})
    assert r.status_code == 409 and "copy-storage migration would lose" in r.json()["detail"], r.text
    assert _snapshots(pool, name) == snapshots
    after = _vm(pool, name)
    assert (after["host"], after["state"]) == (vm["host"], "running") and running_on(lab, vm["uuid"]) == [vm["host"]]
    assert pool.get("/migrations", params={"state": "queued"}).json()["total"] == 0


def test_a_migration_that_fails_puts_the_snapshots_back_on_the_source(lab, pool, guest, monkeypatch):
    name, _ip = guest
    vm = _vm(pool, name)
    pool.task(pool.post(f"/vms/{name}/snapshots", json={"name": "f1", "memory": True}), timeout=120)
    snapshots = _snapshots(pool, name)

    def broken(self, max_downtime_ms=None):
        raise HypervisorError("the destination went away")

    monkeypatch.setattr(LiveMigration, "start", broken)
    r = pool.post(f"/vms/{name}/migrate", json={"to": other(vm["host"])})
    task = pool.task(r, expect="failed")
    assert "the destination went away" in task["error"] and "snapshots" not in task["error"], task["error"]
    assert _snapshots(pool, name) == snapshots
    assert (_vm(pool, name)["host"], _vm(pool, name)["state"]) == (vm["host"], "running")
