import re
from dataclasses import replace

import numpy as np

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from vpool.placement import ClusterState, HostRecord, VMRecord
from vpool.placement.capacity import DEFAULT_FLAVORS, DISKS, _fill, _KeepsHA, capacity, parse_mix
from vpool.placement.ha import ha_admission
from vpool.placement.place import DEFAULT_POLICY

from placement_strategies import clusters, mirrored_clusters


def pool(n_hosts, vms_per_host, memory=32768, vm_memory=4096):
    hosts = [HostRecord(f"h{i}", cpus=32, memory_mib=memory, disk_gib=1000) for i in range(n_hosts)]
    vms = [VMRecord(f"v{i}-{j}", f"h{i}", 1, vm_memory, 10)
           for i in range(n_hosts) for j in range(vms_per_host)]
    return ClusterState.from_records(hosts, vms)


def test_n_plus_one_holds_when_the_others_have_room():
    report = ha_admission(pool(4, 4), failures=1)       # 16 GiB used of 32 on each host
    assert report.ok and report.exhaustive and report.sets_tried == 4
    assert report.headroom["memory"] == pytest.approx(1 - 16 * 4096 / (3 * 32768))


def test_n_plus_one_fails_and_names_the_bottlenecks():
    report = ha_admission(pool(3, 7), failures=1)       # 28 of 32 GiB: room for 2 of 7
    assert not report.ok and set(report.bottlenecks) == {"h0", "h1", "h2"}
    assert len(report.unplaced) == 5 and "5 VMs cannot restart" in report.message


def test_anti_affinity_is_kept_when_restarting():
    hosts = [HostRecord(f"h{i}", cpus=8, memory_mib=65536) for i in range(2)]
    vms = [VMRecord("a", "h0", groups=frozenset({"db"})),
           VMRecord("b", "h1", groups=frozenset({"db"}))]
    state = ClusterState.from_records(hosts, vms, {"db": "anti-affinity"})
    assert not ha_admission(state).ok


def test_a_vm_restarts_only_where_its_disk_is():
    hosts = [HostRecord("a1", cpus=8, memory_mib=8192, storage="a"), HostRecord("a2", cpus=8, memory_mib=8192, storage="a"),
             HostRecord("b1", cpus=8, memory_mib=65536, storage="b")]
    vms = [VMRecord("x", "a1", 1, 6144), VMRecord("y", "a2", 1, 6144)]
    report = ha_admission(ClusterState.from_records(hosts, vms))
    # b1 has room for both, but neither disk is there; a1 and a2 cannot take each other's
    assert not report.ok and set(report.bottlenecks) == {"a1", "a2"}
    shared = ClusterState.from_records([replace(h, storage="") for h in hosts], vms)
    assert ha_admission(shared).ok
    # a disk copied to a1's own pool restarts nowhere else, even on shared storage
    own = ClusterState.from_records(shared.hosts, [replace(vms[0], storage="a1-private"), vms[1]])
    assert ha_admission(own).unplaced == ("x",)


def test_a_drbd_vm_restarts_on_its_mirror_or_not_at_all():
    hosts = [HostRecord(f"h{i}", cpus=16, memory_mib=32768, disk_gib=500) for i in range(3)]
    vm = VMRecord("db", "h0", 4, 16384, 400, secondary="h1", migratable=False)
    roomy = ClusterState.from_records(hosts, [vm])
    assert ha_admission(roomy).ok     # h1 holds the copy (no second 400 GiB) and the memory
    assert ha_admission(roomy, failures=2).unplaced == ("db",)   # both copies gone
    full = ClusterState.from_records(hosts, [vm, VMRecord("big", "h1", 4, 24576, 10)])
    report = ha_admission(full)
    assert not report.ok and report.worst == ("h0",) and report.unplaced == ("db",)


