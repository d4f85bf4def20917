import threading
import time
import xml.etree.ElementTree as ET

import libvirt
import pytest
from sqlalchemy import update

from vpool.model.errors import HypervisorError
from vpool.store.tables import VM

from .conftest import eventually


@pytest.fixture
def pool(api, tmp_path):
    api.add_sim_host(tmp_path, "h1", cpus=4, memory_mib=8192)
    api.add_sim_host(tmp_path, "h2", cpus=4, memory_mib=8192)
    return api


def create(api, name, expect="succeeded", **body):
    return api.task(api.post("/vms", json={"name": name, "cpus": 1, "memory": "1G", "disk": "2G", **body}),
                    expect=expect)


def test_life_cycle(pool):
    task = create(pool, "web1")
    vm = pool.get("/vms/web1").json()
    assert vm["state"] == "running" and vm["host"] in ("h1", "h2")
    assert (vm["cpus"], vm["memory_mib"], vm["disk_gib"]) == (1, 1024, 2)
    # too small for memory room
    assert vm["hotplug"] == {"max_cpus": 8, "max_memory_mib": 1024, "free_slots": 0, "vcpus_live": True}
    assert task["result"]["host"] == vm["host"]
    pool.task(pool.post("/vms/web1/suspend"))
    assert pool.get("/vms/web1").json()["state"] == "paused"
    pool.task(pool.post("/vms/web1/resume"))
    pool.task(pool.post("/vms/web1/reboot"))
    stop = pool.task(pool.post("/vms/web1/stop", json={"timeout": 0.5}))
    assert stop["result"]["state"] == "shutoff"
    r = pool.post("/vms/web1/stop")
    assert r.status_code == 409 and "already shutoff" in r.json()["detail"]
    pool.task(pool.post("/vms/web1/start"))
    assert pool.get("/vms/web1").json()["state"] == "running"
    pool.task(pool.post("/vms/web1/suspend"))
    stop = pool.task(pool.post("/vms/web1/stop"))  # a paused guest is out of ACPI's reach: no wait
    assert (stop["result"], stop["message"]) == ({"state": "shutoff", "how": "forced power-off"}, "done")
    pool.task(pool.delete("/vms/web1"))
    assert pool.get("/vms/web1").status_code == 404
    drv = pool.cp.connections.driver(pool.get(f"/hosts/{vm['host']}").json()["id"])
    assert "web1" not in [d.name for d in drv.domains()]
    assert drv.volume_path("default-pool", "vm-web1.qcow2") is None


def test_no_start_and_flavors(pool):
    f = pool.post("/flavors", json={"name": "small", "cpus": 2, "memory": "512M", "disk": "5G"})
    assert f.status_code == 201
    assert pool.post("/flavors", json={"name": "small", "cpus": 1, "memory": 1, "disk": 1}).status_code == 409
    pool.task(pool.post("/vms", json={"name": "f1", "flavor": "small", "start": False}))
    vm = pool.get("/vms/f1").json()
    assert (vm["cpus"], vm["memory_mib"], vm["disk_gib"], vm["flavor"], vm["state"]) == (2, 512, 5, "small", "shutoff")
    assert pool.delete("/flavors/small").status_code == 409  # in use
    assert [f["name"] for f in pool.get("/flavors").json()["items"]] == ["small"]


