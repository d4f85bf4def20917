"""Live migration of a real guest between two lab hosts, and what happens when it goes wrong.

Every test reads the guest's own counters over HTTP before and after: `boots` and a growing
`uptime` say it never rebooted. Each one starts from wherever the guest is now, so they also
hold when run alone. Slow migrations (--bandwidth 4 MiB/s: ~75 MiB of RAM takes ~20 s) give
the faults time to land mid-way.
"""

import os
import signal
import time

import libvirt
import pytest

from tests.core.conftest import eventually
from tests.guests import http, status, wait_up

from .conftest import HOSTS, counters, in_phase, other, running_on

pytestmark = pytest.mark.guest
SLOW = 4  # MiB/s


def _vm(pool, name: str) -> dict:
    return pool.get(f"/vms/{name}").json()


def _defined_on(lab, host: str, uuid: str) -> bool:
    conn = libvirt.open(lab.uri(HOSTS.index(host) + 1))
    try:
        conn.lookupByUUIDString(uuid)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _sending(pool, task_id: int) -> dict:
    """Waits until the migration streams memory (its progress says so), and returns the task."""
    task = in_phase(pool, task_id, lambda message: " MiB sent" in message and not message.startswith("pass 1: 0 MiB"),
                    timeout=60)
    assert task and task["state"] == "running", task
    return task


def _slow_migration(pool, guest) -> tuple[str, str, dict, int]:
    """Starts a bandwidth-capped migration of the guest to the other host and waits until it
    streams memory; returns source, destination, the guest's counters before, and the task id."""
    name, ip = guest
    src = _vm(pool, name)["host"]
    before = counters(ip)
    r = pool.post(f"/vms/{name}/migrate", json={"to": other(src), "bandwidth_mib_s": SLOW})
    assert r.status_code == 202, r.text
    _sending(pool, r.json()["id"])
    return src, other(src), before, r.json()["id"]


def _end(pool, task_id: int, timeout: float = 120) -> dict:
    return eventually(lambda: (t := pool.get(f"/tasks/{task_id}", params={"wait": 5}).json())["state"]
                      in ("succeeded", "failed", "cancelled") and t, timeout=timeout, interval=0.2)


def _libvirtd_pid(lab, host: str) -> int:
    return next(s.pids["libvirtd"] for s in lab.status() if s.name == host)


def _restart(lab, pool, host: str) -> None:
    lab.up(len(HOSTS))
    assert eventually(lambda: pool.get(f"/hosts/{host}").json()["state"] == "up", timeout=60, interval=0.5)


def test_migration_moves_the_running_guest_and_leaves_no_copy(lab, pool, guest):
    name, ip = guest
    vm = _vm(pool, name)
    src, dst = vm["host"], other(vm["host"])
    before = counters(ip)
    task = pool.task(pool.post(f"/vms/{name}/migrate", json={"to": dst}), timeout=120)
    after = counters(ip)

    assert task["result"]["source"] == src and task["result"]["destination"] == dst
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (dst, "running")
    assert running_on(lab, vm["uuid"]) == [dst]
    assert not _defined_on(lab, src, vm["uuid"])
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
    assert after["tick"] >= before["tick"]
    last = pool.get(f"/vms/{name}/migrations").json()["items"][0]
    assert (last["state"], last["source"], last["destination"]) == ("succeeded", src, dst)
    assert last["downtime_ms"] is not None and last["duration_ms"] > 0 and last["memory_bytes"] > 0


