import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpool.placement import (FILTERS, ClusterState, HostRecord, Placement, PlacementPolicy, explain,
                             PlacementRequest, VMRecord, Workspace, place)

from placement_strategies import FLAVORS, clusters


def host(name, **kw):
    base = dict(cpus=8, memory_mib=16384, disk_gib=500, reserved_memory_mib=1024,
                reserved_disk_gib=10)
    base.update(kw)
    return HostRecord(name=name, **base)


def test_the_seam_example_places_on_the_only_host():
    hosts = [HostRecord(name="h1", cpus=8, memory_mib=16384, disk_gib=500,
                        cpu_ratio=4.0, ram_ratio=1.0, disk_ratio=1.0,
                        reserved_cpus=0, reserved_memory_mib=1024, reserved_disk_gib=10,
                        up=True, maintenance=False, tags=frozenset(), max_vms=None)]
    vms = [VMRecord(name="a", host="h1", cpus=2, memory_mib=1024, disk_gib=10,
                    groups=frozenset(), cpu_load=None)]
    state = ClusterState.from_records(hosts, vms)
    req = PlacementRequest(name="new", cpus=2, memory_mib=1024, disk_gib=10,
                           require_tags=frozenset(), forbid_tags=frozenset(),
                           affinity=frozenset(), anti_affinity=frozenset(),
                           soft_anti_affinity=frozenset(), host=None)
    result: Placement = place(state, req)
    assert (result.host, result.ok, result.message) == ("h1", True, "")


def test_refusal_counts_hosts_per_filter_in_order_and_names_the_best_candidate():
    state = ClusterState.from_records(
        [host("h1", memory_mib=2048), host("h2", memory_mib=1536 + 1024),
         host("h3", memory_mib=1024), host("h4", maintenance=True)])
    result = place(state, PlacementRequest(cpus=2, memory_mib=2048, disk_gib=10))
    assert not result.ok and result.host is None
    assert result.removed_by["CapacityFilter"] == 3
    assert result.removed_by["MaintenanceFilter"] == 1
    assert result.message == (
        "no host has room for 2 vCPU / 2048 MiB / 10 GiB: CapacityFilter removed 3 of 4 hosts, "
        "MaintenanceFilter 1; best candidate h2 is short 512 MiB RAM")


def test_capacity_uses_ratios_and_reservations():
    state = ClusterState.from_records(
        [host("h1", cpus=2, cpu_ratio=4.0, reserved_cpus=1)],
        [VMRecord("a", host="h1", cpus=6)])
    assert place(state, PlacementRequest(cpus=1)).ok           # 6 + 1 <= 2*4 - 1
    assert not place(state, PlacementRequest(cpus=2)).ok


def test_down_and_maintenance_hosts_get_nothing():
    state = ClusterState.from_records([host("h1", up=False), host("h2", maintenance=True)])
    result = place(state, PlacementRequest())
    assert result.removed_by["MaintenanceFilter"] == 2 and not result.ok


def test_pin_still_checks_capacity():
    state = ClusterState.from_records([host("h1"), host("h2", memory_mib=2048)])
    assert place(state, PlacementRequest(memory_mib=512, host="h2")).host == "h2"
    refused = place(state, PlacementRequest(memory_mib=4096, host="h2"))
    assert refused.removed_by["HostFilter"] == 1 and refused.removed_by["CapacityFilter"] == 1


def test_tags_max_vms_and_groups():
    state = ClusterState.from_records(
        [host("h1", tags=frozenset({"ssd"})), host("h2", max_vms=1), host("h3")],
        [VMRecord("web1", host="h1", groups=frozenset({"web"})),
         VMRecord("db1", host="h2", groups=frozenset({"db"}))])
    assert place(state, PlacementRequest(require_tags=frozenset({"ssd"}))).host == "h1"
    assert place(state, PlacementRequest(forbid_tags=frozenset({"ssd"}),
                                         affinity=frozenset({"db"}))).ok is False
    assert place(state, PlacementRequest(anti_affinity=frozenset({"web"}),
                                         forbid_tags=frozenset({"x"}))).host in ("h3",)
    assert place(state, PlacementRequest(affinity=frozenset({"web"}))).host == "h1"
    # an affinity group with no member yet does not restrict anything
    assert place(state, PlacementRequest(affinity=frozenset({"new"}))).ok


