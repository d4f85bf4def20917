"""Migration requests on simulated hosts (libvirt's test driver): what is refused changes
nothing, a booking holds the destination's room, and a migration that fails leaves the VM
where it was. No guest boots here; tests/migration/test_live.py has the real thing."""

import pytest
from sqlalchemy import select

from tests.core.conftest import eventually
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.services import migration
from vpool.services.migration import MigrationService
from vpool.store.migration_tables import Migration


@pytest.fixture
def pool(api, tmp_path):
    api.add_sim_host(tmp_path, "h1", cpus=8, memory_mib=8192)
    api.add_sim_host(tmp_path, "h2", cpus=8, memory_mib=4096)  # usable 3584 MiB after the 512 MiB reserve
    api.task(api.post("/vms", json={"name": "a", "cpus": 1, "memory": "1G", "disk": "1G", "host": "h1"}))
    return api


def _nothing_changed(api, tasks_before: int) -> None:
    assert api.get("/tasks").json()["total"] == tasks_before
    assert api.get("/vms/a/migrations").json()["total"] == 0
    vm = api.get("/vms/a").json()
    assert (vm["host"], vm["state"]) == ("h1", "running")
    assert api.get("/hosts/h2").json()["capacity"]["memory_mib"]["allocated"] == 0


@pytest.mark.parametrize("body, status, words", [
    ({"to": "h1"}, 422, "already runs on h1"),
    ({"to": "nowhere"}, 404, "no host 'nowhere'"),
    ({"to": "h2", "bandwidth_mib_s": 0}, 422, "bandwidth"),
    ({"to": "h2", "max_downtime_ms": 10**6}, 422, "downtime"),
    ({"to": "h2", "sideways": True}, 422, "sideways"),
    ({"to": "h2"}, 409, "h2 cannot see its disk"),  # test-driver hosts share no storage
])
def test_bad_requests_change_nothing(pool, body, status, words):
    before = pool.get("/tasks").json()["total"]
    r = pool.post("/vms/a/migrate", json=body)
    assert r.status_code == status, r.text
    assert words in r.text
    _nothing_changed(pool, before)


def test_no_room_is_refused_with_the_reason(pool):
    before = pool.get("/tasks").json()["total"]
    pool.patch("/hosts/h2", json={"reserved_memory_mib": 3500})
    r = pool.post("/vms/a/migrate", json={})
    assert r.status_code == 409
    assert "no host has room" in r.json()["detail"] and "h2 is short" in r.json()["detail"]
    _nothing_changed(pool, before)


def test_a_stopped_vm_is_not_live_migrated(pool):
    pool.task(pool.post("/vms/a/stop", json={"force": True}))
    before = pool.get("/tasks").json()["total"]
    r = pool.post("/vms/a/migrate", json={"to": "h2"})
    assert r.status_code == 409 and "shutoff" in r.json()["detail"]
    assert pool.get("/tasks").json()["total"] == before


def test_a_booking_holds_the_destinations_room(pool):
    with pool.cp.store.session() as s:
        s.add(Migration(vm_name="x", vm_uuid="x", source="h1", destination="h2", state="running",
                        destination_host_id=pool.get("/hosts/h2").json()["id"], cpus=1, memory_mib=3000, disk_gib=1))
        s.commit()
    assert pool.get("/hosts/h2").json()["capacity"]["memory_mib"]["allocated"] == 3000
    r = pool.post("/vms", json={"name": "b", "memory": "1G", "disk": "1G", "host": "h2"})
    assert r.status_code == 409 and "short" in r.json()["detail"]
    with pool.cp.store.session() as s:
        s.scalar(select(Migration).where(Migration.vm_name == "x")).state = "succeeded"
        s.commit()
    pool.task(pool.post("/vms", json={"name": "b", "memory": "1G", "disk": "1G", "host": "h2"}))


def test_a_failed_migration_leaves_the_vm_where_it_was(pool):
    # Copy-storage needs no shared disk, so the request is accepted; the test driver cannot migrate.
    task = pool.task(pool.post("/vms/a/migrate", json={"to": "h2", "copy_storage": True}), expect="failed")
    assert "still runs on h1" in task["error"]
    vm = pool.get("/vms/a").json()
    assert (vm["host"], vm["state"]) == ("h1", "running")
    last = pool.get("/vms/a/migrations").json()["items"][0]
    assert (last["state"], last["source"], last["destination"]) == ("failed", "h1", "h2") and last["error"]
    assert pool.get("/hosts/h2").json()["capacity"]["memory_mib"]["allocated"] == 0  # the booking ended


