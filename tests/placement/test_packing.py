import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vpool.placement import ClusterState, HostRecord, PlacementRequest, VMRecord
from vpool.placement.packing import lower_bound, place_many

from placement_strategies import FLAVORS, clusters


def empty_pool(n, memory=65536):
    return ClusterState.from_records(
        [HostRecord(f"h{i}", cpus=32, memory_mib=memory, disk_gib=2000) for i in range(n)])


def requests(sizes):
    return [PlacementRequest(f"r{i}", cpus=c, memory_mib=m, disk_gib=d)
            for i, (c, m, d) in enumerate(sizes)]


def test_all_or_nothing():
    state = empty_pool(2, memory=16384)
    batch = place_many(state, requests([(1, 8192, 10)] * 5))
    assert not batch.ok and batch.hosts == {}
    assert batch.message.startswith("r") and "none of the 5 VMs is placed" in batch.message


def test_first_fit_decreasing_fills_hosts_before_opening_new_ones():
    batch = place_many(empty_pool(4), requests([(1, 16384, 10)] * 8))
    assert batch.ok and batch.hosts_used == 2 and batch.method == "first-fit decreasing"


def test_anti_affinity_inside_the_batch():
    reqs = [PlacementRequest(f"r{i}", memory_mib=1024, anti_affinity=frozenset({"g"}))
            for i in range(3)]
    batch = place_many(empty_pool(3), reqs)
    assert len(set(batch.hosts.values())) == 3
    assert not place_many(empty_pool(2), reqs).ok


def test_cp_sat_opens_fewer_hosts_than_first_fit_when_it_can():
    # sizes where decreasing first fit needs 3 hosts of 10 but 2 suffice: 6+4 | 5+5... in GiB
    state = ClusterState.from_records(
        [HostRecord(f"h{i}", cpus=64, memory_mib=10 * 1024, disk_gib=100) for i in range(3)])
    sizes = [(1, g * 1024, 0) for g in (5, 4, 4, 3, 2, 2)]   # 20 GiB: FFD 5+4, 4+3+2, 2
    ffd = place_many(state, requests(sizes))
    exact = place_many(state, requests(sizes), time_budget=5.0)
    assert ffd.hosts_used == 3
    assert exact.hosts_used == 2 and exact.method == "CP-SAT"


@settings(max_examples=40, deadline=None)
@given(clusters(groups=False), st.lists(st.sampled_from(FLAVORS), max_size=12),
       st.sampled_from([None, 1.0]))
def test_no_decision_puts_a_host_above_capacity(state, sizes, budget):
    batch = place_many(state, requests(sizes), time_budget=budget)
    if not batch.ok:
        return
    after = state.add(*(VMRecord(name, host, c, m, d) for (name, host), (c, m, d) in zip(batch.hosts.items(), sizes)))
    took = after.free < state.free
    assert (after.free[took] >= -1e-9).all()
    assert all(state.accepts_vms[state.host_index[h]] for h in batch.hosts.values())


def test_lower_bound_is_martello_toth_l2_on_identical_hosts():
    bins = np.array([[10.0, 10.0, 10.0]] * 10)
    items = np.array([[6.0, 0, 0]] * 3 + [[4.0, 0, 0]] * 3)     # 30 units: L1 = 3, L2 = 3
    assert lower_bound(bins, items) == 3
    items = np.array([[6.0, 0, 0]] * 4)                          # L1 = 3, but no two share
    assert lower_bound(bins, items) == 4


def test_lower_bound_uses_the_largest_hosts_first():
    bins = np.array([[0, 100.0, 0], [0, 10.0, 0], [0, 10.0, 0]])
    assert lower_bound(bins, np.array([[0, 105.0, 0]])) == 2


def test_a_batch_on_one_pooled_storage_fits_its_room_once():
    san = ClusterState.from_records([HostRecord(f"h{i}", cpus=64, memory_mib=65536, disk_gib=1000, storage="san")
                                     for i in range(3)])
    assert not place_many(san, requests([(1, 1024, 400)] * 3)).ok
    assert place_many(san, requests([(1, 1024, 400)] * 2)).ok
    # two SAN hosts already in use and an empty one with its own disks: first fit must open
    # the empty one, and CP-SAT may not save that by putting both disks on the SAN
    running = ClusterState.from_records(san.hosts[:2] + (HostRecord("own", cpus=64, memory_mib=65536, disk_gib=2000),),
                                        [VMRecord("x0", "h0", 1, 1024), VMRecord("x1", "h1", 1, 1024)])
    for budget in (None, 1.0):
        batch = place_many(running, requests([(1, 1024, 600)] * 2), time_budget=budget)
        assert batch.ok and "own" in batch.hosts.values() and batch.method == "first-fit decreasing"
