"""`capacity`: how many more VMs of a flavor mix fit while the pool keeps N+k (what Ganeti's
`hspace` answers).

New VMs are placed one after another in the mix's proportions (a smooth weighted round
robin, so a 3:1 mix goes a a b a a a b a …) by the same filters and weighers as `place`,
until one does not fit. Then a bisection over that sequence finds the longest prefix after
which `ha_admission` still holds: each added VM only takes room, so N+k only gets harder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .ha import ha_admission
from .place import DEFAULT_POLICY, PlacementPolicy, place
from .request import PlacementRequest
from .state import ClusterState, VMRecord, Workspace

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
    by room alone, per flavor in `by_flavor`; `limited_by` says what stopped it."""

    mix: dict[str, float]
    failures: int
    fits: int
    fits_without_ha: int
    by_flavor: dict[str, int] = field(default_factory=dict)
    limited_by: str = ""


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
             limit: int = 1_000_000) -> CapacityReport:
    """Count the VMs of `mix` (flavor name -> weight) that fit; `flavors` maps names to
    anything with cpus, memory_mib and disk_gib (default: DEFAULT_FLAVORS). `failures=0`
    counts room only."""
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
    added: list[tuple[str, int]] = []
    credit = np.zeros(len(names))
    stop = f"stopped after {limit} VMs"
    while len(added) < limit:
        credit += weights
        pick = int(np.argmax(credit))
        credit[pick] -= weights.sum()
        flavor = catalogue[names[pick]]
        request = PlacementRequest(f"{names[pick]}-{len(added) + 1}", cpus=flavor.cpus,
                                   memory_mib=flavor.memory_mib, disk_gib=flavor.disk_gib)
        decision = place(work, request, policy)
        if not decision.ok:
            stop = f"the next {names[pick]} VM does not fit: {decision.message}"
            break
        h = state.host_index[decision.host]
        work.add(h, request.demand)
        added.append((names[pick], h))
    room = len(added)
    fits, limited_by = room, stop
    if failures:
        fits, limited_by = _keeping_ha(state, added, catalogue, failures, stop)
    by_flavor = {n: sum(1 for name, _ in added[:fits] if name == n) for n in names}
    return CapacityReport(dict(mix), failures, fits, room, by_flavor, limited_by)


def _with_added(state, added, catalogue, n):
    extra = tuple(VMRecord(f"capacity-probe-{i}", host=state.host_names[h],
                           cpus=catalogue[name].cpus, memory_mib=catalogue[name].memory_mib,
                           disk_gib=catalogue[name].disk_gib)
                  for i, (name, h) in enumerate(added[:n]))
    return ClusterState.from_records(state.hosts, state.vms + extra, state.group_policies)


def _keeping_ha(state, added, catalogue, failures, stop):
    """Longest prefix of `added` after which N+failures holds (bisection)."""
    first = ha_admission(state, failures)
    if not first.ok:
        return 0, f"N+{failures} already fails before any VM is added: {first.message}"
    if ha_admission(_with_added(state, added, catalogue, len(added)), failures).ok:
        return len(added), stop
    low, high = 0, len(added)          # N+k holds after `low` VMs, fails after `high`
    while high - low > 1:
        middle = (low + high) // 2
        if ha_admission(_with_added(state, added, catalogue, middle), failures).ok:
            low = middle
        else:
            high = middle
    failing = ha_admission(_with_added(state, added, catalogue, high), failures)
    return low, f"one more VM breaks N+{failures}: {failing.message}"
