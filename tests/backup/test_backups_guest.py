"""Backups of a real tiny guest: a full+incremental chain restores byte-identical, a backup that
breaks half-way is never a restore point, verify finds damage, and bad restores change nothing."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.services.repository import DirectoryRepository

from .conftest import counters, disk_digest, domain, eventually, volume_path, wait_up

pytestmark = pytest.mark.guest


def streamed(monkeypatch):
    """Backups take libvirt's download stream, as from a remote host, not the local rename."""
    monkeypatch.setattr(ProtectionOps, "local_file", lambda self, path: None)


def test_full_and_incremental_chain_restores_byte_identical(guest_api, vms, monkeypatch):
    """The full and the last point are renamed into the repository (the host is this machine),
    the middle one streamed through libvirtd as from a remote host: the chain restores alike."""
    api = guest_api
    adopted, adopt = [], DirectoryRepository.adopt
    monkeypatch.setattr(DirectoryRepository, "adopt", lambda self, key, *a: adopted.append(key) or adopt(self, key, *a))
    vms("bsrc")
    ip = wait_up(api, "bsrc")
    full = api.task(api.post("/backups", json={"vm": "bsrc"}))["result"]
    assert full["kind"] == "full"
    start = counters(ip)["disk"]
    assert eventually(lambda: counters(ip)["disk"] >= start + 3, timeout=60)  # the guest writes its disk
    with monkeypatch.context() as m:
        streamed(m)
        inc1 = api.task(api.post("/backups", json={"vm": "bsrc", "incremental": True}))["result"]
    assert inc1["kind"] == "incremental" and inc1["chain"] == full["chain"]
    assert inc1["size_bytes"] < full["size_bytes"] / 4

    # Freeze the guest, take the last point, then stop qemu so the source file is settled
    api.task(api.post("/vms/bsrc/suspend"))
    inc2 = api.task(api.post("/backups", json={"vm": "bsrc", "incremental": True}))["result"]
    api.task(api.post("/vms/bsrc/stop", json={"force": True}))
    source = disk_digest(volume_path("vm-bsrc.qcow2"))

    vms.made.append("bcopy")
    restored = api.task(api.post("/backups/restore", json={"vm": "bsrc", "as": "bcopy", "start": False}),
                        timeout=180)["result"]
    assert restored["chain"] == [full["backup"], inc1["backup"], inc2["backup"]]
    assert [k.split("/")[-1].split("-")[0] for k in adopted] == [f"{full['backup']:06d}", f"{inc2['backup']:06d}"]
    assert disk_digest(volume_path("vm-bcopy.qcow2")) == source

    # an earlier point: only the full backup, and the copy boots from it
    vms.made.append("bold")
    old = api.task(api.post("/backups/restore", json={"vm": "bsrc", "as": "bold", "point": full["point_at"]}),
                   timeout=180)["result"]
    assert old["chain"] == [full["backup"]]
    ip_old = wait_up(api, "bold")
    assert counters(ip_old)["boots"] == 2  # the disk of the first boot, booted once more

    listed = {b["id"]: b for b in api.get("/backups", params={"vm": "bsrc"}).json()["items"]}
    assert all(listed[i]["state"] == "valid" for i in restored["chain"])
    for b in listed.values():
        for f in b["files"]:
            assert len(f["sha256"]) == 64 and f["size"] > 0

    # a grown disk ends the chain: its checkpoints describe the smaller disk
    grown = api.task(api.post("/vms/bsrc/resize", json={"disk": "2G"}))["result"]
    assert "the next backup of bsrc is a full one" in grown["note"]
    conn, dom = domain("bsrc")
    try:
        assert dom.listAllCheckpoints() == [] and not dom.isActive()
    finally:
        conn.close()
    after = api.task(api.post("/backups", json={"vm": "bsrc", "incremental": True}))["result"]
    assert after["kind"] == "full" and "a disk grow" in after["note"], after


class FailingRepository:
    """A repository whose disk fails after the first megabyte of an object, written or adopted."""

    def __init__(self, real):
        self.real = real
        self.used = None

    def __getattr__(self, name):
        return getattr(self.real, name)

    @contextmanager
    def writer(self, key):
        self.used = "writer"
        with self.real.writer(key) as (sink, written):
            class Sink:
                got = 0

                def write(self, data):
                    Sink.got += len(data)
                    if Sink.got > 2**20:
                        raise OSError(28, "No space left on device")
                    return sink.write(data)

            yield Sink(), written

    def adopt(self, key, source, progress=None):
        self.used = "adopt"

        def fail(done, _total):
            if done > 2**20:
                raise OSError(28, "No space left on device")

        return self.real.adopt(key, source, fail)


