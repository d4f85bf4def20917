"""`capacity`: how many more VMs of a flavor mix fit while the pool keeps N+k (what Ganeti's
`hspace` answers).

New VMs are placed one after another in the mix's proportions (a smooth weighted round
robin, so a 3:1 mix goes a a b a a a b a …) by the same filters and weighers as `place`,
until one does not fit. Then a bisection over that sequence finds the longest prefix after
which `ha_admission` still holds: each added VM only takes room, so N+k only gets harder.
For N+1 on pools of up to TRACKED_HOSTS hosts, VMs then go on being placed from there, each
where N+1 still holds (as hspace checks N+1 on each allocation): spreading had used up the
room some big VM needs to restart, and other hosts may still keep it. A VM goes to the best
host `place` offers among those where it disturbs the fewest restart plans, trying at most
TRIES hosts. Beyond that size the prefix is the answer, a lower bound.

New disks are `local` (on the VM's host, as in a vpool pool), `shared` (on no host's disk:
Ganeti's sharedfile, rbd, diskless…) or `mirrored` (DRBD: a copy on a second host, which must
also be ready to start the VM). A mirror goes to the host with the most free disk among those
where Ganeti's N+1 rule still holds once it counts (free memory at least r_mem, the most one
failed primary would start there; hspace refuses a secondary that would break it), or the
most free disk of all when none would. Most free disk first spreads the copies, so the last
free disk is not left on one host with nothing to pair with: on generated DRBD clusters that
fits up to two VMs more than taking the most spare memory first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Mapping

import numpy as np

from .ha import failure_plan, ha_admission
from .filters import EPSILON
from .place import DEFAULT_POLICY, PlacementPolicy, place
from .request import PlacementRequest, count
from .score import Peers, hbal_score, mirror_memory
from .state import ClusterState, VMRecord, Workspace

#: where a new VM's disk goes (see the module's docstring)
DISKS = ("local", "shared", "mirrored")
#: hosts tried for each VM added after N+1 first fails
TRIES = 10
#: up to this many hosts, VMs go on being placed where N+1 holds after it first fails: one
#: restart plan kept per host, n × n × 3 floats (24 MB and about 17 s at 1,000 hosts / 10,000
#: VMs; 96 MB and about 1 min at 2,000 / 20,000)
TRACKED_HOSTS = 2_000

#: the VM sizes of Ganeti's generator (vCPU, MiB, GiB), so capacity answers are comparable
DEFAULT_FLAVORS: dict[str, PlacementRequest] = {
    "tiny": PlacementRequest("tiny", cpus=1, memory_mib=1024, disk_gib=20),
    "small": PlacementRequest("small", cpus=1, memory_mib=2048, disk_gib=40),
    "medium": PlacementRequest("medium", cpus=2, memory_mib=4096, disk_gib=60),
    "large": PlacementRequest("large", cpus=4, memory_mib=8192, disk_gib=100),
    "xlarge": PlacementRequest("xlarge", cpus=8, memory_mib=16384, disk_gib=200),
    "db": PlacementRequest("db", cpus=4, memory_mib=12288, disk_gib=500),
}


@dataclass(frozen=True)
class CapacityReport:
    """How many VMs of the mix fit: `fits` while keeping N+`failures`, `fits_without_ha`
    by room alone, per flavor in `by_flavor`; `limited_by` says what stopped it; `disks`
    where the new VMs' disks went; `placements` the first `fits` VMs as (flavor, host,
    mirror host or None)."""

    mix: dict[str, float]
    failures: int
    fits: int
    fits_without_ha: int
    by_flavor: dict[str, int] = field(default_factory=dict)
    limited_by: str = ""
    disks: str = "local"
    placements: tuple[tuple[str, str, str | None], ...] = ()


def parse_mix(text: str) -> dict[str, float]:
    """'medium=3,large=1' -> {'medium': 3.0, 'large': 1.0}; a bare name weighs 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"mix weight for {name.strip()!r} must be a number, "
                             f"got {weight!r}") from None
    return mix


