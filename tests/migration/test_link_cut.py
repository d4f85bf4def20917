"""The management link to the destination cut while memory streams (shared storage): the
migration fails, the guest keeps running on its source, and the store says so."""

import subprocess

import pytest

from tests.core.conftest import eventually

from .conftest import HOSTS, TOPOLOGY, counters, running_on
from .test_live import _end, _slow_migration, _vm

pytestmark = pytest.mark.guest


def test_cut_link_fails_the_migration_and_the_guest_stays_on_the_source(lab, pool, guest):
    name, ip = guest
    src, dst, before, task_id = _slow_migration(pool, guest)
    link = TOPOLOGY.veths(HOSTS.index(dst) + 1)[0]  # the destination's management link, root side
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        task = _end(pool, task_id, timeout=240)
        assert task and task["state"] == "failed", task
        vm = _vm(pool, name)
        assert (vm["host"], vm["state"]) == (src, "running"), (vm, task)
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    assert eventually(lambda: pool.get(f"/hosts/{dst}").json()["state"] == "up", timeout=60, interval=0.5)
    assert eventually(lambda: running_on(lab, vm["uuid"]) == [src], timeout=60, interval=0.5)
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    assert pool.get(f"/vms/{name}/migrations").json()["items"][0]["state"] == "failed"