def test_a_copied_disk_goes_into_the_destinations_own_pool_never_onto_itself(api, tmp_path):
    """Into the pool whose room the destination counts; a host that already sees the disk would
    have the copy written over the disk itself, so it is not a destination for one."""
    for h in ("n1", "n2"):
        api.add_sim_host(tmp_path, h, cpus=8, memory_mib=8192, storage="nas")
    api.add_sim_host(tmp_path, "own", cpus=4, memory_mib=4096)
    api.add_sim_host(tmp_path, "apart", cpus=64, memory_mib=65536, network="bridge:lab0")  # another network
    api.task(api.post("/vms", json={"name": "a", "memory": "1G", "disk": "1G", "host": "n1"}))
    before = api.get("/tasks").json()["total"]
    r = api.post("/vms/a/migrate", json={"to": "n2", "copy_storage": True})
    assert r.status_code == 409 and r.json()["detail"] == (
        "cannot copy a's disk: n2 already sees the storage it is on; migrate without --copy-storage, or name "
        "another of the destination's pools with --storage-pool"), r.text
    r = api.post("/vms/a/migrate", json={"to": "n2", "copy_storage": True, "storage_pool": "default-pool"})
    assert r.status_code == 409, r.text                       # naming that pool changes nothing
    assert api.get("/tasks").json()["total"] == before and api.get("/vms/a/migrations").json()["total"] == 0
    r = api.post("/vms/a/migrate", json={"copy_storage": True})  # n2 is emptier, but sees the disk
    assert r.status_code == 202 and r.json()["params"]["to"] == "own", r.text
    assert r.json()["params"]["storage_pool"] == api.get("/hosts/own").json()["storage_pool"]
    assert eventually(lambda: api.get(f"/tasks/{r.json()['id']}").json()["finished_at"])  # the test driver fails it
    r = api.post("/vms/a/migrate", json={"to": "n2", "copy_storage": True, "storage_pool": "other"})
    assert r.status_code == 202 and r.json()["params"]["storage_pool"] == "other", r.text  # another pool of n2's
    assert eventually(lambda: api.get(f"/tasks/{r.json()['id']}").json()["finished_at"])
    api.task(api.post("/vms", json={"name": "big", "memory": "3G", "disk": "1G", "host": "own"}))
    r = api.post("/vms/a/migrate", json={"copy_storage": True})  # only n2 has room now
    assert r.status_code == 409 and "the hosts with room (such as n2) already see" in r.json()["detail"], r.text


def test_policy_reads_and_changes_and_refuses_nonsense(api):
    assert api.get("/migrations/policy").json()["postcopy"] == "auto"
    assert api.patch("/migrations/policy", json={"postcopy_after_s": 30}).json()["postcopy_after_s"] == 30
    for bad in ({"postcopy": "sometimes"}, {"nope": 1}, {"max_incoming": 0}, {"auto_converge": "maybe"}):
        r = api.patch("/migrations/policy", json=bad)
        assert r.status_code == 422, (bad, r.text)
    assert api.patch("/migrations/policy", json={"nope": 1}).json()["detail"].startswith(
        "unknown migration setting nope; known: ")
    assert api.patch("/migrations/policy", json={"nope": 1, "nah": 2}).json()["detail"].startswith(
        "unknown migration settings nah, nope; known: ")
    policy = api.get("/migrations/policy").json()
    assert (policy["postcopy"], policy["postcopy_after_s"], policy["max_incoming"]) == ("auto", 30, 2)


def _migration_of_a(pool, state: str, with_snapshot: bool) -> Migration:
    """A migration row of VM a from h1 to h2; with_snapshot: a snapshot s1 of a, set aside in it
    as a migration does (the test driver has no metadata-only delete, so s1 is deleted outright)."""
    h1, h2 = (pool.get(f"/hosts/{h}").json()["id"] for h in ("h1", "h2"))
    with pool.cp.store.session() as s:
        vm = pool.cp.vms.get(s, "a")
    carried = None
    if with_snapshot:
        dom = pool.cp.connections.driver(h1).conn.lookupByUUIDString(vm.uuid)
        snapshot = dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
        carried = {"snapshots": [{"name": "s1", "xml": snapshot.getXMLDesc(0), "current": True}], "checkpoints": []}
        snapshot.delete(0)
    return Migration(vm_id=vm.id, vm_name="a", vm_uuid=vm.uuid, source="h1", destination="h2", state=state,
                     source_host_id=h1, destination_host_id=h2, cpus=1, memory_mib=1024, disk_gib=1, carried=carried)