def test_a_drbd_vm_fails_over_to_its_mirror_even_beside_a_group_member():
    # as a Ganeti failover does: the mirror is its only host, and staying down protects nothing
    hosts = [HostRecord(f"h{i}", cpus=16, memory_mib=32768, disk_gib=500) for i in range(3)]
    vms = [VMRecord("db1", "h0", 2, 4096, 50, groups=frozenset({"db"}), secondary="h1", migratable=False),
           VMRecord("db2", "h1", 2, 4096, 50, groups=frozenset({"db"}), secondary="h2", migratable=False)]
    assert ha_admission(ClusterState.from_records(hosts, vms, {"db": "anti-affinity"})).ok
    # a VM that could go anywhere still keeps apart, and stays down when it cannot
    shared = [replace(v, secondary=None, migratable=True) for v in vms] + [
        VMRecord("db3", "h2", 2, 4096, 50, groups=frozenset({"db"}))]
    assert not ha_admission(ClusterState.from_records(hosts, shared, {"db": "anti-affinity"})).ok


def test_n_plus_one_tries_every_host_however_large_the_pool():
    hosts = [HostRecord(f"h{i}", cpus=8, memory_mib=16384, disk_gib=100) for i in range(2_001)]
    report = ha_admission(ClusterState.from_records(hosts, [VMRecord("a", "h7", 2, 4096, 10)]))
    assert report.ok and report.exhaustive and report.sets_tried == 2_001
    assert report.message.startswith("N+1 holds whichever 1 host fails: ")


def test_too_many_failures_for_the_pool():
    assert "cannot survive 3 failures" in ha_admission(pool(3, 0), failures=3).message


def test_capacity_counts_room_and_keeps_n_plus_one():
    report = capacity(pool(4, 0, vm_memory=4096), {"medium": 1})
    assert report.fits_without_ha == 32                 # 8 medium (4 GiB) per 32 GiB host
    assert report.fits == 24                            # any host's 8 must fit on the others
    assert report.by_flavor == {"medium": 24}
    assert "breaks N+1" in report.limited_by


def test_capacity_says_when_its_answer_is_a_lower_bound():
    # N+2 stops at the first VM that breaks it, without trying other hosts for that VM
    report = capacity(pool(4, 0, vm_memory=4096), {"medium": 1}, failures=2)
    assert report.fits == 16 and report.fits_without_ha == 32
    assert report.limited_by.endswith("(a lower bound: other hosts are tried for that VM only "
                                      "for N+1 on pools of up to 2,000 hosts)")
    assert "lower bound" not in capacity(pool(4, 0, vm_memory=4096), {"medium": 1}).limited_by


def test_capacity_follows_the_mix_proportions():
    report = capacity(pool(8, 0), {"small": 3, "large": 1}, failures=0)
    assert report.by_flavor["small"] == pytest.approx(3 * report.by_flavor["large"], abs=3)


def test_mix_errors_are_one_line():
    with pytest.raises(ValueError, match="unknown flavor 'huge' in the mix; known: tiny"):
        capacity(pool(2, 0), {"huge": 1})
    with pytest.raises(ValueError, match="must be a number"):
        parse_mix("small=lots")
    assert parse_mix("medium=3, large") == {"medium": 3.0, "large": 1.0}


def test_capacity_puts_shared_disks_on_no_host():
    hosts = [HostRecord(f"h{i}", cpus=64, memory_mib=65536, disk_gib=100) for i in range(3)]
    state = ClusterState.from_records(hosts, [])
    assert capacity(state, {"medium": 1}, failures=0).fits == 3      # 60 GiB disk: one per host
    shared = capacity(state, {"medium": 1}, failures=0, disks="shared")
    assert shared.fits == 48 and shared.disks == "shared"            # 16 x 4 GiB per host


def test_capacity_mirrors_each_disk_on_a_second_host():
    hosts = [HostRecord(f"h{i}", cpus=64, memory_mib=65536, disk_gib=250) for i in range(4)]
    state = ClusterState.from_records(hosts, [])
    report = capacity(state, {"medium": 1}, failures=0, disks="mirrored")
    # 4 x 250 GiB hold 16 disks of 60 GiB, each twice: 8 VMs; no VM is its own mirror
    assert report.fits == 8 and "disk" in report.limited_by
    assert all(mirror is not None and mirror != host for _, host, mirror in report.placements)
    used = {h.name: 0 for h in hosts}
    for _, host, mirror in report.placements:
        used[host] += 60
        used[mirror] += 60
    assert max(used.values()) <= 250


