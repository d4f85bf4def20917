"""A migration that needs a guest of its own: its disk copied to a host that does not share it
(--copy-storage), after which the other tests' shared-storage moves no longer apply."""

import pytest

from tests.core.conftest import eventually
from tests.guests import counters, status

from .conftest import other, running_on
from .test_live import _vm

pytestmark = pytest.mark.guest


def test_copy_storage_moves_the_disk_and_the_guest_keeps_writing(lab, pool, guest):
    name, ip = guest
    vm = _vm(pool, name)
    dst = other(vm["host"])
    before = counters(ip)
    disk_before = int(status(ip)["disk"])
    task = pool.task(pool.post(f"/vms/{name}/migrate", json={"to": dst, "copy_storage": True}), timeout=240)
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (dst, "running") and running_on(lab, vm["uuid"]) == [dst]
    assert task["result"]["destination"] == dst
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    # The guest's disk counter (synced to /dev/vda every second) goes on from where it was.
    assert eventually(lambda: int(status(ip).get("disk", 0)) > disk_before, timeout=30, interval=0.5)
    migration = pool.get(f"/vms/{name}/migrations").json()["items"][0]
    assert migration["state"] == "succeeded" and migration["copy_storage"] is True