def _snapshots_of_a(pool) -> list[tuple[str, bool]]:
    return [(x["name"], x["current"]) for x in pool.get("/vms/a/snapshots").json()["snapshots"]]


def test_a_restart_settles_the_bookings_it_finds(pool, monkeypatch):
    """A control plane that died mid-migration left a booking and a VM marked migrating: the
    next one ends the booking, defines again the snapshots it had set aside, and hands the VM
    back to the reconciler."""
    row = _migration_of_a(pool, "running", with_snapshot=True)
    with pool.cp.store.session() as s:
        s.add(row)
        pool.cp.vms.get(s, "a").state = "migrating"
        s.commit()
    assert pool.get("/hosts/h2").json()["capacity"]["memory_mib"]["allocated"] == 1024
    # set aside while it moves, and listed from the booking meanwhile
    assert _snapshots_of_a(pool) == [("s1", True)]
    # What the hosts would answer (a simulated host's state lives in the control plane's own
    # connection, which the recovery's fresh connections do not share): it runs on its source.
    monkeypatch.setattr(migration, "source_job_abort", lambda uri, uuid: "running")
    monkeypatch.setattr(migration, "_state_at", lambda uri, uuid: "missing")
    assert MigrationService(pool.cp, pool.cp.migrations.busy).recover() == ["a"]
    assert pool.get("/hosts/h2").json()["capacity"]["memory_mib"]["allocated"] == 0
    last = pool.get("/vms/a/migrations").json()["items"][0]
    assert last["state"] == "failed" and "restarted" in last["error"] and "snapshots" not in last["error"]
    assert _snapshots_of_a(pool) == [("s1", True)]
    assert eventually(lambda: pool.get("/vms/a").json()["state"] == "running", timeout=15)  # the reconciler's again
    assert pool.get("/vms/a").json()["host"] == "h1"


def test_snapshots_an_ended_migration_kept_are_defined_once_the_vm_is_found(pool):
    """A migration that ended without knowing where the VM was keeps its snapshots' metadata;
    once the sync has found the VM, they are defined where it is, once."""
    with pool.cp.store.session() as s:
        s.add_all([_migration_of_a(pool, "failed", with_snapshot=True), _migration_of_a(pool, "failed", False)])
        s.commit()
    assert _snapshots_of_a(pool) == []
    assert pool.cp.migrations.put_back_carried() == ["a"]
    assert _snapshots_of_a(pool) == [("s1", True)]
    assert pool.cp.migrations.put_back_carried() == []


def test_the_disk_copy_a_lost_vm_does_not_use_goes_once_it_is_found(pool):
    """A copy-storage migration that could not tell where the VM went (its source's libvirtd
    killed mid-copy, in the lab) leaves the disk on both hosts. Once the sync has found the VM,
    the copy it does not use goes; found on the destination, the copy there is its disk; deleted
    meanwhile, both go."""
    h1, h2 = (pool.get(f"/hosts/{h}").json() for h in ("h1", "h2"))
    d1, d2 = (pool.cp.connections.driver(h["id"]) for h in (h1, h2))
    vm = pool.get("/vms/a").json()

    def lost(disk: str) -> str:
        """A migration of a that ended undecided; the destination's copy."""
        copy = d2.create_disk(h2["storage_pool"], "vm-a.qcow2", 1)
        row = _migration_of_a(pool, "failed", False)
        row.copy_storage = True
        row.undecided_disks = {"source": [h1["id"], disk, h1["storage"]],
                               "destination": [h2["id"], copy, h2["storage"]]}
        assert migration.describe_row(row)["undecided_disks"] == {"h1": disk, "h2": copy}
        with pool.cp.store.session() as s:
            s.add(row)
            s.commit()
        return copy

    copy = lost(vm["disk_path"])
    assert eventually(lambda: not d2.volume_exists(copy), timeout=15)  # a runs on h1, as before
    assert d1.volume_exists(vm["disk_path"])
    assert pool.get("/vms/a/migrations").json()["items"][0]["undecided_disks"] == {}
    assert pool.get("/vms/a").json()["disk_path"] == vm["disk_path"]

    # It turns out on h2 this time: h1 no longer has it.
    dom = d1.conn.lookupByUUIDString(vm["uuid"])
    xml = dom.XMLDesc(0)
    dom.destroy()
    dom.undefine()
    d2.conn.defineXML(xml).create()
    assert eventually(lambda: pool.get("/vms/a").json()["host"] == "h2", timeout=15)
    copy = lost(vm["disk_path"])
    assert eventually(lambda: not d1.volume_exists(vm["disk_path"]), timeout=15)
    moved = pool.get("/vms/a").json()
    assert (moved["disk_path"], moved["storage"]) == (copy, h2["storage"]) and d2.volume_exists(copy)

    # Deleted before it was found: its delete takes the disk it was known by, the loop the other.
    other = d1.create_disk(h1["storage_pool"], "vm-a.qcow2", 1)
    pool.task(pool.delete("/vms/a"))
    assert not d2.volume_exists(copy)
    with pool.cp.store.session() as s:
        s.add(Migration(vm_id=None, vm_name="a", vm_uuid=vm["uuid"], source="h2", destination="h1", state="failed",
                        source_host_id=h2["id"], destination_host_id=h1["id"], cpus=1, memory_mib=1024, disk_gib=1,
                        copy_storage=True, undecided_disks={"source": [h2["id"], copy, h2["storage"]],
                                                            "destination": [h1["id"], other, h1["storage"]]}))
        s.commit()
    assert eventually(lambda: not d1.volume_exists(other), timeout=15)