@pytest.mark.parametrize("path", ["renamed", "streamed"])
def test_a_backup_broken_half_way_is_never_a_restore_point(guest_api, vms, monkeypatch, path):
    api = guest_api
    if path == "streamed":
        streamed(monkeypatch)
    vm = f"bfail{path[0]}"
    vms(vm)
    wait_up(api, vm)
    repo = api.cp.backups.repo
    api.cp.backups.repo = failing = FailingRepository(repo)
    try:
        task = api.task(api.post("/backups", json={"vm": vm}), expect="failed")
    finally:
        api.cp.backups.repo = repo
    assert "No space left" in task["error"] and failing.used == {"renamed": "adopt", "streamed": "writer"}[path]
    [row] = api.get("/backups", params={"vm": vm}).json()["items"]
    assert row["state"] == "failed" and row["files"] == []
    assert not [p for p in Path(repo.location).rglob("*") if p.is_file() and f"/{vm}/" in str(p)]  # not even partial
    assert not [v for v in os.listdir("/var/lib/vpool/bk-test-images") if v.startswith(f"bk-{vm}-")]
    conn, dom = domain(vm)
    assert dom.listAllCheckpoints() == []  # its checkpoint is gone: the next incremental cannot build on it
    conn.close()
    r = api.post("/backups/restore", json={"vm": vm, "as": f"{vm}2"})
    assert r.status_code == 404 and "no restorable backup" in r.json()["detail"]

    again = api.task(api.post("/backups", json={"vm": vm, "incremental": True}))["result"]
    assert again["kind"] == "full" and "no earlier backup" in again["note"]


def test_verify_finds_a_damaged_file_and_restore_refuses_it(guest_api, vms):
    api = guest_api
    vms("bver")
    wait_up(api, "bver")
    b = api.task(api.post("/backups", json={"vm": "bver"}))["result"]
    assert api.task(api.post("/backups/verify", params={"vm": "bver"}))["result"] == {
        "checked": 1, "ok": 1, "corrupt": []}
    path = Path(api.cp.backups.repo.location) / api.get(f"/backups/{b['backup']}").json()["files"][0]["key"]
    with open(path, "r+b") as f:
        f.seek(70000)
        byte = f.read(1)
        f.seek(70000)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = api.task(api.post("/backups/verify", params={"vm": "bver"}))["result"]
    assert result["ok"] == 0 and "checksum" in result["corrupt"][0]["problems"][0]
    assert api.get(f"/backups/{b['backup']}").json()["state"] == "corrupt"
    r = api.post("/backups/restore", json={"vm": "bver", "as": "bver2"})
    assert r.status_code == 404
    assert api.get("/vms/bver2").status_code == 404


def test_bad_restores_are_refused_and_change_nothing(guest_api, vms):
    api = guest_api
    vms("bbad", start=False)
    api.task(api.post("/backups", json={"vm": "bbad"}))  # a shut-off VM is backed up started paused
    assert api.get("/vms/bbad").json()["state"] == "shutoff"
    before = api.get("/vms").json()["total"]
    r = api.post("/backups/restore", json={"vm": "bbad"})
    assert r.status_code == 409 and "--as" in r.json()["detail"]
    r = api.post("/backups/restore", json={"vm": "nosuch", "as": "x1"})
    assert r.status_code == 404 and "no backups" in r.json()["detail"]
    r = api.post("/backups/restore", json={"vm": "bbad", "as": "x2", "point": "2001-01-01T00:00"})
    assert r.status_code == 404 and "at or before 2001-01-01" in r.json()["detail"]
    r = api.post("/backups/restore", json={"vm": "bbad", "as": "x3", "point": "yesterday"})
    assert r.status_code == 422
    r = api.post("/backups/restore", json={"vm": "bbad", "as": "x4", "host": "nohost"})
    assert r.status_code == 404
    assert api.post("/backups", json={"vm": "nosuch"}).status_code == 404
    assert api.get("/vms").json()["total"] == before


def test_an_incremental_chain_across_a_merged_snapshot_overlay_restores_byte_identical(guest_api, vms):
    """A disk-only snapshot moves the guest's writes to an overlay, and deleting it merges them
    back: the checkpoints' bitmaps must follow, or an incremental backup misses blocks."""
    api = guest_api
    vms("bov")
    ip = wait_up(api, "bov")
    full = api.task(api.post("/backups", json={"vm": "bov"}))["result"]

    def written() -> None:
        start = counters(ip)["disk"]
        assert eventually(lambda: counters(ip)["disk"] >= start + 3, timeout=60)

    api.task(api.post("/vms/bov/snapshots", json={"name": "d1"}))
    written()
    inc1 = api.task(api.post("/backups", json={"vm": "bov", "incremental": True}))["result"]
    api.task(api.delete("/vms/bov/snapshots/d1"), timeout=120)
    written()
    api.task(api.post("/vms/bov/suspend"))
    inc2 = api.task(api.post("/backups", json={"vm": "bov", "incremental": True}))["result"]
    api.task(api.post("/vms/bov/stop", json={"force": True}))
    assert (inc1["kind"], inc2["kind"]) == ("incremental", "incremental"), (inc1, inc2)
    source = disk_digest(volume_path("vm-bov.qcow2"))

    vms.made.append("bovcopy")
    restored = api.task(api.post("/backups/restore", json={"vm": "bov", "as": "bovcopy", "start": False}),
                        timeout=180)["result"]
    assert restored["chain"] == [full["backup"], inc1["backup"], inc2["backup"]]
    assert disk_digest(volume_path("vm-bovcopy.qcow2")) == source