def test_what_was_plugged_into_a_running_guest_migrates_with_it(lab, pool):
    name = "mghot"  # 3.5 GiB: the smallest VM with memory room (model.hotplug); TCG touches little of it
    pool.task(pool.post("/vms", json={"name": name, "image": "tiny", "memory": "3584M", "disk": "1G",
                                      "host": HOSTS[0]}), timeout=120)
    try:
        ip = wait_up(pool, name)
        memtotal = int(status(ip)["memtotal_kb"])
        # the lab's hosts run TCG, where vCPUs are not plugged live (model.hotplug): memory is
        pool.task(pool.post(f"/vms/{name}/resize", json={"memory": "3840M"}))
        assert eventually(lambda: int(status(ip)["memtotal_kb"]) > memtotal, timeout=30)
        before = counters(ip)
        pool.task(pool.post(f"/vms/{name}/migrate", json={"to": HOSTS[1]}), timeout=180)
        vm = _vm(pool, name)
        assert running_on(lab, vm["uuid"]) == [HOSTS[1]] and (vm["cpus"], vm["memory_mib"]) == (1, 3840)
        seen, after = status(ip), counters(ip)
        assert (seen["ncpu"], int(seen["memtotal_kb"])) == ("1", memtotal + 256 * 1024)
        assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
        conn = libvirt.open(lab.uri(2))
        try:  # the new host's definition keeps the DIMM and the vCPUs for the next boot
            config = conn.lookupByUUIDString(vm["uuid"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        finally:
            conn.close()
        assert "model='dimm'" in config and "maxMemory" in config
    finally:
        pool.task(pool.delete(f"/vms/{name}"), timeout=120)


def test_a_host_without_room_is_refused_before_anything_starts(lab, pool, guest):
    name, _ = guest
    vm = _vm(pool, name)
    src, dst = vm["host"], other(vm["host"])
    host = pool.get(f"/hosts/{dst}").json()
    reserved = host["policy"]["reserved_memory_mib"]
    tasks_before = pool.get("/tasks").json()["total"]
    history_before = pool.get(f"/vms/{name}/migrations").json()["total"]
    pool.patch(f"/hosts/{dst}", json={"reserved_memory_mib": reserved + host["capacity"]["memory_mib"]["free"]})
    try:
        for body in ({"to": dst}, {}):
            r = pool.post(f"/vms/{name}/migrate", json=body)
            assert r.status_code == 409, r.text
            assert "no host has room" in r.json()["detail"] and "RAM" in r.json()["detail"]
    finally:
        pool.patch(f"/hosts/{dst}", json={"reserved_memory_mib": reserved})
    assert pool.get("/tasks").json()["total"] == tasks_before
    assert pool.get(f"/vms/{name}/migrations").json()["total"] == history_before
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (src, "running")
    assert running_on(lab, vm["uuid"]) == [src]


def test_maintenance_evacuates_the_host_and_blocks_placements(lab, pool, guest):
    name, ip = guest
    src = _vm(pool, name)["host"]
    before = counters(ip)
    try:
        task = pool.task(pool.post(f"/hosts/{src}/maintenance", json={"mode": "on"}), timeout=180)
        assert task["result"]["moved"] == {name: other(src)} and task["result"]["not_moved"] == {}
        assert pool.get(f"/hosts/{src}").json()["maintenance"] is True
        r = pool.post("/vms", json={"name": "mgblocked", "memory": "128M", "disk": "1G", "host": src})
        assert r.status_code == 409 and "Maintenance" in r.json()["detail"], r.text
    finally:
        pool.task(pool.post(f"/hosts/{src}/maintenance", json={"mode": "off"}))
    assert pool.get(f"/hosts/{src}").json()["maintenance"] is False
    vm = _vm(pool, name)
    assert vm["host"] == other(src) and running_on(lab, vm["uuid"]) == [other(src)]
    assert counters(ip)["boots"] == before["boots"]


def test_an_applied_balance_plan_moves_guests_live(lab, pool, guest):
    name, ip = guest
    src = _vm(pool, name)["host"]
    before = counters(ip)
    pool.task(pool.post("/vms", json={"name": "mgbal", "image": "tiny", "memory": "128M", "disk": "1G",
                                      "host": src}), timeout=120)
    try:
        # the collector's real readings are the load a plan weighs; two idle guests are no reason
        # to move, so this plan counts VMs (load window 0) to have one to apply
        pool.cp.telemetry.collect_once()
        time.sleep(1)
        pool.cp.telemetry.collect_once()   # a rate needs two readings
        measured = pool.get("/plans/balance").json()["load"]
        assert measured["cpu"] == "measured" and measured["measured_vms"] >= 1, measured
        plan = pool.get("/plans/balance", params={"load_window_s": 0}).json()
        assert plan["load"]["cpu"] == "not measured"
        assert len(plan["moves"]) == 1 and plan["moves"][0]["to"] == other(src), plan
        task = pool.task(pool.post("/plans/balance/apply", json={"load_window_s": 0}), timeout=180)
        moved = task["result"]["moves"]
        assert [(m["vm"], m["to"]) for m in moved] == [(m["vm"], m["to"]) for m in plan["moves"]]
        vm = _vm(pool, moved[0]["vm"])
        assert vm["host"] == other(src) and running_on(lab, vm["uuid"]) == [other(src)]
        assert task["result"]["score_now"] < task["result"]["score_before"]
        assert task["result"]["load"]["cpu"] == "not measured"
        assert counters(ip)["boots"] == before["boots"]  # whichever moved, the guest never restarted
    finally:
        pool.task(pool.delete("/vms/mgbal"), timeout=120)


def test_a_balance_plan_on_measured_load_moves_one_of_two_busy_guests(lab, pool, guest):
    """Two guests each keep a CPU busy on one host while the other idles: the collector's readings
    of the real QEMU processes are what the plan weighs, and applying it moves one of them live."""
    name, ip = guest
    src, before = _vm(pool, name)["host"], counters(ip)
    pool.task(pool.post("/vms", json={"name": "mgburn", "image": "tiny", "memory": "128M", "disk": "1G",
                                      "host": src}), timeout=120)
    try:
        burner = wait_up(pool, "mgburn")
        for address in (ip, burner):
            assert (http(address, "/cgi-bin/burn?120") or "").startswith("burning"), address
        began = time.time()
        for _ in range(5):                      # readings only while both burn (the loop's own come too)
            time.sleep(5)
            pool.cp.telemetry.collect_once()
        window = {"load_window_s": int(time.time() - began) - 5}
        plan = pool.get("/plans/balance", params=window).json()
        busy = {h["host"]: h["before"] for h in plan["cpu_busy"]}
        assert plan["load"]["cpu"] == "measured" and busy[src] > 0.5 > busy[other(src)], plan
        first = plan["moves"][0]
        assert first["vm"] in (name, "mgburn") and first["to"] == other(src) and "CPU load" in first["reason"], plan
        task = pool.task(pool.post("/plans/balance/apply", json=window), timeout=180)
        moved = task["result"]["moves"][0]
        assert moved["vm"] in (name, "mgburn") and moved["to"] == other(src)
        assert running_on(lab, _vm(pool, moved["vm"])["uuid"]) == [other(src)]
        assert counters(ip)["boots"] == before["boots"]  # moved or not, the guest never restarted
    finally:
        pool.task(pool.delete("/vms/mgburn"), timeout=120)


def test_cancel_aborts_the_migration_and_the_guest_stays_on_the_source(lab, pool, guest):
    name, ip = guest
    src, dst, before, task_id = _slow_migration(pool, guest)
    assert pool.post(f"/tasks/{task_id}/cancel").status_code == 202
    task = _end(pool, task_id)

    assert task["state"] == "cancelled", task
    vm = _vm(pool, name)
    assert (vm["host"], vm["state"]) == (src, "running")
    assert running_on(lab, vm["uuid"]) == [src] and not _defined_on(lab, dst, vm["uuid"])
    assert pool.get(f"/vms/{name}/migrations").json()["items"][0]["state"] == "cancelled"
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]


def test_destination_libvirtd_killed_mid_migration(lab, pool, guest):
    name, ip = guest
    src, dst, before, task_id = _slow_migration(pool, guest)
    os.kill(_libvirtd_pid(lab, dst), signal.SIGKILL)
    try:
        task = _end(pool, task_id)
        assert task["state"] == "failed", task
        assert f"still runs on {src}" in task["error"], task["error"]
        vm = _vm(pool, name)
        assert (vm["host"], vm["state"]) == (src, "running")
        assert pool.get(f"/vms/{name}/migrations").json()["items"][0]["state"] == "failed"
    finally:
        _restart(lab, pool, dst)
    # The restarted destination drops the half-arrived copy: the guest runs on exactly one host.
    assert eventually(lambda: running_on(lab, vm["uuid"]) == [src], timeout=60, interval=0.5)
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]