def capacity(state: ClusterState, mix: Mapping[str, float],
             flavors: Mapping[str, Any] | None = None,
             failures: int = 1, policy: PlacementPolicy = DEFAULT_POLICY,
             limit: int = 1_000_000, disks: str = "local") -> CapacityReport:
    """Count the VMs of `mix` (flavor name -> weight) that fit; `flavors` maps names to
    anything with cpus, memory_mib and disk_gib (default: DEFAULT_FLAVORS). `failures=0`
    counts room only; `disks` is one of DISKS."""
    if disks not in DISKS:
        raise ValueError(f"new disks must be one of {', '.join(DISKS)}, got {disks!r}")
    catalogue = DEFAULT_FLAVORS if flavors is None else flavors
    for name, weight in mix.items():
        if name not in catalogue:
            raise ValueError(f"unknown flavor {name!r} in the mix; known: {', '.join(catalogue)}")
        if not weight > 0:
            raise ValueError(f"flavor {name!r} needs a positive weight, got {weight}")
    if not mix:
        raise ValueError("the mix names no flavor")
    names = list(mix)
    weights = np.array([mix[n] for n in names], dtype=float)
    added, limited_by = _fill(state, [], _flavor_sequence(names, weights), catalogue, disks,
                              policy, limit)
    room = fits = len(added)
    if failures:
        base = ha_admission(state, failures)
        if not base.ok:
            fits, limited_by = 0, f"N+{failures} already fails before any VM is added: {base.message}"
        else:
            fits, limited_by = _keeping_ha(state, added, catalogue, failures, limited_by, disks)
        if base.ok and fits < room and (failures > 1 or state.n_hosts > TRACKED_HOSTS):
            limited_by += (f" (a lower bound: other hosts are tried for that VM only for N+1 "
                           f"on pools of up to {TRACKED_HOSTS:,} hosts)")
        elif base.ok and fits < room:
            more, stop = _fill(state, added[:fits], islice(_flavor_sequence(names, weights), fits, None),
                               catalogue, disks, policy, limit, _KeepsHA(state))
            if len(more) > fits:
                # the plans kept per failure are witnesses; the answer must be ha_admission's
                last, why = _keeping_ha(state, more, catalogue, failures, stop, disks)
                if last >= fits:
                    added, fits, limited_by = more, last, why
            room = max(room, fits)
    by_flavor = {n: sum(1 for name, *_ in added[:fits] if name == n) for n in names}
    hosts = state.host_names
    placements = tuple((name, hosts[h], hosts[m] if m >= 0 else None) for name, h, m in added[:fits])
    return CapacityReport(dict(mix), failures, fits, room, by_flavor, limited_by, disks, placements)


def _flavor_sequence(names, weights):
    """Flavor names in the mix's proportions, for ever (a smooth weighted round robin)."""
    credit = np.zeros(len(names))
    while True:
        credit += weights
        pick = int(np.argmax(credit))
        credit[pick] -= weights.sum()
        yield names[pick]


def _fill(state, start, flavors, catalogue, disks, policy, limit, keeps=None):
    """`start` (a list of (flavor, host, mirror host or -1)) and then VMs of `flavors` added
    until one does not fit; returns them all and why it stopped. With `keeps` (a _KeepsHA),
    a VM goes where N+1 still holds, tried on the hosts of each of its `rounds` in turn."""
    work = Workspace(state)
    mirrors = _Mirrors(state) if disks == "mirrored" else None
    added = list(start)
    for name, h, mirror in added:
        _book(work, mirrors, catalogue[name], disks, h, mirror)
    if keeps:
        keeps.begin(work, [(_probe(i), _demand(catalogue[name], disks), h, mirror)
                           for i, (name, h, mirror) in enumerate(added)])
    for name in flavors:
        if len(added) >= limit:
            return added, f"stopped after {limit} VMs"
        flavor = catalogue[name]
        request = PlacementRequest(f"{name}-{len(added) + 1}", cpus=flavor.cpus,
                                   memory_mib=flavor.memory_mib, disk_gib=_disk(flavor, disks))
        demand = _demand(flavor, disks)
        accepts = work.accepts_vms
        untried = accepts & ~keeps.refused[name] if keeps else accepts.copy()
        chosen, why, tries = None, "", TRIES if keeps else 1
        for within in keeps.rounds(demand) if keeps else [None]:
            while tries and chosen is None:
                work.accepts_vms = untried if within is None else untried & within
                decision = place(work, request, policy)
                if not decision.ok:
                    if within is None:
                        why = why or _no_host(work, accepts, name, request, policy, keeps, len(added), decision)
                    break
                h = state.host_index[decision.host]
                untried[h] = False
                tries -= 1
                mirror = mirrors.choose(work, h, request) if mirrors is not None else -1
                if mirrors is not None and mirror < 0:
                    why = why or (f"the next {name} VM has no host for its mirror: no host but "
                                  f"{decision.host} has {request.disk_gib:g} GiB disk free")
                    continue
                broken = keeps.check(_probe(len(added)), demand, h, mirror) if keeps else None
                if broken is None:
                    chosen = (name, h, mirror)
                else:
                    why = why or f"one more {name} VM breaks N+1 on each host tried: {broken}"
                    keeps.refused[name][h] = True
            if chosen or not tries:
                break
        work.accepts_vms = accepts
        if chosen is None:
            return added, why
        if keeps:
            keeps.commit()
        _book(work, mirrors, flavor, disks, chosen[1], chosen[2])
        added.append(chosen)
    return added, ""


