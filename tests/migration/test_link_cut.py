"""The management link to the destination cut mid-migration (shared storage). Before the switch
to post-copy the migration fails, the guest keeps running on its source, and the store says so;
after it, the task waits until the link is back and the hosts have finished the move."""

import subprocess

import libvirt
import pytest

from tests.core.conftest import eventually
from tests.guests import http

from .conftest import HOSTS, TOPOLOGY, counters, other, running_on
from .test_live import SLOW, _end, _slow_migration, _vm

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


def test_link_cut_after_the_switch_to_postcopy_is_waited_out(lab, pool, guest):
    """After the switch the VM's memory lives on both hosts, so a cut cannot be rolled back:
    libvirt gives up on the migrate call when its keepalive times out, qemu's stream resumes
    when the link returns, and the task waits for that instead of recording the VM unknown."""
    name, ip = guest
    vm = _vm(pool, name)
    src, dst = vm["host"], other(vm["host"])
    before = counters(ip)
    assert "dirtying" in http(ip, "/cgi-bin/dirty?MB=64&seconds=600")  # so pre-copy does not converge
    policy = pool.get("/migrations/policy").json()
    pool.patch("/migrations/policy", json={"postcopy_after_s": 3, "postcopy_after_iterations": 1,
                                           "postcopy_recovery_s": 180})
    link = TOPOLOGY.veths(HOSTS.index(dst) + 1)[0]  # the destination's management link, root side
    # Post-copy ignores the migration's bandwidth cap: shape the link so the phase lasts long enough to cut.
    subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "tbf", "rate", "16mbit", "burst", "64kb",
                    "latency", "500ms"], check=True)
    conn = libvirt.open(lab.uri(HOSTS.index(src) + 1))
    try:
        r = pool.post(f"/vms/{name}/migrate", json={"to": dst, "bandwidth_mib_s": SLOW})
        assert r.status_code == 202, r.text
        dom = conn.lookupByUUIDString(vm["uuid"])
        assert eventually(lambda: dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY],
                          timeout=180, interval=0.05), "the migration never switched to post-copy"
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        try:  # until libvirt has given up on the call and vpool waits for the hosts
            waiting = eventually(lambda: "broke after the switch" in (t := pool.get(f"/tasks/{r.json()['id']}").json())[
                "message"] or t["state"] != "running" and t, timeout=120, interval=0.5)
            assert waiting is True, waiting
        finally:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        task = _end(pool, r.json()["id"], timeout=240)
        assert task and task["state"] == "succeeded", task
        assert "link broke during post-copy" in task["result"]["note"] and task["result"]["postcopy"] is True
    finally:
        conn.close()
        subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False)
        pool.patch("/migrations/policy", json={k: policy[k] for k in (
            "postcopy_after_s", "postcopy_after_iterations", "postcopy_recovery_s")})
        http(ip, "/cgi-bin/dirty?seconds=0")
    assert (_vm(pool, name)["host"], _vm(pool, name)["state"]) == (dst, "running")
    assert eventually(lambda: running_on(lab, vm["uuid"]) == [dst], timeout=60, interval=0.5)
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    assert pool.get(f"/vms/{name}/migrations").json()["items"][0]["state"] == "succeeded"