def test_placement_for_a_migration_honours_anti_affinity(api, tmp_path):
    for h in ("g1", "g2", "g3"):
        api.add_sim_host(tmp_path, h, cpus=8, memory_mib=8192, storage="nas")
    api.post("/groups", json={"name": "apart", "policy": "anti-affinity"})
    for name, host in (("x", "g1"), ("y", "g2")):
        api.task(api.post("/vms", json={"name": name, "memory": "512M", "host": host, "group": "apart"}))
    # g2 has the most room left after g3 only by name order; anti-affinity must rule it out.
    api.task(api.post("/vms", json={"name": "filler", "memory": "4G", "host": "g3"}))
    r = api.post("/vms/x/migrate", json={})
    # The simulated hosts carry one storage's marker but share no disk, so the request stops at the
    # last check, naming the host placement chose.
    assert r.status_code == 409 and r.json()["detail"].startswith("g3 does not see"), r.text
    r = api.post("/vms/x/migrate", params={"dry_run": "true"}, json={})  # and a dry run says the same
    assert (r.json()["host"], r.json()["message"]) == (None, api.post("/vms/x/migrate", json={}).json()["detail"])
    r = api.post("/vms/x/migrate", json={"to": "g2"})
    assert r.status_code == 409 and "AntiAffinity" in r.json()["detail"], r.text


def test_a_vm_goes_only_to_hosts_with_its_network(pool, tmp_path):
    """A live migration keeps the VM's network card as it is: libvirt on a host without that
    network failed it half-way ("no network with matching name")."""
    pool.add_sim_host(tmp_path, "h3", cpus=8, memory_mib=8192, network="bridge:lab0")
    before = pool.get("/tasks").json()["total"]
    r = pool.post("/vms/a/migrate", json={"to": "h3", "copy_storage": True})
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith("cannot migrate a: its network card is on network:default on h1, which "
                                         "h3 does not offer (guests there are on bridge:lab0)")
    pool.task(pool.post("/vms", json={"name": "b", "cpus": 1, "memory": "3G", "disk": "1G", "host": "h2"}))
    r = pool.post("/vms/a/migrate", json={"copy_storage": True})  # h2 is now full: only h3 has room
    assert r.status_code == 409 and "the hosts with room (such as h3) do not offer" in r.json()["detail"], r.text
    assert pool.get("/tasks").json()["total"] == before + 1  # b's create only
    assert pool.get("/vms/a/migrations").json()["total"] == 0
    pool.task(pool.delete("/vms/b"))
    r = pool.post("/vms/a/migrate", json={"copy_storage": True})
    assert r.status_code == 202 and r.json()["params"]["to"] == "h2"  # placement alone would pick h3, the emptier
    assert eventually(lambda: pool.get(f"/tasks/{r.json()['id']}").json()["finished_at"])  # the test driver fails it


