"""A copy of a VM that boots a kernel its host handed it (a restore, a clone, a DR drill copy of
an adopted VM) is booked only where that kernel is."""

import pytest

from vpool.hypervisor.domain_xml import DirectBoot
from vpool.model.errors import Conflict, NoCapacity
from vpool.services import provision


def test_a_vm_booting_its_hosts_kernel_is_booked_where_that_kernel_is(api, tmp_path):
    api.add_sim_host(tmp_path, "small", cpus=2, memory_mib=4096)
    api.add_sim_host(tmp_path, "big", cpus=64, memory_mib=65536)            # placement's choice otherwise
    small = api.cp.connections.driver(api.get("/hosts/small").json()["id"])
    kernel = small.create_disk("default-pool", "vmlinuz-adopted", 1)      # a kernel in small's storage only
    booking = provision.book(api.cp, "r1", 1, 256, 1, None, None, boot=DirectBoot(kernel))
    assert booking.host == "small"
    provision.release(api.cp, booking)
    api.cp.vms.discard(booking.vm_id)
    with pytest.raises(Conflict, match=f"r2 boots kernel {kernel}, which its host handed it, and big has no such"):
        provision.book(api.cp, "r2", 1, 256, 1, None, "big", boot=DirectBoot(kernel))
    with pytest.raises(NoCapacity, match=f"hosts without its kernel {kernel} do not count: big"):
        provision.book(api.cp, "r3", 1, 8192, 1, None, None, boot=DirectBoot(kernel))  # small is too small
    booking = provision.book(api.cp, "r4", 1, 256, 1, None, None, boot=DirectBoot("/boot/vmlinuz"))
    assert booking.host == "big"  # a file in no storage pool: no host can be ruled out through libvirt
    assert api.get("/vms").json()["total"] == 1