def test_storage_keeps_a_vm_where_its_disk_is():
    state = ClusterState.from_records([host("a1", storage="a"), host("b1", storage="b", memory_mib=65536),
                                       host("a2", storage="a")], [VMRecord("x", "a1", 1, 8192)])
    assert place(state, PlacementRequest(memory_mib=1024)).host == "b1"  # the emptiest, for a new VM
    assert place(state, PlacementRequest(memory_mib=1024, storage="a")).host == "a2"
    refused = place(state, PlacementRequest(memory_mib=1024, storage="c"))
    assert not refused.ok and refused.removed_by["StorageFilter"] == 3


def test_soft_anti_affinity_prefers_other_hosts_but_does_not_refuse():
    state = ClusterState.from_records([host("h1"), host("h2")],
                                      [VMRecord("w1", host="h2", groups=frozenset({"w"}))])
    assert place(state, PlacementRequest(soft_anti_affinity=frozenset({"w"}))).host == "h1"
    only = ClusterState.from_records([host("h2")], state.vms)
    assert place(only, PlacementRequest(soft_anti_affinity=frozenset({"w"}))).host == "h2"


def test_weigher_sign_chooses_spread_or_pack():
    state = ClusterState.from_records([host("h1"), host("h2")],
                                      [VMRecord("a", host="h1", memory_mib=8192)])
    spread = PlacementPolicy(weighers={"RAMWeigher": 1.0})
    pack = PlacementPolicy(weighers={"RAMWeigher": -1.0})
    req = PlacementRequest(memory_mib=1024)
    assert place(state, req, spread).host == "h2"
    assert place(state, req, pack).host == "h1"


def test_a_new_vm_goes_where_cpus_were_measured_least_busy():
    """Hosts alike by allocation: the one whose CPUs were measured less busy takes the VM, the new
    VM counted busy on all its vCPUs; a host not measured counts as fully busy."""
    vms = [VMRecord("a", host="h1", cpus=2, memory_mib=2048), VMRecord("b", host="h2", cpus=2, memory_mib=2048)]
    req = PlacementRequest(cpus=2, memory_mib=1024)
    assert place(ClusterState.from_records([host("h1"), host("h2")], vms), req).host == "h1"  # a tie: the first
    busy = ClusterState.from_records([host("h1", cpu_busy=0.8), host("h2", cpu_busy=0.3)], vms)
    assert place(busy, req).host == "h2"
    assert place(busy, req, PlacementPolicy(weighers={"RAMWeigher": 1.0})).host == "h1"  # not weighed: a tie
    # differences under a twentieth of the CPUs are noise: the tie stands
    assert place(ClusterState.from_records([host("h1", cpu_busy=0.31), host("h2", cpu_busy=0.3)], vms),
                 req).host == "h1"
    assert place(ClusterState.from_records([host("h1"), host("h2", cpu_busy=0.9)], vms), req).host == "h2"
    # in a batch, each VM placed counts its vCPUs busy where it went
    work = Workspace(busy)
    work.add(1, req.demand)
    assert work.cpu_busy.tolist() == pytest.approx([0.8, 0.3 + 2 / 8])
    assert Workspace(ClusterState.from_records([host("h1")])).cpu_busy is None


def test_unknown_policy_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown filter 'NoSuchFilter'; known: HostFilter"):
        PlacementPolicy(filters=("NoSuchFilter",))
    with pytest.raises(ValueError, match="unknown weigher"):
        PlacementPolicy(weighers={"Nope": 1.0})


def test_records_must_reference_known_hosts():
    with pytest.raises(ValueError, match="VM 'a' names unknown host 'hx'"):
        ClusterState.from_records([host("h1")], [VMRecord("a", host="hx")])


@settings(max_examples=60, deadline=None)
@given(clusters(), st.lists(st.tuples(st.sampled_from(FLAVORS),
                                      st.sampled_from(["web", "db", "cache", None])),
                            min_size=1, max_size=15))