def test_a_mirror_goes_where_a_failover_keeps_room():
    # The first VM goes to h0, the emptiest. h2 has the most disk but not the memory to start
    # it should h0 fail; h1 has (Ganeti's N+1 rule), so the mirror goes to h1.
    hosts = [HostRecord("h0", cpus=64, memory_mib=65536, disk_gib=1000),
             HostRecord("h1", cpus=64, memory_mib=32768, disk_gib=1000),
             HostRecord("h2", cpus=64, memory_mib=32768, disk_gib=4000)]
    state = ClusterState.from_records(hosts, [VMRecord("a", "h1", 1, 16384), VMRecord("b", "h2", 1, 30720)])
    report = capacity(state, {"medium": 1}, failures=0, disks="mirrored", limit=1)
    assert report.placements == (("medium", "h0", "h1"),)
    # with no host keeping that room, the mirror still goes where the disk fits best
    crowded = ClusterState.from_records(hosts, [VMRecord("a", "h1", 1, 30720), VMRecord("b", "h2", 1, 30720)])
    assert capacity(crowded, {"medium": 1}, failures=0, disks="mirrored", limit=1).placements == (
        ("medium", "h0", "h2"),)


def test_capacity_refuses_an_unknown_disk_layout():
    with pytest.raises(ValueError, match="new disks must be one of local, shared, mirrored"):
        capacity(pool(2, 0), {"medium": 1}, disks="raid")


def test_after_n_plus_one_first_fails_each_vm_goes_where_it_still_holds():
    # 3 x 32 GiB with a 16 GiB VM on h0. Spreading 4 GiB VMs and cutting where N+1 first fails
    # stops at 10: no host keeps 16 GiB free for the big one. 12 is the most possible: N+1
    # needs the free memory of the others (total free less the host's own) to hold each
    # host's use, so total free must be at least one host's 32 GiB: 16 + 4k <= 64.
    hosts = [HostRecord(f"h{i}", cpus=64, memory_mib=32768, disk_gib=1000) for i in range(3)]
    state = ClusterState.from_records(hosts, [VMRecord("big", "h0", 4, 16384, 10)])
    report = capacity(state, {"medium": 1})
    assert report.fits == 12 and report.fits_without_ha == 20
    assert re.search(r"breaks N\+1 on each host tried: if h\d failed", report.limited_by)
    vms = state.vms + tuple(VMRecord(f"m{i}", host, 2, 4096, 60) for i, (_, host, _) in enumerate(report.placements))
    assert ha_admission(ClusterState.from_records(hosts, vms)).ok


def test_capacity_is_zero_when_n_plus_one_already_fails():
    report = capacity(pool(3, 7), {"medium": 1})         # 28 of 32 GiB used on each host
    assert report.fits == 0 and report.fits_without_ha == 3
    assert report.limited_by.startswith("N+1 already fails before any VM is added")


@settings(max_examples=40, deadline=None)
@given(st.one_of(clusters(max_vms=20), mirrored_clusters(max_vms=15)), st.sampled_from(DISKS))
def test_capacity_answers_fit_and_keep_n_plus_one(state, disks):
    """Whatever the pool and the disk layout: the VMs counted fit (resources and VM limits,
    never on a host that takes none, a mirror on another host of the same storage), and the
    pool with them still passes N+1 when it did before."""
    report = capacity(state, {"small": 2, "medium": 1}, disks=disks, limit=60)
    added = []
    for i, (name, host, mirror) in enumerate(report.placements):
        h = state.host_index[host]
        assert state.accepts_vms[h]
        assert (mirror is not None) == (disks == "mirrored")
        if mirror is not None:
            assert mirror != host and state.storage[state.host_index[mirror]] == state.storage[h]
        f = DEFAULT_FLAVORS[name]
        added.append(VMRecord(f"new{i}", host, f.cpus, f.memory_mib, 0 if disks == "shared" else f.disk_gib,
                              secondary=mirror, migratable=mirror is None))
    after = state.add(*added)
    took = after.free < state.free
    assert (after.free[took] >= -1e-9).all()
    assert (after.vm_count <= np.maximum(after.max_vms, state.vm_count)).all()
    assert report.fits <= report.fits_without_ha
    if ha_admission(state).ok:
        assert ha_admission(after).ok
    else:
        assert report.fits == 0