def test_a_dry_run_says_where_the_vm_would_go_and_why_and_moves_nothing(api, tmp_path):
    """POST /vms/{vm}/migrate?dry_run=true: each host with its reason in an operator's words (its
    own host, another network, room short), the host migrate would then choose, and, when none
    will do, migrate's own refusal; nothing is booked. Refused as migrate refuses."""
    for h, memory, network in (("s1", 8192, None), ("s2", 8192, None), ("s3", 2048, None),
                               ("far", 65536, "bridge:lab0")):
        api.add_sim_host(tmp_path, h, cpus=8, memory_mib=memory, network=network)
    api.task(api.post("/vms", json={"name": "a", "memory": "2G", "disk": "1G", "host": "s1"}))
    before = api.get("/tasks").json()["total"]
    r = api.post("/vms/a/migrate", params={"dry_run": "true"}, json={"copy_storage": True})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["vm"], answer["host"], answer["message"]) == ("a", "s2", "")
    assert {h["host"]: (h["removed_by"], h["why"]) for h in answer["hosts"]} == {
        "s2": (None, None), "s1": ("TagFilter", "the VM's own host"),
        "s3": ("CapacityFilter", "short 512 MiB RAM"), "far": ("TagFilter", "guests there are on another network")}
    assert answer["hosts"][0]["host"] == "s2"
    assert api.get("/tasks").json()["total"] == before and api.get("/vms/a/migrations").json()["total"] == 0
    # without the disk copied, no host sees it: migrate's own words for why
    r = api.post("/vms/a/migrate", params={"dry_run": "true"}, json={})
    assert r.status_code == 200 and r.json()["host"] is None
    assert r.json()["message"] == ("cannot migrate a: the hosts with room (such as s2) cannot see its disk, which "
                                   "is on other storage; migrate with --copy-storage")
    assert r.json()["message"] == api.post("/vms/a/migrate", json={}).json()["detail"]
    for body, status in (({"to": "s1"}, 422), ({"to": "nope"}, 404), ({"to": "far", "copy_storage": True}, 409)):
        r = api.post("/vms/a/migrate", params={"dry_run": "true"}, json=body)
        assert r.status_code == status, (body, r.text)
    r = api.post("/vms/a/migrate", params={"dry_run": "true"}, json={"to": "s3", "copy_storage": True})
    assert r.json()["host"] is None and r.json()["message"].startswith("cannot migrate a: no host has room")
    assert api.get("/tasks").json()["total"] == before and api.get("/vms/a/migrations").json()["total"] == 0
    assert api.get("/vms/a").json()["state"] == "running"


def test_a_maintenance_dry_run_books_each_vm_where_the_evacuation_would(api, tmp_path, monkeypatch):
    """POST /hosts/{h}/maintenance?dry_run=true: each VM placed as the evacuation would, one after
    another, each booking the room the ones before it took; why any would stay; nothing changes."""
    for h, memory in (("e1", 16384), ("e2", 4096), ("e3", 4096)):  # 3584 MiB usable on e2 and e3
        api.add_sim_host(tmp_path, h, cpus=8, memory_mib=memory, storage="nas")
    for name, memory in (("a", "2G"), ("b", "2G"), ("c", "6G")):
        api.task(api.post("/vms", json={"name": name, "memory": memory, "disk": "1G", "host": "e1"}))
    before = api.get("/tasks").json()["total"]
    r = api.post("/hosts/e1/maintenance", params={"dry_run": "true"}, json={"mode": "on"})
    assert r.status_code == 200, r.text  # simulated hosts share no files: each move stops where migrate would
    assert r.json()["moved"] == {} and "e2 does not see a's disk" in r.json()["not_moved"]["a"]
    monkeypatch.setattr(LibvirtDriver, "volume_exists", lambda self, path: True)
    answer = api.post("/hosts/e1/maintenance", params={"dry_run": "true"}, json={"mode": "on"}).json()
    assert answer["moved"] == {"a": "e2", "b": "e3"}  # e2 is the first of two alike; a's booking sends b on
    assert answer["not_moved"]["c"].startswith("cannot migrate c: no host has room for 1 vCPU / 6144 MiB")
    assert answer["vms"] == 3
    r = api.post("/hosts/e1/maintenance", params={"dry_run": "true"}, json={"mode": "off"})
    assert r.status_code == 422 and "off moves none" in r.json()["detail"]
    assert api.get("/tasks").json()["total"] == before and not api.get("/hosts/e1").json()["maintenance"]
    assert all(api.get(f"/vms/{vm}/migrations").json()["total"] == 0 for vm in "abc")