def test_no_decision_puts_a_host_above_capacity_or_breaks_anti_affinity(state, asks):
    """Decisions one after another, each committed, as the core's vm create makes them."""
    work = Workspace(state)
    for i, ((cpus, mem, disk), group) in enumerate(asks):
        groups = frozenset() if group is None else frozenset({group})
        req = PlacementRequest(f"n{i}", cpus=cpus, memory_mib=mem, disk_gib=disk,
                               anti_affinity=groups)
        result = place(work, req)
        if not result.ok:
            assert result.message.startswith("no host has room for")
            assert sum(result.removed_by.values()) == state.n_hosts
            continue
        h = state.host_index[result.host]
        assert (work.used[h] + req.demand <= work.usable[h] + 1e-9).all()
        assert work.accepts_vms[h] and work.vm_count[h] < work.max_vms[h]
        for g in groups:
            assert work.group_members(g)[h] == 0
        work.add(h, req.demand, req.groups)


def test_explain_gives_each_host_its_verdict_and_the_weights_behind_the_choice():
    """What `vm create --dry-run` shows: the chosen host first with each weigher's part, then the
    other candidates best first, then the hosts filters removed, each by the first filter that
    did, and a host without room says what it lacks."""
    hosts = [host("full", memory_mib=4096), host("busy", cpu_busy=0.9), host("idle", cpu_busy=0.1),
             host("parked", maintenance=True)]
    state = ClusterState.from_records(hosts, [VMRecord("a", host="full", memory_mib=2048)])
    req = PlacementRequest("new", cpus=2, memory_mib=2048)
    out = explain(state, req)
    assert out.placement == place(state, req)
    assert [(v.host, v.removed_by) for v in out.hosts] == [
        ("idle", None), ("busy", None), ("full", "CapacityFilter"), ("parked", "MaintenanceFilter")]
    idle, busy, full, parked = out.hosts
    assert idle.weights["MeasuredCPUWeigher"] == 3.0 and busy.weights["MeasuredCPUWeigher"] == 0.0
    assert idle.total == pytest.approx(sum(idle.weights.values())) and idle.total > busy.total
    assert full.why == "short 1024 MiB RAM" and full.weights == {} and full.total is None
    assert parked.why == ""
    nowhere = explain(state, PlacementRequest("big", memory_mib=64 * 1024))
    assert nowhere.placement.host is None and nowhere.placement.message.startswith("no host has room")
    assert {v.removed_by for v in nowhere.hosts} == {"CapacityFilter"}  # the first filter that removes it
    tagged = ClusterState.from_records([host("a", tags=frozenset({"old"})), host("b"), host("c")])
    ask = PlacementRequest("t", memory_mib=512, require_tags=frozenset({"ssd"}), forbid_tags=frozenset({"old"}))
    assert [v.why for v in explain(tagged, ask).hosts] == ["tagged old; lacks tag ssd", "lacks tag ssd",
                                                           "lacks tag ssd"]
    assert explain(tagged, ask, tag_words={"old": "retiring"}).hosts[0].why == "retiring; lacks tag ssd"


@given(clusters(), st.sampled_from(FLAVORS), st.sampled_from(["web", "db", None]))
def test_explain_agrees_with_place(state, flavor, group):
    """The explanation's first candidate is the host `place` chose, candidates are ordered by
    their totals, and every removed host fails the filter named for it."""
    cpus, mem, disk = flavor
    req = PlacementRequest("n", cpus=cpus, memory_mib=mem, disk_gib=disk,
                           anti_affinity=frozenset() if group is None else frozenset({group}))
    out = explain(state, req)
    assert out.placement == place(state, req)
    assert sorted(v.host for v in out.hosts) == sorted(state.host_names)
    ranked = [v for v in out.hosts if v.removed_by is None]
    assert (ranked[0].host if ranked else None) == out.placement.host
    assert [v.total for v in ranked] == sorted((v.total for v in ranked), reverse=True)
    assert all(v.removed_by is not None for v in out.hosts[len(ranked):])
    masks = {name: FILTERS[name](state, req) for name in PlacementPolicy().filters}
    for v in out.hosts[len(ranked):]:
        i, filters = state.host_names.index(v.host), list(masks)
        passed = [masks[f] is None or masks[f][i] for f in filters]
        assert not passed[filters.index(v.removed_by)] and all(passed[:filters.index(v.removed_by)])
