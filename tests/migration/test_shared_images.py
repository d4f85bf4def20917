"""Two hosts on shared storage asking for the same image at once: one upload, one file.

The lab's hosts share vpool's storage path, so an image copy on one host is the other's too.
Creates on both at once (what `make run` does with its three lab guests) used to race: the
second upload of the same content-named volume failed with "already exists", or deleted the
first one's file under it.
"""

import hashlib
import os
import threading
from pathlib import Path

from sqlalchemy import select

from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.store.tables import Host


def test_concurrent_copies_of_one_image_to_hosts_sharing_storage(lab, pool, tmp_path):
    cp = pool.cp
    source = tmp_path / "shared.raw"
    data = os.urandom(96 * 2**20)  # large enough that the uploads overlap; no two blocks alike
    source.write_bytes(data)
    image = cp.images.import_file("shared-img", source)
    with cp.store.session() as s:
        hosts = list(s.scalars(select(Host.id).where(Host.name.in_(("mg1", "mg2")))))
    barrier = threading.Barrier(len(hosts))
    copies, errors = {}, []

    def copy(host_id):
        barrier.wait()
        try:
            copies[host_id] = cp.images.ensure_copy(image["id"], host_id).disk_path
        except Exception as e:  # the test reports whatever a copy raised
            errors.append(e)

    threads = [threading.Thread(target=copy, args=(h,)) for h in hosts]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        paths = set(copies.values())
        assert len(copies) == 2 and len(paths) == 1, copies
        on_disk = (lab.shared_dir / Path(paths.pop()).name).read_bytes()
        assert hashlib.sha256(on_disk).digest() == hashlib.sha256(data).digest()
    finally:
        cp.images.delete("shared-img")


def test_a_disk_deleted_through_one_host_can_be_created_again_through_the_other(lab, pool):
    """libvirt lists a pool's volumes as of its last refresh, so a VM's disk deleted on the
    host the VM last ran on still "exists already" to the host it was created on, and a new VM
    of that name failed there (seen: a VM migrated away, deleted, then created again; the
    create's check that the name is free failed the same way)."""
    hosts = {h["name"]: h for h in pool.get("/hosts").json()["items"]}
    first, second = (LibvirtDriver(lab.uri(n)) for n in (1, 2))
    try:
        path = first.create_disk(hosts["mg1"]["storage_pool"], "vm-again.qcow2", 1)
        on_disk = lab.shared_dir / Path(path).name  # the hosts' storage path, seen from here
        assert on_disk.exists()
        second.delete_volume(path)
        assert not on_disk.exists()
        # the name is free again to the first host, which still lists the file (a VM create asks this)
        assert first.volume_path(hosts["mg1"]["storage_pool"], "vm-again.qcow2") is None
        assert not first.volume_exists(path)
        assert first.create_disk(hosts["mg1"]["storage_pool"], "vm-again.qcow2", 1) == path and on_disk.exists()
    finally:
        first.delete_volume(path)
        first.close()
        second.close()


def test_volumes_created_through_one_host_are_listed_through_the_other(lab, pool):
    """Deleting a VM lists its snapshot overlays by name on the host it runs on now; one taken
    before it migrated there was left out, and its file leaked."""
    storage = {h["name"]: h["storage_pool"] for h in pool.get("/hosts").json()["items"]}
    first, second = (LibvirtDriver(lab.uri(n)) for n in (1, 2))
    try:
        second.volume_paths(storage["mg2"], prefix="vm-listed@")  # its list as of now
        path = first.create_disk(storage["mg1"], "vm-listed@s1.qcow2", 1)
        assert second.volume_paths(storage["mg2"], prefix="vm-listed@") == [path]
    finally:
        first.delete_volume(path)
        first.close()
        second.close()
