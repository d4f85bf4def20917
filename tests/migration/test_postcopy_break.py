"""A post-copy migration whose stream breaks: the destination already runs the guest and the
source holds the pages it has not sent, so neither half can go on alone. vpool restarts the
stream from where it stopped once the hosts reach each other again, and the guest never
reboots or loses what it wrote."""

import subprocess
import time

import pytest

from tests.core.conftest import eventually
from tests.guests import counters, http

from .conftest import HOSTS, TOPOLOGY, in_phase, other, running_on
from .test_live import _end, _vm

pytestmark = pytest.mark.guest
CAP = 8  # MiB/s in both phases: post-copy lasts long enough to be cut


def test_a_broken_postcopy_is_resumed_and_the_guest_keeps_running(lab, pool, guest):
    name, ip = guest
    src = _vm(pool, name)["host"]
    dst = other(src)
    assert "dirtying" in http(ip, "/cgi-bin/dirty?MB=64&seconds=600")  # pre-copy cannot converge
    before = counters(ip)
    policy = pool.get("/migrations/policy").json()
    pool.patch("/migrations/policy", json={"postcopy_after_iterations": 2, "postcopy_after_s": 1})
    link = TOPOLOGY.veths(HOSTS.index(dst) + 1)[0]  # the destination's management link, root side
    try:
        r = pool.post(f"/vms/{name}/migrate", json={"to": dst, "bandwidth_mib_s": CAP})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        switched = in_phase(pool, task_id, lambda message: "post-copy" in message, timeout=120)
        assert switched and switched["state"] == "running", switched
        time.sleep(1)
        # The stream breaks for good (a reset both ends see, not a stall TCP would ride out),
        # and the destination then stays out of reach for a while: the first tries to resume fail.
        subprocess.run(["ip", "netns", "exec", TOPOLOGY.host_name(HOSTS.index(src) + 1), "ss", "-K", "dst",
                        TOPOLOGY.host_address(HOSTS.index(dst) + 1)], check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        time.sleep(10)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        task = _end(pool, task_id, timeout=300) or pool.get(f"/tasks/{task_id}").json()
        assert task["state"] == "succeeded", task["message"]
        assert task["result"]["postcopy"] and "vpool resumed the migration" in task["result"]["note"], task["result"]
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        pool.patch("/migrations/policy", json={k: policy[k] for k in ("postcopy_after_iterations", "postcopy_after_s")})
    assert eventually(lambda: running_on(lab, _vm(pool, name)["uuid"]) == [dst], timeout=60, interval=0.5)
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (dst, "running")
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    assert eventually(lambda: counters(ip)["disk"] > before["disk"], timeout=30, interval=0.5)
    http(ip, "/cgi-bin/dirty?seconds=0")