def test_bad_requests_change_nothing(pool):
    create(pool, "web1")
    cases = [
        ({"name": "web1"}, 409, "already exists"),
        ({"name": "a</name><devices>"}, 422, "not allowed"),
        ({"name": "x", "flavor": "nope"}, 404, "no flavor"),
        ({"name": "x", "image": "nope"}, 404, "no image"),
        ({"name": "x", "host": "nope"}, 404, "no host"),
        ({"name": "x", "memory": "-1G"}, 422, "positive"),
        ({"name": "x", "cpus": 0}, 422, "cpus"),
        ({"name": "x", "memory": "lots"}, 422, "not a size"),
        ({"name": "x", "memory": "64G"}, 409, "short"),
        ({"name": "x", "cpus": 1, "bogus": 1}, 422, "bogus is not something this request takes"),
    ]
    for body, status, words in cases:
        r = pool.post("/vms", json={"cpus": 1, "memory": "1G", "disk": "1G", **body})
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert words in r.json()["detail"], (body, r.json())
    for content, words in (('{"name": "x",', "not valid JSON"), (None, "needs a JSON body")):
        r = pool.client.post("/vms", content=content, headers={**pool.headers, "content-type": "application/json"})
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert [v["name"] for v in pool.get("/vms", params={"ownership": "managed"}).json()["items"]] == ["web1"]
    assert pool.get("/tasks", params={"kind": "vm.create"}).json()["total"] == 1
    # ids past the database's 64-bit integers, and digits int() refuses: not found, not a 500
    huge = "9" * 30
    for path, status in ((f"/vms/{huge}", 404), ("/vms/²", 404), (f"/tasks/{huge}", 422), ("/tasks/-1", 422),
                         (f"/backups/{huge}", 422), (f"/schedules/{huge}", 422), (f"/dr/drills/{huge}", 422)):
        r = pool.get(path)
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json", (path, r.text)
    assert pool.get("/vms", params={"offset": huge}).status_code == 422
    for params, words in (({"state": "runing"}, "no VM state 'runing'; one of creating"),
                          ({"ownership": "mine"}, "no VM ownership 'mine'"), ({"group": "nope"}, "no group 'nope'")):
        r = pool.get("/vms", params=params)
        assert r.status_code in (404, 422) and words in r.json()["detail"], (params, r.text)


def test_placement_never_goes_above_the_ratios(pool):
    # 2 hosts x (8192 - 512) MiB usable: 3 VMs of 2.5 GiB fit on each, the 7th does not.
    for i in range(6):
        create(pool, f"v{i}", memory="2560M")
    r = pool.post("/vms", json={"name": "v6", "cpus": 1, "memory": "2560M", "disk": "1G"})
    assert r.status_code == 409
    assert "MiB" in r.json()["detail"]
    hosts = {h["name"]: h for h in pool.get("/hosts").json()["items"]}
    assert all(h["capacity"]["memory_mib"]["free"] >= 0 for h in hosts.values())


def test_maintenance_blocks_new_placements(pool):
    pool.patch("/hosts/h1", json={"maintenance": True})
    for i in range(3):
        assert create(pool, f"m{i}")["result"]["host"] == "h2"
    assert pool.post("/vms", json={"name": "pinned", "host": "h1", "cpus": 1}).status_code == 409
    pool.patch("/hosts/h1", json={"maintenance": False})
    assert create(pool, "pinned", host="h1")["result"]["host"] == "h1"