#: how many pairs `mirrored_pair` scores (6 ms each at 1,000 hosts): the weighers' first
#: primaries, each with its first mirrors in `capacity`'s order for mirrors
PRIMARIES_SCORED = 8
MIRRORS_SCORED = 16


def mirrored_pair(state: ClusterState, primaries: list[str], request: PlacementRequest) -> tuple[str, str, float] | None:
    """Where one more VM with a DRBD disk goes: the (primary, mirror, score) that leaves Ganeti's
    cluster score lowest, as hail weighs every pair. The primaries are the first
    `PRIMARIES_SCORED` of `primaries` (the weighers' order), each with the first
    `MIRRORS_SCORED` of `capacity`'s order for its mirrors (the same storage, the disk free,
    memory to spare for a failover); a tie goes to the earlier pair. None when no primary has
    another host with the disk."""
    mirrors, work = _Mirrors(state), Workspace(state)
    best: tuple[str, str, float] | None = None
    for primary in primaries[:PRIMARIES_SCORED]:
        vm = VMRecord(request.name, primary, request.cpus, request.memory_mib, request.disk_gib)
        for m in mirrors.ranked(work, state.host_index[primary], request)[:MIRRORS_SCORED]:
            score = hbal_score(state.add(replace(vm, secondary=state.host_names[m])))
            if best is None or score < best[2]:
                best = (primary, state.host_names[m], score)
    return best


def _no_host(work, accepts, name, request, policy, keeps, n_added, decision) -> str:
    """Why the next VM found no host. With N+1 kept, the hosts where one more broke it were
    left out of `decision`, so it would blame them on the filters; placed among all hosts
    again, a VM that fits tells which host it broke N+1 on, and how."""
    if keeps is not None:
        work.accepts_vms = accepts
        anywhere = place(work, request, policy)
        if not anywhere.ok:
            decision = anywhere
        else:
            h = work.host_index[anywhere.host]
            broken = keeps.check(_probe(n_added), _demand(request, "local"), h, -1)
            return f"the next {name} VM has room only where it breaks N+1" + (
                f" (on {anywhere.host}: {broken})" if broken else "")
    return f"the next {name} VM does not fit: {decision.message}"


def _disk(flavor, disks: str) -> float:
    """The host disk a new VM of `flavor` takes (on its host, and its mirror's if any)."""
    return 0 if disks == "shared" else flavor.disk_gib


def _demand(flavor, disks: str) -> np.ndarray:
    return np.array([flavor.cpus, flavor.memory_mib, _disk(flavor, disks)], dtype=float)


def _book(work, mirrors, flavor, disks, host, mirror):
    demand = _demand(flavor, disks)
    if mirror >= 0:   # a DRBD disk: on the host's own disks, never on a pooled storage
        mirrors.book(work, host, mirror, demand[1], demand[2])
        work.add_mirror(host, demand[2])
        demand = demand * (1.0, 1.0, 0.0)
    work.add(host, demand)


