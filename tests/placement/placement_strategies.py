"""Hypothesis strategies: small random pools, each VM already placed where it fits."""

from hypothesis import strategies as st

from vpool.placement import ClusterState, HostRecord, VMRecord

FLAVORS = [(1, 1024, 20), (1, 2048, 40), (2, 4096, 60), (4, 8192, 100), (8, 16384, 200)]


@st.composite
def clusters(draw, max_hosts=8, max_vms=40, groups=True):
    n_hosts = draw(st.integers(2, max_hosts))
    hosts = []
    for i in range(n_hosts):
        cpus = draw(st.sampled_from([8, 16, 32]))
        memory = draw(st.sampled_from([16384, 32768, 65536]))
        hosts.append(HostRecord(
            f"h{i}", cpus=cpus, memory_mib=memory, disk_gib=draw(st.sampled_from([500, 1000])),
            cpu_ratio=draw(st.sampled_from([1.0, 2.0, 4.0])), reserved_cpus=1,
            reserved_memory_mib=1024, up=draw(st.booleans().map(lambda b: b or i == 0)),
            maintenance=draw(st.sampled_from([False, False, False, True])),
            max_vms=draw(st.sampled_from([None, None, 4, 10])),
            storage=draw(st.sampled_from(["", "", "san"])),
            cpu_busy=draw(st.sampled_from([None, None, 0.05, 0.5, 0.95]))))
    policies = {"web": "anti-affinity", "db": "soft-anti-affinity", "cache": "anti-affinity"}
    state = ClusterState.from_records(hosts, (), policies if groups else None)
    free = state.free.copy()
    count = [0] * n_hosts
    vms = []
    names = ["web", "db", "cache"] if groups else []
    for v in range(draw(st.integers(0, max_vms))):
        cpus, mem, disk = draw(st.sampled_from(FLAVORS))
        h = draw(st.integers(0, n_hosts - 1))
        storage = draw(st.sampled_from([None, None, None, f"own-h{h}", "san"]))
        # a disk on the hosts' pooled "san" takes room on each of them (HostRecord); their disk
        # room is the SAN's, so a disk elsewhere is only drawn on the other hosts
        storage = None if state.pooled[h] else storage
        room = state.disk_room(h)
        fits = (free[h, :2] >= (cpus, mem)).all() and (free[room, 2] >= disk).all() and (
            hosts[h].max_vms is None or count[h] < hosts[h].max_vms)
        if not fits:
            continue
        free[h, :2] -= (cpus, mem)
        free[room, 2] -= disk
        count[h] += 1
        member = frozenset(draw(st.lists(st.sampled_from(names), max_size=1))) if names else \
            frozenset()
        vms.append(VMRecord(f"vm{v}", host=f"h{h}", cpus=cpus, memory_mib=mem, disk_gib=disk,
                            groups=member, running=draw(st.booleans() | st.just(True)),
                            cpu_load=draw(st.none() | st.floats(0, 4)), storage=storage))
    return state.add(*vms)


@st.composite
def mirrored_clusters(draw, max_hosts=7, max_vms=30):
    """Pools where every VM has a DRBD mirror: running on one host, its disk on two."""
    n_hosts = draw(st.integers(3, max_hosts))
    hosts = [HostRecord(f"h{i}", cpus=draw(st.sampled_from([8, 16, 32])),
                        memory_mib=draw(st.sampled_from([16384, 32768, 65536])),
                        disk_gib=draw(st.sampled_from([300, 600])), cpu_ratio=4.0,
                        reserved_cpus=1, reserved_memory_mib=1024,
                        up=draw(st.booleans().map(lambda b: b or i < 3)),
                        spindle_capacity=draw(st.sampled_from([6.0, 32.0])))
             for i in range(n_hosts)]
    state = ClusterState.from_records(hosts)
    free = state.free.copy()
    vms = []
    for v in range(draw(st.integers(1, max_vms))):
        cpus, mem, disk = draw(st.sampled_from(FLAVORS))
        p, s = draw(st.lists(st.integers(0, n_hosts - 1), min_size=2, max_size=2, unique=True))
        if not ((free[p] >= (cpus, mem, disk)).all() and free[s, 2] >= disk):
            continue
        free[p] -= (cpus, mem, disk)
        free[s, 2] -= disk
        vms.append(VMRecord(f"vm{v}", host=f"h{p}", cpus=cpus, memory_mib=mem, disk_gib=disk,
                            secondary=f"h{s}", migratable=False, spindle_use=1,
                            groups=frozenset(draw(st.lists(st.just("db"), max_size=1))),
                            running=draw(st.booleans() | st.just(True))))
    return ClusterState.from_records(hosts, vms, {"db": "anti-affinity"})