def test_source_host_down_during_evacuation(lab, pool, guest):
    name, ip = guest
    vm = _vm(pool, name)
    src = vm["host"]
    before = counters(ip)
    pool.patch("/migrations/policy", json={"bandwidth_mib_s": SLOW})
    try:
        r = pool.post(f"/hosts/{src}/maintenance", json={"mode": "on"})
        assert r.status_code == 202, r.text
        migration = eventually(lambda: pool.get("/tasks", params={"kind": "vm.migrate", "target": name,
                                                                   "state": "running"}).json()["items"],
                               timeout=30, interval=0.2)
        assert migration, "the evacuation started no migration"
        _sending(pool, migration[0]["id"])
        os.kill(_libvirtd_pid(lab, src), signal.SIGKILL)
        evacuation = _end(pool, r.json()["id"])
        assert evacuation["state"] == "failed", evacuation
        assert "not moved" in evacuation["error"] and name in evacuation["error"]
        assert pool.get(f"/hosts/{src}").json()["state"] == "down"
        _restart(lab, pool, src)
    finally:
        pool.patch("/migrations/policy", json={"bandwidth_mib_s": 0})
        pool.task(pool.post(f"/hosts/{src}/maintenance", json={"mode": "off"}))

    def settled():
        hosts = running_on(lab, vm["uuid"])
        now = _vm(pool, name)
        return len(hosts) == 1 and now["host"] == hosts[0] and now["state"] == "running" and hosts

    assert eventually(settled, timeout=90, interval=1), (running_on(lab, vm["uuid"]), _vm(pool, name))
    after = counters(ip)
    assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