class _Mirrors:
    """Peer memory per (mirror host, primary host), kept as mirrors are booked, so each new
    mirror can go where N+1 still holds. Sparse: a primary has few mirrors,
    and a dense matrix of a 10,000-host pool would take 800 MB."""

    def __init__(self, state: ClusterState):
        self.storage = state.storage
        peers = Peers(state.n_hosts, state.vm_host, state.vm_secondary, mirror_memory(state))
        self.r_mem = peers.r_mem.copy()
        self.peer: dict[int, dict[int, float]] = {}    # primary -> {mirror: memory}
        for key, memory in zip(peers.keys, peers.values):
            mirror, primary = divmod(int(key), state.n_hosts)
            self.peer.setdefault(primary, {})[mirror] = float(memory)

    def _count(self, primary: int, mirror: int, memory: float) -> None:
        mirrors = self.peer.setdefault(primary, {})
        mirrors[mirror] = mirrors.get(mirror, 0.0) + memory
        self.r_mem[mirror] = max(self.r_mem[mirror], mirrors[mirror])

    def choose(self, work: Workspace, primary: int, request: PlacementRequest) -> int:
        """The mirror host for a VM on `primary`, or -1 when no other host has the disk."""
        ranked = self.ranked(work, primary, request)
        return int(ranked[0]) if ranked.size else -1

    def ranked(self, work: Workspace, primary: int, request: PlacementRequest) -> np.ndarray:
        """The hosts that can hold the mirror of a VM on `primary`, best first: those whose
        memory still covers a failover of every VM they mirror (or, when none does, all that
        have the disk), by the most disk free, then the most memory to spare."""
        fits = work.accepts_vms & (work.free[:, 2] + EPSILON >= request.disk_gib)
        fits &= self.storage == self.storage[primary]
        fits[primary] = False
        if not fits.any():
            return np.array([], dtype=int)
        towards = np.zeros(self.r_mem.size)
        for mirror, memory in self.peer.get(primary, {}).items():
            towards[mirror] = memory
        spare = work.free[:, 1] - np.maximum(self.r_mem, towards + request.memory_mib)
        keeps = fits & (spare + EPSILON >= 0)
        candidates = np.flatnonzero(keeps if keeps.any() else fits)
        return candidates[np.lexsort((-spare[candidates], -work.free[candidates, 2]))]

    def book(self, work: Workspace, primary: int, mirror: int, memory_mib: float, disk_gib: float) -> None:
        work.add_mirror(mirror, disk_gib)
        self._count(primary, mirror, memory_mib)


