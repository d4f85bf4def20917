"""The cluster snapshot every placement decision reads: NumPy arrays, one row per host.

Records are what callers know (one object per Host and VM); `ClusterState` turns them into
arrays once, so that filters, weighers and the balancer look at all hosts in a few vector
operations instead of a Python loop per host. A state never changes: moving or adding a VM
returns a new state, which is what makes every decision reproducible.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Iterable, Mapping

import numpy as np

#: resource dimensions, in this order, in every (…, 3) array
RESOURCES = ("cpu", "memory", "disk")
UNITS = ("vCPU", "MiB", "GiB")

#: group policies, Nova's server-group names
GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


@dataclass(frozen=True)
class HostRecord:
    """A Host as placement sees it: raw capacity, Nova-style allocation ratios and reservations.

    Usable amount per resource = capacity × ratio − reserved. `missing_memory_mib` is memory the
    host reports in use that no VM accounts for (Ganeti's x_mem); a positive value is taken away
    from usable memory, so a host that says it has less free memory than we think is believed.
    `cpu_speed`, `spindle_capacity` (Ganeti's spindles × spindle ratio) and `cpu_pool` only
    matter to Ganeti's score: `cpu_pool` is what the VMs' measured CPU load on the host is
    divided by (Ganeti's utilPool, 1 in its files; a live pool gives the host's CPUs, so the
    term is how unevenly busy the hosts' CPUs are, as vCenter DRS balances). `storage` names the
    storage its VMs' disks live on: a VM moves live only to hosts on the storage of its disk
    (Ganeti's node groups play that part), so a pool whose hosts all share storage leaves it
    equal everywhere. A storage named here and shared by several hosts holds one room for all of
    them (a SAN, NFS, Ceph): the caller counts every disk on it in each such host's
    `reserved_disk_gib` and gives their VMs no disk of their own, so a VM moved between them
    moves no disk, and a new disk booked on one of them takes room on each
    (`ClusterState.pooled`). Hosts that leave it empty, as Ganeti's files do, each have their
    own disk. `cpu_busy` is the share of its CPUs measured busy lately (None: not measured);
    only the MeasuredCPUWeigher reads it.
    """

    name: str
    cpus: float = 0.0
    memory_mib: float = 0.0
    disk_gib: float = 0.0
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.0
    disk_ratio: float = 1.0
    reserved_cpus: float = 0.0
    reserved_memory_mib: float = 0.0
    reserved_disk_gib: float = 0.0
    up: bool = True
    maintenance: bool = False
    tags: frozenset[str] = frozenset()
    max_vms: int | None = None
    missing_memory_mib: float = 0.0
    cpu_speed: float = 1.0
    spindle_capacity: float = 32.0
    cpu_pool: float = 1.0
    storage: str = ""
    cpu_busy: float | None = None


@dataclass(frozen=True)
class VMRecord:
    """A VM: its demand, where it runs, and what the balancer may do with it.

    `running` says whether its memory is in use (a stopped VM keeps its reservation for
    capacity, as in Nova, but Ganeti's score counts only running memory). `secondary` is the
    host of a DRBD mirror (htools files only): that host also holds the disk, and
    `spindle_use` is what its disk weighs in Ganeti's spindle term. The balancer moves VMs
    with `auto_balance` set: live migration to any host if `migratable` and without a
    secondary, hbal's failovers and disk replacements if with one. `storage`
    is where its disk is when that is not its host's storage (a disk copied to a host's own
    pool): only hosts on that storage can take it without copying the disk. `cpu_load` is the
    CPU it was measured to use (hbal's -U file; cores on a live pool), None where nothing was
    measured: it then weighs 1, as in hbal without -U.
    """

    name: str
    host: str | None = None
    cpus: float = 1.0
    memory_mib: float = 0.0
    disk_gib: float = 0.0
    groups: frozenset[str] = frozenset()
    cpu_load: float | None = None
    running: bool = True
    auto_balance: bool = True
    migratable: bool = True
    secondary: str | None = None
    spindle_use: int = 0
    storage: str | None = None


def _column(records, attr, dtype=float) -> np.ndarray:
    return np.fromiter((getattr(r, attr) for r in records), dtype=dtype, count=len(records))


@dataclass(frozen=True, eq=False)
class ClusterState:
    """Hosts and VMs as arrays. Build it with `from_records`; derive new states with `move`/`add`.

    Host arrays have one row per host; `capacity`, `ratio`, `reserved` and `used` are (H, 3)
    in RESOURCES order. VM arrays have one row per VM; `vm_host` is the host index (-1 when
    the VM is not placed) and `demand` is (V, 3).
    """

    hosts: tuple[HostRecord, ...]
    vms: tuple[VMRecord, ...]
    group_policies: Mapping[str, str]
    capacity: np.ndarray
    ratio: np.ndarray
    reserved: np.ndarray
    missing_memory: np.ndarray
    up: np.ndarray
    maintenance: np.ndarray
    max_vms: np.ndarray
    demand: np.ndarray
    vm_host: np.ndarray
    vm_secondary: np.ndarray
    used: np.ndarray = field(repr=False)
    vm_count: np.ndarray = field(repr=False)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_records(
        cls,
        hosts: Iterable[HostRecord],
        vms: Iterable[VMRecord] = (),
        group_policies: Mapping[str, str] | None = None,
    ) -> "ClusterState":
        """Build the arrays. `group_policies` maps a group name to one of GROUP_POLICIES."""
        hosts = tuple(hosts)
        vms = tuple(vms)
        policies = dict(group_policies or {})
        for group, policy in policies.items():
            if policy not in GROUP_POLICIES:
                raise ValueError(f"group {group!r} has unknown policy {policy!r}; "
                                 f"use one of {', '.join(GROUP_POLICIES)}")
        index = {h.name: i for i, h in enumerate(hosts)}
        if len(index) != len(hosts):
            raise ValueError("host names must be unique")
        if len({v.name for v in vms}) != len(vms):
            raise ValueError("VM names must be unique")

        def host_index(vm: VMRecord, name: str | None, what: str) -> int:
            if name is None:
                return -1
            try:
                return index[name]
            except KeyError:
                raise ValueError(f"VM {vm.name!r} names unknown {what}host {name!r}") from None

        capacity = np.column_stack([_column(hosts, "cpus"), _column(hosts, "memory_mib"),
                                    _column(hosts, "disk_gib")]).reshape(len(hosts), 3)
        ratio = np.column_stack([_column(hosts, "cpu_ratio"), _column(hosts, "ram_ratio"),
                                 _column(hosts, "disk_ratio")]).reshape(len(hosts), 3)
        reserved = np.column_stack([_column(hosts, "reserved_cpus"),
                                    _column(hosts, "reserved_memory_mib"),
                                    _column(hosts, "reserved_disk_gib")]).reshape(len(hosts), 3)
        demand = np.column_stack([_column(vms, "cpus"), _column(vms, "memory_mib"),
                                  _column(vms, "disk_gib")]).reshape(len(vms), 3)
        vm_host = np.fromiter((host_index(v, v.host, "") for v in vms), dtype=np.int64,
                              count=len(vms))
        vm_secondary = np.fromiter((host_index(v, v.secondary, "secondary ") for v in vms),
                                   dtype=np.int64, count=len(vms))
        max_vms = np.fromiter((np.inf if h.max_vms is None else h.max_vms for h in hosts),
                              dtype=float, count=len(hosts))
        used, count = _allocation(len(hosts), demand, vm_host, vm_secondary)
        return cls(hosts=hosts, vms=vms, group_policies=policies, capacity=capacity,
                   ratio=ratio, reserved=reserved,
                   missing_memory=_column(hosts, "missing_memory_mib"),
                   up=_column(hosts, "up", bool), maintenance=_column(hosts, "maintenance", bool),
                   max_vms=max_vms, demand=demand, vm_host=vm_host, vm_secondary=vm_secondary,
                   used=used, vm_count=count)

    # ------------------------------------------------------------------ derived
    @property
    def n_hosts(self) -> int:
        return len(self.hosts)

    @cached_property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    @cached_property
    def host_index(self) -> dict[str, int]:
        return {h.name: i for i, h in enumerate(self.hosts)}

    @cached_property
    def vm_index(self) -> dict[str, int]:
        return {v.name: i for i, v in enumerate(self.vms)}

    @cached_property
    def usable(self) -> np.ndarray:
        """capacity × ratio − reserved, with memory a host reports missing taken away."""
        usable = self.capacity * self.ratio - self.reserved
        usable[:, 1] -= np.maximum(self.missing_memory, 0.0)
        return usable

    @cached_property
    def free(self) -> np.ndarray:
        """usable − used; on a pooled storage, the free disk its tightest host sees, on each."""
        free = self.usable - self.used
        for code in np.unique(self.storage[self.pooled]) if self.pooled.any() else ():
            on = self.storage == code
            free[on, 2] = free[on, 2].min()
        return free

    @cached_property
    def inverse_usable(self) -> np.ndarray:
        """1 / usable, 0 where nothing is usable: weighers multiply instead of dividing."""
        usable = self.usable
        return np.divide(1.0, usable, out=np.zeros_like(usable), where=usable > 0)

    @cached_property
    def cpu_busy(self) -> np.ndarray | None:
        """Each host's share of CPUs measured busy, one not measured counted fully busy (it may be:
        the collector cannot read it); None when no host is measured."""
        if all(h.cpu_busy is None for h in self.hosts):
            return None
        return np.fromiter((1.0 if h.cpu_busy is None else h.cpu_busy for h in self.hosts), float, self.n_hosts)

    @cached_property
    def cpu_cores(self) -> np.ndarray:
        return np.maximum(self.capacity[:, 0], 1.0)

    @cached_property
    def limits_vms(self) -> bool:
        return bool(np.isfinite(self.max_vms).any())

    @cached_property
    def accepts_vms(self) -> np.ndarray:
        """Hosts that may receive new VMs: up and not in maintenance."""
        return self.up & ~self.maintenance

    def group_members(self, group: str) -> np.ndarray:
        """Number of VMs of `group` on each host (primary placement only)."""
        return self._group_counts.get(group, self._zeros_h)

    @cached_property
    def _zeros_h(self) -> np.ndarray:
        return np.zeros(self.n_hosts, dtype=np.int64)

    @cached_property
    def _group_counts(self) -> dict[str, np.ndarray]:
        counts: dict[str, np.ndarray] = {}
        for vm, h in zip(self.vms, self.vm_host):
            if h < 0:
                continue
            for g in vm.groups:
                counts.setdefault(g, np.zeros(self.n_hosts, dtype=np.int64))[h] += 1
        return counts

    def tag_mask(self, tag: str) -> np.ndarray:
        """Hosts carrying `tag`."""
        if tag not in self._tag_masks:
            self._tag_masks[tag] = np.fromiter((tag in h.tags for h in self.hosts), dtype=bool,
                                               count=self.n_hosts)
        return self._tag_masks[tag]

    @cached_property
    def _tag_masks(self) -> dict[str, np.ndarray]:
        return {}

    @cached_property
    def storage(self) -> np.ndarray:
        """One code per host, equal for hosts on the same storage."""
        codes = self._storage_codes
        return np.fromiter((codes[h.storage] for h in self.hosts), dtype=np.int64, count=self.n_hosts)

    @cached_property
    def vm_storage(self) -> np.ndarray:
        """Per VM, the code of the storage its disk is on (its host's unless it names one)."""
        codes, storage = self._storage_codes, self.storage
        return np.fromiter((codes[v.storage] if v.storage is not None else storage[h] if h >= 0 else -1
                            for v, h in zip(self.vms, self.vm_host)), dtype=np.int64, count=len(self.vms))

    @cached_property
    def _storage_codes(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        for name in [h.storage for h in self.hosts] + [v.storage for v in self.vms if v.storage is not None]:
            codes.setdefault(name, len(codes))
        return codes

    def storage_mask(self, storage: str) -> np.ndarray:
        """Hosts on `storage`."""
        return self.storage == self._storage_codes.get(storage, -1)

    @cached_property
    def pooled(self) -> np.ndarray:
        """Hosts on a named storage that other hosts share: a disk on one takes room on all."""
        names = [h.storage for h in self.hosts]   # not `storage`, which also reads every VM: a create reads this
        shared = {name for name, hosts in Counter(names).items() if name and hosts > 1}
        return np.fromiter((name in shared for name in names), dtype=bool, count=len(names)) if shared \
            else np.zeros(len(names), dtype=bool)

    def disk_room(self, host: int) -> np.ndarray | int:
        """The hosts whose free disk a new disk on host index `host` takes: its storage's
        hosts when that storage is pooled, else the host itself."""
        return self.storage == self.storage[host] if self.pooled[host] else host

    def groups_with(self, policy: str) -> frozenset[str]:
        return frozenset(g for g, p in self.group_policies.items() if p == policy)

    # ------------------------------------------------------------------ new states
    def move(self, vm: str, host: str) -> "ClusterState":
        """The state after `vm` runs on `host` (its secondary, if any, stays)."""
        i = self.vm_index[vm]
        vms = list(self.vms)
        vms[i] = _replace_host(vms[i], host)
        return self._with_vms(tuple(vms))

    def add(self, *vms: VMRecord) -> "ClusterState":
        """The state with new VMs. A new VM's disk on a pooled storage is kept back on each
        of its hosts, as the storage's other disks are (see HostRecord), not carried by it."""
        for vm in vms:
            if vm.name in self.vm_index:
                raise ValueError(f"VM {vm.name!r} already exists")
        pooled_disk = np.zeros(self.n_hosts)
        new = []
        for vm in vms:
            h = self.host_index.get(vm.host, -1)
            if h >= 0 and self.pooled[h] and vm.storage in (None, self.hosts[h].storage) and vm.secondary is None:
                pooled_disk[self.disk_room(h)] += vm.disk_gib
                vm = replace(vm, disk_gib=0.0)
            new.append(vm)
        hosts = tuple(replace(host, reserved_disk_gib=host.reserved_disk_gib + d) if d else host
                      for host, d in zip(self.hosts, pooled_disk))
        return ClusterState.from_records(hosts, self.vms + tuple(new), self.group_policies)

    def with_moves(self, moves: Iterable[tuple]) -> "ClusterState":
        """The state after each (vm, host) or (vm, host, mirror host) move, applied at once;
        a mirror host of None leaves the VM's mirror where it is."""
        vms = list(self.vms)
        for name, host, *secondary in moves:
            i = self.vm_index[name]
            vms[i] = _replace_host(vms[i], host)
            if secondary and secondary[0] is not None:
                vms[i] = replace(vms[i], secondary=secondary[0])
        return self._with_vms(tuple(vms))

    def _with_vms(self, vms: tuple[VMRecord, ...]) -> "ClusterState":
        return ClusterState.from_records(self.hosts, vms, self.group_policies)


def _replace_host(vm: VMRecord, host: str) -> VMRecord:
    return replace(vm, host=host)


def _allocation(n_hosts, demand, vm_host, vm_secondary):
    """Σ demand of placed VMs per host; a DRBD secondary holds the disk too."""
    used = np.zeros((n_hosts, 3))
    placed = vm_host >= 0
    for r in range(3):
        used[:, r] = np.bincount(vm_host[placed], weights=demand[placed, r], minlength=n_hosts)
    mirrored = vm_secondary >= 0
    used[:, 2] += np.bincount(vm_secondary[mirrored], weights=demand[mirrored, 2],
                              minlength=n_hosts)
    count = np.bincount(vm_host[placed], minlength=n_hosts)
    return used, count


class Workspace:
    """A mutable copy of a state's allocation, for algorithms that place VMs one after another.

    It has the attribute names filters and weighers read from a `ClusterState` (`free`,
    `usable`, `vm_count`, `accepts_vms`, `group_members`, `tag_mask`, `storage_mask`, …), so the same
    policies judge a one-off request and the hundredth VM of a batch, without rebuilding
    the state after every step.
    """

    def __init__(self, state: ClusterState):
        self.state = state
        self.hosts = state.hosts
        self.n_hosts = state.n_hosts
        self.host_names = state.host_names
        self.host_index = state.host_index
        self.usable = state.usable
        self.inverse_usable = state.inverse_usable
        self.max_vms = state.max_vms
        self.limits_vms = state.limits_vms
        self.used = state.used.copy()
        self.free = state.free.copy()
        self.vm_count = state.vm_count.copy()
        self.accepts_vms = state.accepts_vms.copy()
        self.cpu_cores = state.cpu_cores
        self.cpu_busy = None if state.cpu_busy is None else state.cpu_busy.copy()
        self._groups: dict[str, np.ndarray] = {}

    def group_members(self, group: str) -> np.ndarray:
        if group not in self._groups:
            self._groups[group] = self.state.group_members(group).copy()
        return self._groups[group]

    def tag_mask(self, tag: str) -> np.ndarray:
        return self.state.tag_mask(tag)

    def storage_mask(self, storage: str) -> np.ndarray:
        return self.state.storage_mask(storage)

    def add(self, host: int, demand: np.ndarray, groups: Iterable[str] = ()) -> None:
        """Book a VM of `demand` in `groups` on host index `host` (its disk on every host of a
        pooled storage)."""
        self.used[host, :2] += demand[:2]
        self.free[host, :2] -= demand[:2]
        room = self.state.disk_room(host)
        self.used[room, 2] += demand[2]
        self.free[room, 2] -= demand[2]
        self.vm_count[host] += 1
        if self.cpu_busy is not None:  # as the MeasuredCPUWeigher counts a new VM: all its vCPUs busy
            self.cpu_busy[host] += demand[0] / self.cpu_cores[host]
        for g in groups:
            self.group_members(g)[host] += 1

    def add_mirror(self, host: int, disk_gib: float) -> None:
        """Book a DRBD mirror's copy of a disk on host index `host` (a disk, not a VM)."""
        self.used[host, 2] += disk_gib
        self.free[host, 2] -= disk_gib