MIRRORED = ClusterState.from_records(
    [HostRecord(f"h{i}", cpus=32, memory_mib=65536, disk_gib=600) for i in range(4)],
    [VMRecord("a", "h0", 2, 4096, 40, secondary="h1", migratable=False)])


@settings(max_examples=40, deadline=None)
@given(st.one_of(clusters(max_vms=20), mirrored_clusters(max_vms=15)), st.sampled_from(DISKS))
@example(MIRRORED, "mirrored")      # the mirrors fill the disks: plans must count them too
def test_the_restart_plans_kept_while_adding_vms_stay_witnesses(state, disks):
    """Capacity trusts the restart plan it keeps for each host's failure until a new VM takes
    room that plan counted on. After every VM it adds, each kept plan must still be one that
    could run: it leaves no surviving host below zero, and never more than the host has free."""
    assume(ha_admission(state).ok)
    keeps = _KeepsHA(state)
    _fill(state, [], iter(["small", "medium"] * 15), DEFAULT_FLAVORS, disks,
          DEFAULT_POLICY, 30, keeps)
    for f in np.flatnonzero(state.up):
        survivors = state.accepts_vms.copy()
        survivors[f] = False
        left = keeps.left[f][survivors]
        assert (left >= -1e-6).all()
        assert (left <= keeps.free[survivors] + 1e-6).all()


def test_hosts_on_one_pooled_storage_share_its_room():
    # three hosts on one SAN of 1,000 GiB: two 500 GiB disks fill it, whichever hosts run them
    san = ClusterState.from_records([HostRecord(f"h{i}", cpus=64, memory_mib=262144, disk_gib=1000, storage="san")
                                     for i in range(3)])
    assert capacity(san, {"db": 1}, failures=0).fits == 2
    report = capacity(san, {"db": 1})
    assert report.fits == 2 and "does not fit" in report.limited_by
    # a disk on it is kept back on every host of the storage, and its VM moves without it
    after = san.add(VMRecord("a", "h0", 4, 12288, 500))
    assert list(after.free[:, 2]) == [500, 500, 500] and after.demand[0, 2] == 0
    # hosts whose storage is named by no one else, or by no name (Ganeti's files), each have their own
    own = ClusterState.from_records([replace(h, storage=f"own-{h.name}") for h in san.hosts])
    unnamed = ClusterState.from_records([replace(h, storage="") for h in san.hosts])
    assert capacity(own, {"db": 1}, failures=0).fits == capacity(unnamed, {"db": 1}, failures=0).fits == 6
    # hosts that see one storage at different sizes: its free room is what the tightest one sees
    uneven = ClusterState.from_records([replace(san.hosts[0], disk_gib=2000), *san.hosts[1:]])
    assert list(uneven.free[:, 2]) == [1000, 1000, 1000]
    assert capacity(uneven, {"db": 1}, failures=0).fits == 2


def test_capacity_says_which_host_n_plus_one_kept_a_vm_from():
    # "alone" has room but sees no other host's storage, so a VM there could restart nowhere;
    # the SAN's 40 GiB hold two tiny VMs. The next one was blamed on a maintenance filter.
    hosts = [HostRecord("alone", cpus=8, memory_mib=65536, disk_gib=1000, cpu_ratio=1, storage="own"),
             HostRecord("s1", cpus=8, memory_mib=65536, disk_gib=40, cpu_ratio=1, storage="san"),
             HostRecord("s2", cpus=8, memory_mib=65536, disk_gib=40, cpu_ratio=1, storage="san")]
    report = capacity(ClusterState.from_records(hosts), {"tiny": 1})
    assert (report.fits, report.fits_without_ha) == (2, 10), report
    assert report.limited_by == ("the next tiny VM has room only where it breaks N+1 (on alone: if alone "
                                 "failed, 1 VM could not restart (capacity-probe-2))"), report.limited_by