class _KeepsHA:
    """Does N+1 still hold with one more VM? It keeps, per host that may fail, what
    `ha_admission`'s restart plan leaves free on the others (`left`, one row per failed
    host): a VM added to host h (and its mirror m) changes h's own plan, and another host's
    plan only if that plan left too little on h or m. So a check redoes a few plans, not
    one per host, and on a host no other plan counts on just one; `rounds` offers those
    hosts first. A check reads the free room and VM counts of `_fill`'s workspace, rather
    than a new state built for each check (capacity at 100 hosts / 1,000 VMs: 0.6 s; 25 s
    with every plan redone on a new state, 4 s with only the disturbed ones).
    The plans stay valid witnesses but may differ from the ones `ha_admission` would make
    afresh, so `capacity` has the last word checked by it."""

    def __init__(self, state: ClusterState):
        self.state = state
        self.on_host: dict[int, list] = {}       # the VMs added, per host: (name, demand, mirror)
        # hosts where one more VM of a flavor broke N+1: room only shrinks, so it would again
        self.refused = defaultdict(lambda: np.zeros(state.n_hosts, dtype=bool))
        self.pending = None

    def begin(self, work: Workspace, added) -> None:
        """Plans for every host's failure with `added` ((name, demand, host, mirror) of each VM
        already booked in `work`). The free room and VM counts are `work`'s, which books each
        VM the checks let through."""
        self.free, self.vm_count = work.free, work.vm_count
        for name, demand, host, mirror in added:
            self.on_host.setdefault(host, []).append((name, self._moving(demand, host, mirror), mirror))
        n = self.state.n_hosts
        # +inf where no plan constrains: a host that cannot fail (down) and a host's own column
        self.left = np.full((n, n, 3), np.inf)
        for f in np.flatnonzero(self.state.up):
            self.left[f] = self._plan(int(f), self.free, self.vm_count)[1]
            self.left[f, f] = np.inf

    def rounds(self, demand):
        """Masks of the hosts to try in turn for a VM of `demand`: those where it fits into
        what every other host's plan leaves (only their own plan to redo), then those where
        it disturbs at most 1, 2, 4, … other plans, then all."""
        yield (self.left.min(axis=0) + EPSILON >= demand).all(axis=1)
        short = np.zeros(self.left.shape[:2], dtype=bool)
        for r in range(3):
            short |= self.left[:, :, r] + EPSILON < demand[r]
        disturbed = short.sum(axis=0)
        bound = 1
        while bound < self.state.n_hosts:
            yield disturbed <= bound
            bound *= 2
        yield None

    def check(self, name, demand, host, mirror) -> str | None:
        """None if N+1 holds with one more VM `name` of `demand` on `host` (its disk mirrored
        on `mirror`, or -1), else why not; a check that passes is kept for `commit`."""
        free, vm_count = self.free.copy(), self.vm_count.copy()
        moving, shared = self._moving(demand, host, mirror), self._shared(host, mirror)
        free[host] -= moving
        vm_count[host] += 1
        short = (moving - self.left[:, host]).max(axis=1)
        if mirror >= 0:
            free[mirror, 2] -= demand[2]
            short = np.maximum(short, demand[2] - self.left[:, mirror, 2])
        if shared is not None:
            free[shared, 2] -= demand[2]
            short = np.maximum(short, demand[2] - self.left[:, shared, 2].min(axis=1))
        short[host] = np.inf
        added = (name, moving, mirror)
        redone = {}
        for f in np.flatnonzero((short > EPSILON) & self.state.up):
            unplaced, left = self._plan(int(f), free, vm_count, added if f == host else None)
            if unplaced:
                return (f"if {self.state.host_names[f]} failed, {count(len(unplaced), 'VM')} could "
                        f"not restart ({', '.join(unplaced[:5])})")
            left[f] = np.inf
            redone[int(f)] = left
        self.pending = (added, host, redone, shared, demand[2])
        return None

    def commit(self) -> None:
        """Keeps the last check that passed; its VM is booked in the workspace right after."""
        added, host, redone, shared, disk = self.pending
        moving, mirror = added[1], added[2]
        self.on_host.setdefault(host, []).append(added)
        self.left[:, host] -= moving
        if mirror >= 0:
            self.left[:, mirror, 2] -= disk
        if shared is not None:
            self.left[:, shared, 2] -= disk
        for f, left in redone.items():
            self.left[f] = left

    def _moving(self, demand, host, mirror):
        """What a VM on `host` takes with it when it restarts elsewhere: no disk from a pooled
        storage, which every host that may restart it already sees."""
        return demand * (1.0, 1.0, 0.0) if self.state.pooled[host] and mirror < 0 else demand

    def _shared(self, host, mirror):
        """The open hosts whose free disk a new disk on a pooled `host` also takes, or None."""
        if not self.state.pooled[host] or mirror >= 0:
            return None
        return np.flatnonzero(self.state.disk_room(host) & self.state.accepts_vms)

    def _plan(self, f, free, vm_count, added=None):
        extra = self.on_host.get(f, []) + ([added] if added else [])
        return failure_plan(self.state, f, free, vm_count, extra)


def _probe(i: int) -> str:
    """The name of the i-th VM capacity adds, as failure messages show it."""
    return f"capacity-probe-{i}"


def _with_added(state, added, catalogue, disks):
    return state.add(*(VMRecord(_probe(i), host=state.host_names[h],
                                cpus=catalogue[name].cpus, memory_mib=catalogue[name].memory_mib,
                                disk_gib=_disk(catalogue[name], disks),
                                secondary=state.host_names[mirror] if mirror >= 0 else None,
                                migratable=mirror < 0)
                       for i, (name, h, mirror) in enumerate(added)))


def _keeping_ha(state, added, catalogue, failures, stop, disks):
    """Longest prefix of `added` after which N+failures holds (bisection; it holds before
    any is added)."""
    def holds(n):
        return ha_admission(_with_added(state, added[:n], catalogue, disks), failures)

    if holds(len(added)).ok:
        return len(added), stop
    low, high = 0, len(added)          # N+k holds after `low` VMs, fails after `high`
    while high - low > 1:
        middle = (low + high) // 2
        if holds(middle).ok:
            low = middle
        else:
            high = middle
    failing = holds(high)
    return low, f"one more VM breaks N+{failures}: {failing.message}"