def test_a_dry_run_says_where_and_why_and_makes_nothing(pool):
    """POST /vms?dry_run=true asks placement the question a create would, and books nothing: the
    host it names is the one the create then gets, bad input is refused alike, and no room is an
    answer with every host's reason, not an error."""
    create(pool, "a1", memory="4G")  # h1, the first of two equal hosts
    pool.patch("/hosts/h1", json={"maintenance": True})
    r = pool.post("/vms", params={"dry_run": "true"}, json={"name": "n1", "cpus": 2, "memory": "1G"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["vm"], answer["host"], answer["message"]) == ("n1", "h2", "")
    assert answer["demand"] == {"cpus": 2, "memory_mib": 1024, "disk_gib": 1}
    assert [(h["host"], h["removed_by"]) for h in answer["hosts"]] == [("h2", None), ("h1", "MaintenanceFilter")]
    assert answer["hosts"][0]["total"] == sum(answer["hosts"][0]["weights"].values())
    assert pool.get("/vms").json()["total"] == 1 and pool.get("/tasks").json()["total"] == 3  # 2 host adds, a1
    pool.patch("/hosts/h1", json={"maintenance": False})
    answer = pool.post("/vms", params={"dry_run": "true"}, json={"name": "n1", "memory": "1G"}).json()
    assert answer["host"] == "h2" == create(pool, "n1", memory="1G")["result"]["host"]
    r = pool.post("/vms", params={"dry_run": "true"}, json={"name": "big", "memory": "7G"})
    assert r.status_code == 200 and r.json()["host"] is None
    assert r.json()["message"].startswith("no host has room for 1 vCPU / 7168 MiB")
    assert {h["host"]: h["why"] for h in r.json()["hosts"]} == {"h1": "short 3584 MiB RAM", "h2": "short 512 MiB RAM"}
    for body, status in (({"name": "n1"}, 409), ({"name": "x", "flavor": "nope"}, 404),
                         ({"name": "x", "group": "nope"}, 404), ({"name": "x y"}, 422), ({"name": "x", "cpus": 0}, 422),
                         ({"name": "x", "host": "nope"}, 404)):
        r = pool.post("/vms", params={"dry_run": "true"}, json=body)
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json", (body, r.text)
    assert pool.get("/vms").json()["total"] == 2


def test_failure_after_define_rolls_back(pool, monkeypatch):
    from vpool.hypervisor.libvirt_driver import LibvirtDriver

    def broken_start(self, uuid):
        raise HypervisorError("cannot start the VM: simulated failure")

    monkeypatch.setattr(LibvirtDriver, "start", broken_start)
    task = create(pool, "doomed", expect="failed", host="h1")
    assert "simulated failure" in task["error"]
    assert pool.get("/vms/doomed").status_code == 404
    drv = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"])
    assert "doomed" not in [d.name for d in drv.domains()]
    assert drv.volume_path("default-pool", "vm-doomed.qcow2") is None


def test_a_disk_already_there_under_the_new_vms_name_is_refused_and_kept(pool):
    """A leftover, or another system's disk on shared storage: the failed create's undo once
    deleted it by name."""
    drv = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"])
    foreign = drv.create_disk("default-pool", "vm-taken.qcow2", 1)
    task = create(pool, "taken", expect="failed", host="h1")
    assert f"{foreign} is already in storage pool default-pool on h1" in task["error"]
    assert "vol-delete" in task["error"]
    assert pool.get("/vms/taken").status_code == 404
    assert drv.volume_path("default-pool", "vm-taken.qcow2") == foreign
    drv.delete_volume(foreign)
    create(pool, "taken", host="h1")


def test_list_pagination_and_filters(pool):
    for i in range(5):
        create(pool, f"p{i}", host="h1" if i < 3 else "h2", start=i != 0)
    page = pool.get("/vms", params={"limit": 2, "offset": 1, "ownership": "managed"}).json()
    assert page["total"] == 5 and [v["name"] for v in page["items"]] == ["p1", "p2"]
    assert pool.get("/vms", params={"host": "h2", "ownership": "managed"}).json()["total"] == 2
    assert pool.get("/vms", params={"state": "shutoff"}).json()["total"] == 1
    assert pool.get("/vms", params={"name": "p"}).json()["total"] == 5
    assert pool.get("/vms", params={"limit": 0}).status_code == 422


def test_unmanaged_domains_are_listed_and_can_be_adopted(pool):
    # A file-backed test driver host lives in its connection, so the "other client" uses it too.
    conn = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"]).conn
    conn.defineXML("<domain type='test'><name>foreign</name><memory unit='MiB'>256</memory>"
                   "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    assert eventually(lambda: pool.get("/vms/foreign").status_code == 200)
    vm = pool.get("/vms/foreign").json()
    assert vm["ownership"] == "unmanaged" and vm["host"] == "h1"
    r = pool.post("/vms/foreign/start")
    assert r.status_code == 409 and "adopt" in r.json()["detail"]
    pool.task(pool.post("/vms/foreign/adopt"))
    assert pool.get("/vms/foreign").json()["ownership"] == "managed"
    pool.task(pool.post("/vms/foreign/start"))


@pytest.fixture
def held_disk(monkeypatch):
    """Creates stop at their disk until the test sets `release`; `entered` says one got there."""
    from vpool.hypervisor.libvirt_driver import LibvirtDriver

    entered, release = threading.Event(), threading.Event()
    original = LibvirtDriver.create_disk

    def slow_create_disk(self, *args, **kwargs):
        entered.set()
        release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LibvirtDriver, "create_disk", slow_create_disk)
    return entered, release


def test_cancel_a_running_create_rolls_it_back(pool, held_disk):
    entered, release = held_disk
    r = pool.post("/vms", json={"name": "slow", "cpus": 1, "memory": "256M", "disk": "1G", "host": "h1"})
    assert entered.wait(10)
    assert pool.post(f"/tasks/{r.json()['id']}/cancel").status_code == 202
    release.set()
    task = pool.task(r, expect="cancelled")
    assert "cancelled" in task["message"]
    assert pool.get("/vms/slow").status_code == 404
    drv = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"])
    assert "slow" not in [d.name for d in drv.domains()]
    assert drv.volume_path("default-pool", "vm-slow.qcow2") is None
    assert pool.post(f"/tasks/{r.json()['id']}/cancel").status_code == 409


def test_a_booking_and_its_task_are_one_commit(pool, monkeypatch):
    """A create task that cannot be stored leaves no booking holding the name and the room."""
    from dataclasses import replace

    from vpool.services import provision

    def unstorable(order, target):
        return queued(replace(order, params={"x": object()}), target)  # not JSON

    queued = provision.queued
    monkeypatch.setattr(provision, "queued", unstorable)
    with pytest.raises(Exception, match="JSON serializable"):
        pool.post("/vms", json={"name": "half", "cpus": 1, "memory": "256M", "disk": "1G"})
    assert pool.get("/vms/half").status_code == 404
    monkeypatch.setattr(provision, "queued", queued)
    assert create(pool, "half")["state"] == "succeeded"


def test_a_long_poll_answers_when_the_task_ends_and_reads_its_row_once(pool, held_disk, monkeypatch):
    """While the task runs here, the wait watches the runner; the store is read when it ends."""
    entered, release = held_disk
    r = pool.post("/vms", json={"name": "slow", "cpus": 1, "memory": "256M", "disk": "1G"})
    task_id = r.json()["id"]
    assert entered.wait(10)
    assert pool.get(f"/tasks/{task_id}", params={"wait": 0.3}).json()["state"] == "running"  # time is up
    reads, get = [], pool.cp.runner.get
    monkeypatch.setattr(pool.cp.runner, "get", lambda i: reads.append(i) or get(i))
    answer = {}
    poll = threading.Thread(target=lambda: answer.update(pool.get(f"/tasks/{task_id}", params={"wait": 30}).json()))
    poll.start()
    time.sleep(1)  # ten polls of the store, had the wait read it
    release.set()
    poll.join(30)
    assert answer["state"] == "succeeded" and reads == [task_id]


def test_server_groups_keep_vms_apart_or_together(pool):
    assert pool.post("/groups", json={"name": "web", "policy": "anti-affinity"}).status_code == 201
    assert pool.post("/groups", json={"name": "db", "policy": "affinity"}).status_code == 201
    assert pool.post("/groups", json={"name": "web", "policy": "affinity"}).status_code == 409
    r = pool.post("/groups", json={"name": "x", "policy": "sideways"})
    assert r.status_code == 422 and "anti-affinity" in r.json()["detail"]
    hosts = {create(pool, f"web{i}", group="web")["result"]["host"] for i in range(2)}
    assert hosts == {"h1", "h2"}
    r = pool.post("/vms", json={"name": "web2", "cpus": 1, "memory": "256M", "group": "web"})
    assert r.status_code == 409 and "anti" in r.json()["detail"].lower()
    first = create(pool, "db0", group="db")["result"]["host"]
    assert all(create(pool, f"db{i}", group="db")["result"]["host"] == first for i in (1, 2))
    assert pool.post("/vms", json={"name": "x", "cpus": 1, "group": "nope"}).status_code == 404
    groups = {g["name"]: g for g in pool.get("/groups").json()["items"]}
    assert groups["web"]["vms"] == ["web0", "web1"] and pool.get("/vms/web0").json()["group"] == "web"
    assert pool.delete("/groups/web").status_code == 409


def test_vms_that_exist_join_and_leave_a_group_where_they_are_all_or_none(pool):
    for name, host in (("a1", "h1"), ("a2", "h1"), ("b1", "h2"), ("u", "h2")):
        create(pool, name, host=host)
    pool.post("/groups", json={"name": "apart", "policy": "anti-affinity"})
    pool.post("/groups", json={"name": "together", "policy": "affinity"})
    r = pool.patch("/groups/apart", json={"add": ["a1", "b1", "a2"]})    # a2 shares h1 with a1
    assert r.status_code == 409 and r.json()["detail"] == (
        "a2 cannot join anti-affinity group apart: a2 is on h1, where a1 of the anti-affinity group already "
        "runs; migrate it to another host first")
    assert pool.get("/groups/apart").json()["vms"] == []                   # none joined
    g = pool.patch("/groups/apart", json={"add": ["a1", "b1", "a1"]}).json()
    assert g["members"] == [{"vm": "a1", "host": "h1", "state": "running"},
                            {"vm": "b1", "host": "h2", "state": "running"}] and g["holds"]
    assert pool.get("/vms/a1").json()["group"] == "apart"
    listed = pool.get("/vms", params={"group": "apart", "name": "a"}).json()
    assert [(v["name"], v["group"]) for v in listed["items"]] == [("a1", "apart")] and listed["total"] == 1
    r = pool.post("/vms", json={"name": "a3", "cpus": 1, "memory": "256M", "group": "apart"})
    assert r.status_code == 409                                            # placement keeps the rule now
    r = pool.patch("/groups/together", json={"add": ["a2", "u"]})
    assert r.status_code == 409 and "u is on h2 and the affinity group's VMs are on h1; migrate it there" in r.text
    r = pool.patch("/groups/together", json={"add": ["a1"]})
    assert r.status_code == 409 and "a1 is in group apart" in r.json()["detail"]
    for body, code, words in (({}, 422, "name the VMs"), ({"add": ["nope"]}, 404, "no VM 'nope'"),
                              ({"remove": ["a2"]}, 409, "a2 is not in group apart"), ({"add": "a2"}, 422, "")):
        r = pool.patch("/groups/apart", json=body)
        assert r.status_code == code and words in r.json()["detail"], (body, r.text)
    assert pool.patch("/groups/nope", json={"add": ["a2"]}).status_code == 404
    # one call may swap members: b1 leaves, then a2... still meets a1 on h1
    r = pool.patch("/groups/apart", json={"remove": ["b1"], "add": ["a2"]})
    assert r.status_code == 409 and pool.get("/groups/apart").json()["vms"] == ["a1", "b1"]   # b1 stayed
    assert pool.delete("/groups/apart").status_code == 409
    r = pool.delete("/groups/apart")
    assert "take them out of it" in r.json()["detail"] and "a1, b1" in r.json()["detail"]
    g = pool.patch("/groups/apart", json={"remove": ["a1", "b1"]}).json()
    assert g["vms"] == [] and pool.get("/vms/a1").json()["group"] is None
    assert pool.delete("/groups/apart").status_code == 204


def test_a_group_broken_behind_its_back_says_so(pool):
    """A rule can break outside vpool (a VM moved with virsh); the group then says how."""
    create(pool, "p", host="h1")
    create(pool, "q", host="h2")
    pool.post("/groups", json={"name": "g", "policy": "anti-affinity"})
    pool.patch("/groups/g", json={"add": ["p", "q"]})
    with pool.cp.store.session() as s:                                   # as the reconciler writes a move
        s.execute(update(VM).where(VM.name == "q").values(host_id=pool.get("/hosts/h1").json()["id"]))
        s.commit()
    g = pool.get("/groups").json()["items"][0]
    assert (g["holds"], g["breach"]) == (False, "p and q share h1")
    create(pool, "r", host="h2")
    with pool.cp.store.session() as s:                                   # where q will be is not settled
        s.execute(update(VM).where(VM.name == "q").values(state="migrating"))
        s.commit()
    r = pool.patch("/groups/g", json={"add": ["r"]})
    assert r.status_code == 409 and "group g's VM q is being migrated" in r.json()["detail"]


def test_a_vm_is_resized_where_its_host_has_room(pool, monkeypatch):
    create(pool, "r", host="h1", memory="4G")                     # 1 vCPU / 4 GiB on h1 (8 GiB, 512 MiB kept)
    assert pool.get("/vms/r").json()["hotplug"] == {"max_cpus": 8, "max_memory_mib": 16384, "free_slots": 16,
                                                    "vcpus_live": True}
    drv = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"])
    uuid = pool.get("/vms/r").json()["uuid"]
    # running: it grows into the room its definition left (test:/// plugs vCPUs, not memory)
    for body, words in (({"cpus": 9}, "room for 8 vCPUs while it runs, not 9"), ({"memory": "2G"}, "give"),
                        ({"memory": "4200M"}, "memory block; ask for 4224 MiB"),
                        ({"memory": "7808M"}, "h1 is short 128 MiB RAM")):
        r = pool.post("/vms/r/resize", json=body)
        assert r.status_code == 409 and words in r.json()["detail"], (body, r.text)
    task = pool.task(pool.post("/vms/r/resize", json={"cpus": 2}))
    assert "the guest has 2 vCPUs and 4096 MiB now" in task["message"]
    assert drv.domain_info(uuid).cpus == 2 and pool.get("/vms/r").json()["cpus"] == 2
    task = pool.task(pool.post("/vms/r/resize", json={"memory": "4224M"}), expect="failed")
    assert "cannot resize the VM" in task["error"] and pool.get("/vms/r").json()["memory_mib"] == 4096  # put back
    task = pool.task(pool.post("/vms/r/resize", json={"cpus": 3, "disk": "3G"}), expect="failed")
    assert "cannot grow the VM's disk" in task["error"]          # test:/// cannot; the vCPU was plugged by then
    vm = pool.get("/vms/r").json()
    assert (vm["cpus"], vm["disk_gib"], drv.domain_info(uuid).cpus) == (3, 2, 3)  # counted at what it runs with
    pool.task(pool.post("/vms/r/stop", json={"force": True}))
    for body, words in (({}, "say what to change"), ({"cpus": 0}, "positive"), ({"memory": "lots"}, "memory"),
                        ({"cpus": 3, "memory": "4G"}, "already has"), ({"memory": "8G"}, "h1 is short")):
        r = pool.post("/vms/r/resize", json=body)
        assert r.status_code in (409, 422) and words in r.json()["detail"], (body, r.text)
    task = pool.task(pool.post("/vms/r/resize", json={"cpus": 3, "memory": "6G"}))
    assert task["result"] == {"vm": "r", "host": "h1", "cpus": 3, "memory_mib": 6144, "disk_gib": 2}
    assert (drv.domain_info(uuid).cpus, drv.domain_info(uuid).memory_mib) == (3, 6144)
    assert pool.get("/hosts/h1").json()["capacity"]["memory_mib"]["allocated"] == 6144  # booked on its host
    pool.task(pool.post("/vms/r/resize", json={"cpus": 1, "memory": "768M"}))
    assert (drv.domain_info(uuid).cpus, drv.domain_info(uuid).memory_mib) == (1, 768)
    with pytest.raises(HypervisorError, match="it stopped meanwhile"):  # checked for a running VM, found off
        drv.resize(uuid, 2, 1024, live=True)

    def refused(self, uuid, cpus, memory_mib, live):
        raise HypervisorError("cannot resize the VM: simulated failure")

    monkeypatch.setattr(type(drv), "resize", refused)
    task = pool.task(pool.post("/vms/r/resize", json={"cpus": 2}), expect="failed")
    assert "simulated failure" in task["error"]
    vm = pool.get("/vms/r").json()
    assert (vm["cpus"], vm["memory_mib"]) == (1, 768)              # the booking was put back
    # a VM made from a flavor keeps its name only while it keeps its size
    pool.post("/flavors", json={"name": "one", "cpus": 1, "memory": "512M", "disk": "1G"})
    create(pool, "f", flavor="one", cpus=None, memory=None, disk=None, start=False)
    monkeypatch.undo()
    pool.task(pool.post("/vms/f/resize", json={"memory": "1G"}))
    assert pool.get("/vms/f").json()["flavor"] is None


def test_a_stopped_vm_vpool_cannot_resize_is_refused_before_a_task(pool):
    create(pool, "n", host="h1", memory="1G", start=False)
    drv = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"])
    uuid = pool.get("/vms/n").json()["uuid"]
    dom = ET.fromstring(drv.conn.lookupByUUIDString(uuid).XMLDesc(0))
    cpu = dom.find("cpu") if dom.find("cpu") is not None else ET.SubElement(dom, "cpu")
    numa = ET.SubElement(cpu, "numa")                              # as an operator may define it with virsh edit
    for cell, cpus in enumerate(("0-3", "4-7")):
        ET.SubElement(numa, "cell", id=str(cell), cpus=cpus, memory="512", unit="MiB")
    drv.define(ET.tostring(dom, encoding="unicode"))
    tasks = len(pool.get("/tasks").json())
    r = pool.post("/vms/n/resize", json={"memory": "2G"})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert "VM n keeps its size: it defines 2 NUMA nodes" in r.json()["detail"]
    assert pool.get("/vms/n").json()["memory_mib"] == 1024 and len(pool.get("/tasks").json()) == tasks


def test_a_disk_grows_running_where_its_storage_has_room_and_never_shrinks(pool, monkeypatch):
    create(pool, "d", host="h1")                                   # a 2 GiB disk, running
    drv = pool.cp.connections.driver(pool.get("/hosts/h1").json()["id"])
    vm = pool.get("/vms/d").json()

    def disk():
        return pool.get("/vms/d").json()["disk_gib"], pool.get("/hosts/h1").json()["capacity"]["disk_gib"]

    usable = disk()[1]["usable"]
    for body, words in (({"disk": "1G"}, "never shrinks"), ({"disk": "2G"}, "already has"),
                        ({"disk": f"{usable + 1}G"}, "free room on the storage of h1"), ({"disk": "big"}, "disk"),
                        ({"cpus": 2, "memory": "512M", "disk": "3G"}, "cannot give vCPUs or memory back"),
                        ({"memory": "2G"}, "no room to add memory while it runs")):
        r = pool.post("/vms/d/resize", json=body)
        assert r.status_code in (409, 422) and words in r.json()["detail"], (body, r.text)
    assert disk()[0] == 2
    task = pool.task(pool.post("/vms/d/resize", json={"disk": "5G"}), expect="failed")
    assert "cannot grow the VM's disk" in task["error"]             # test:/// cannot; the booking goes back
    assert disk()[0] == 2 and disk()[1]["allocated"] == 2

    grown = []
    monkeypatch.setattr(type(drv), "grow_disk", lambda self, uuid, path, gib: grown.append((uuid, path, gib)))
    task = pool.task(pool.post("/vms/d/resize", json={"disk": "5G"}))
    assert task["result"]["disk_gib"] == 5 and "the guest sees 5 GiB now" in task["message"]
    assert grown == [(vm["uuid"], vm["disk_path"], 5)]
    assert disk()[0] == 5 and disk()[1]["allocated"] == 5          # booked on its storage
    drv.conn.lookupByUUIDString(vm["uuid"]).snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>")
    r = pool.post("/vms/d/resize", json={"disk": "6G"})
    assert r.status_code == 409 and "has 1 snapshot (s1), and a revert would bring back the smaller disk; delete it " \
        in r.json()["detail"], r.text
    assert len(grown) == 1 and disk()[0] == 5
    drv.conn.lookupByUUIDString(vm["uuid"]).destroy()
    drv.conn.lookupByUUIDString(vm["uuid"]).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    r = pool.post("/vms/d/resize", json={"disk": "6G"})
    assert r.status_code == 409 and "no domain on its host" in r.json()["detail"], r.text
