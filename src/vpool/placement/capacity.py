"""`capacity`: how many more VMs of a flavor mix fit while the pool keeps N+k (what Ganeti's
`hspace` answers).

New VMs are placed one after another in the mix's proportions (a smooth weighted round
robin, so a 3:1 mix goes a a b a a a b a …) by the same filters and weighers as `place`,
until one does not fit. Then a bisection over that sequence finds the longest prefix after
which `ha_admission` still holds: each added VM only takes room, so N+k only gets harder.

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

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .ha import ha_admission
from .filters import EPSILON
from .place import DEFAULT_POLICY, PlacementPolicy, place
from .request import PlacementRequest
from .score import mirror_memory
from .state import ClusterState, VMRecord, Workspace

#: where a new VM's disk goes (see the module's docstring)
DISKS = ("local", "shared", "mirrored")

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
    work = Workspace(state)
    mirrors = _Mirrors(state) if disks == "mirrored" else None
    added: list[tuple[str, int, int]] = []    # (flavor, host, mirror host or -1)
    credit = np.zeros(len(names))
    stop = f"stopped after {limit} VMs"
    while len(added) < limit:
        credit += weights
        pick = int(np.argmax(credit))
        credit[pick] -= weights.sum()
        flavor = catalogue[names[pick]]
        request = PlacementRequest(f"{names[pick]}-{len(added) + 1}", cpus=flavor.cpus,
                                   memory_mib=flavor.memory_mib,
                                   disk_gib=0 if disks == "shared" else flavor.disk_gib)
        decision = place(work, request, policy)
        if not decision.ok:
            stop = f"the next {names[pick]} VM does not fit: {decision.message}"
            break
        h = state.host_index[decision.host]
        mirror = -1
        if mirrors is not None:
            mirror = mirrors.choose(work, h, request)
            if mirror < 0:
                stop = (f"the next {names[pick]} VM has no host for its mirror: no host but "
                        f"{decision.host} has {request.disk_gib:g} GiB disk free")
                break
            mirrors.book(work, h, mirror, request)
        work.add(h, request.demand)
        added.append((names[pick], h, mirror))
    room = len(added)
    fits, limited_by = room, stop
    if failures:
        fits, limited_by = _keeping_ha(state, added, catalogue, failures, stop, disks)
    by_flavor = {n: sum(1 for name, *_ in added[:fits] if name == n) for n in names}
    hosts = state.host_names
    placements = tuple((name, hosts[h], hosts[m] if m >= 0 else None) for name, h, m in added[:fits])
    return CapacityReport(dict(mix), failures, fits, room, by_flavor, limited_by, disks, placements)


class _Mirrors:
    """Peer memory per (mirror host, primary host), kept as mirrors are booked, so each new
    mirror can go where N+1 still holds. Sparse: a primary has few mirrors,
    and a dense matrix of a 10,000-host pool would take 800 MB."""

    def __init__(self, state: ClusterState):
        self.storage = state.storage
        self.peer: dict[int, dict[int, float]] = {}    # primary -> {mirror: memory}
        self.r_mem = np.zeros(state.n_hosts)
        pairs = np.flatnonzero((state.vm_secondary >= 0) & (state.vm_host >= 0))
        memory = mirror_memory(state)
        for v in pairs:
            self._count(int(state.vm_host[v]), int(state.vm_secondary[v]), float(memory[v]))

    def _count(self, primary: int, mirror: int, memory: float) -> None:
        mirrors = self.peer.setdefault(primary, {})
        mirrors[mirror] = mirrors.get(mirror, 0.0) + memory
        self.r_mem[mirror] = max(self.r_mem[mirror], mirrors[mirror])

    def choose(self, work: Workspace, primary: int, request: PlacementRequest) -> int:
        """The mirror host for a VM on `primary`, or -1 when no other host has the disk."""
        fits = work.accepts_vms & (work.free[:, 2] + EPSILON >= request.disk_gib)
        fits &= self.storage == self.storage[primary]
        fits[primary] = False
        if not fits.any():
            return -1
        towards = np.zeros(self.r_mem.size)
        for mirror, memory in self.peer.get(primary, {}).items():
            towards[mirror] = memory
        spare = work.free[:, 1] - np.maximum(self.r_mem, towards + request.memory_mib)
        keeps = fits & (spare + EPSILON >= 0)
        candidates = np.flatnonzero(keeps if keeps.any() else fits)
        order = np.lexsort((-spare[candidates], -work.free[candidates, 2]))
        return int(candidates[order[0]])

    def book(self, work: Workspace, primary: int, mirror: int, request: PlacementRequest) -> None:
        work.add_mirror(mirror, request.disk_gib)
        self._count(primary, mirror, request.memory_mib)


def _with_added(state, added, catalogue, n, disks):
    extra = tuple(VMRecord(f"capacity-probe-{i}", host=state.host_names[h],
                           cpus=catalogue[name].cpus, memory_mib=catalogue[name].memory_mib,
                           disk_gib=0 if disks == "shared" else catalogue[name].disk_gib,
                           secondary=state.host_names[mirror] if mirror >= 0 else None,
                           migratable=mirror < 0)
                  for i, (name, h, mirror) in enumerate(added[:n]))
    return ClusterState.from_records(state.hosts, state.vms + extra, state.group_policies)


def _keeping_ha(state, added, catalogue, failures, stop, disks):
    """Longest prefix of `added` after which N+failures holds (bisection)."""
    def holds(n):
        return ha_admission(_with_added(state, added, catalogue, n, disks), failures)

    first = ha_admission(state, failures)
    if not first.ok:
        return 0, f"N+{failures} already fails before any VM is added: {first.message}"
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
