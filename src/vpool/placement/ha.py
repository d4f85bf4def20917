"""`ha_admission`: could every VM of any k failed hosts restart on the others (N+k)?

For each failure set the VMs of the failed hosts are restarted on the survivors largest
first, each on the fullest survivor with room that sees its disk (best fit, keeping
anti-affinity), the way an HA restart would have to fit them. A VM whose disk is mirrored
(DRBD) restarts on its mirror host or not at all, as a Ganeti failover does, and, like one,
whatever else of its anti-affinity group runs there: it has no other host to keep apart on,
so refusing would keep it down and protect nothing. With one failure every host
is tried; with more, every set is tried when there are few enough, otherwise the sets a
load-ranking makes worst (the k hosts holding the most memory, CPU or VMs, and each host
with the k−1 heaviest others) — the report says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from math import comb
from typing import Sequence

import numpy as np

from .filters import EPSILON
from .request import count
from .state import RESOURCES, ClusterState

#: up to this many failure sets are all tried
EXHAUSTIVE_SETS = 2_000


@dataclass(frozen=True)
class HaReport:
    """The answer for N+`failures`.

    `worst` is the failure set that leaves the least room (or that fails), `unplaced` the
    VMs that could not restart then, `bottlenecks` the hosts whose failure cannot be
    absorbed, `headroom` the share of the survivors' usable capacity still free per
    resource after the worst failure.
    """

    failures: int
    ok: bool
    worst: tuple[str, ...] = ()
    unplaced: tuple[str, ...] = ()
    bottlenecks: tuple[str, ...] = ()
    headroom: dict[str, float] = field(default_factory=dict)
    sets_tried: int = 0
    exhaustive: bool = True
    message: str = ""


def ha_admission(state: ClusterState, failures: int = 1) -> HaReport:
    """Check N+`failures` over the hosts that run or may run VMs."""
    if failures < 1:
        raise ValueError(f"failures must be at least 1, got {failures}")
    hosts = np.flatnonzero(state.up)
    if failures >= hosts.size:
        return HaReport(failures, False, message=f"the pool has {count(hosts.size, 'host')} up; "
                                                    f"it cannot survive {count(failures, 'failure')}")
    sets, exhaustive = _failure_sets(state, hosts, failures)
    on_host = [[] for _ in range(state.n_hosts)]
    for v, h in enumerate(state.vm_host):
        if h >= 0:
            on_host[h].append(v)
    hard, members = _anti_affinity(state)
    free, vm_count = state.free, state.vm_count
    worst = None
    bottlenecks: set[int] = set()
    for failed in sets:
        victims = _victims(state, [v for h in failed for v in on_host[h]], hard)
        unplaced, headroom, _ = _restart(state, failed, victims, members, free, vm_count)
        key = (len(unplaced) == 0, float(headroom.min()))
        if unplaced:
            bottlenecks.update(failed)
        if worst is None or key < worst[0]:
            worst = (key, failed, unplaced, headroom)
    _, failed, unplaced, headroom = worst
    names = state.host_names
    ok = not bottlenecks
    scope = (f"whichever {count(failures, 'host')} fail" if exhaustive else
             f"for the {len(sets)} heaviest sets of {count(failures, 'host')} tried")
    if ok:
        message = (f"N+{failures} holds {scope}: their VMs restart on the others; after the "
                   f"worst ({', '.join(names[h] for h in failed)}) "
                   + ", ".join(f"{r} {s:.0%}" for r, s in zip(RESOURCES, headroom)) + " stays free")
    else:
        message = (f"N+{failures} fails: if {', '.join(names[h] for h in failed)} "
                   f"{'fails' if len(failed) == 1 else 'fail'}, "
                   f"{count(len(unplaced), 'VM')} cannot restart ({', '.join(unplaced[:5])}"
                   f"{', …' if len(unplaced) > 5 else ''})")
    return HaReport(failures, ok, tuple(names[h] for h in failed), tuple(unplaced),
                    tuple(names[h] for h in sorted(bottlenecks)),
                    {r: float(s) for r, s in zip(RESOURCES, headroom)}, len(sets), exhaustive,
                    message)


def _failure_sets(state, hosts, k):
    if comb(hosts.size, k) <= EXHAUSTIVE_SETS:
        return [tuple(int(h) for h in c) for c in combinations(hosts, k)], True
    load = [state.used[hosts, 1], state.used[hosts, 0], state.vm_count[hosts].astype(float)]
    sets = {tuple(sorted(int(h) for h in hosts[np.argsort(-x, kind="stable")[:k]]))
            for x in load}
    heaviest = hosts[np.argsort(-state.used[hosts, 1], kind="stable")]
    for h in hosts:
        others = [int(o) for o in heaviest if o != h][:k - 1]
        sets.add(tuple(sorted([int(h)] + others)))
    return sorted(sets), False


def failure_plan(state: ClusterState, host: int, free: np.ndarray, vm_count: np.ndarray,
                 extra: Sequence[tuple[str, np.ndarray, int]] = ()) -> tuple[list[str], np.ndarray]:
    """`ha_admission`'s restart plan for the failure of host index `host` alone: the VMs
    that find no room, and what the plan leaves free on each host (-inf where none may go).

    `free` and `vm_count` per host and `extra` (name, demand, mirror host or -1 of each VM
    on `host` that `state` does not list; in no group) let a caller that adds VMs one after
    another ask without building a new state for each."""
    hard, members = _anti_affinity(state)
    victims = _victims(state, np.flatnonzero(state.vm_host == host), hard)
    if extra:
        names, demand, mirror = zip(*extra)
        victims = _Victims(victims.names + list(names), np.vstack([victims.demand, *demand]),
                           np.concatenate([victims.mirror, mirror]),
                           np.concatenate([victims.storage, np.full(len(names), state.storage[host])]),
                           victims.groups + [[] for _ in names])
    unplaced, _, left = _restart(state, (host,), victims, members, free, vm_count)
    return unplaced, left


def _anti_affinity(state):
    """(the hard anti-affinity groups, their members per host, one row per group or None)."""
    hard = sorted(state.groups_with("anti-affinity"))
    return hard, np.stack([state.group_members(g) for g in hard]) if hard else None


@dataclass(frozen=True)
class _Victims:
    """The VMs of failed hosts, as `_restart` needs them: per VM its name, demand, mirror
    host (-1 for none), storage code, and the indices of its hard anti-affinity groups."""

    names: list[str]
    demand: np.ndarray
    mirror: np.ndarray
    storage: np.ndarray
    groups: list[list[int]]


def _victims(state, vms, hard) -> _Victims:
    vms = np.asarray(vms, dtype=np.int64)
    return _Victims([state.vms[v].name for v in vms], state.demand[vms], state.vm_secondary[vms],
                    state.vm_storage[vms],
                    [[i for i, g in enumerate(hard) if g in state.vms[v].groups] for v in vms])


def _restart(state, failed, victims, members, free, vm_count):
    """(VMs that found no room, free share per resource on survivors, free room per host
    after the restarts, -inf where none may go) for one failure set, from `free` and
    `vm_count` per host."""
    survivors = state.accepts_vms.copy()
    survivors[list(failed)] = False
    targets = np.flatnonzero(survivors)
    free = free[targets].copy()
    count = vm_count[targets].astype(float)
    room = state.max_vms[targets]
    crowd = members[:, targets].copy() if members is not None else None
    scale = np.maximum(state.usable[targets].max(axis=0), EPSILON) if targets.size \
        else np.ones(3)
    order = np.argsort(-(victims.demand / scale).max(axis=1), kind="stable")
    unplaced = []
    for v in order:
        demand = victims.demand[v]
        mirror = victims.mirror[v]
        if mirror >= 0:
            demand = demand * (1.0, 1.0, 0.0)   # its disk copy is already on the mirror
        fits = (free + EPSILON >= demand).all(axis=1) & (count < room)
        fits &= state.storage[targets] == victims.storage[v]  # where its disk is
        if mirror >= 0:
            fits &= targets == mirror
        groups = [] if mirror >= 0 else victims.groups[v]
        for i in groups:
            fits &= crowd[i] == 0
        if not fits.any():
            unplaced.append(victims.names[v])
            continue
        left = ((free[fits] - demand) / scale).sum(axis=1)
        j = np.flatnonzero(fits)[int(np.argmin(left))]
        free[j] -= demand
        count[j] += 1
        for i in groups:
            crowd[i, j] += 1
    usable = state.usable[targets].sum(axis=0)
    headroom = np.divide(free.sum(axis=0), usable, out=np.ones(3), where=usable > 0)
    left = np.full((state.n_hosts, 3), -np.inf)
    left[targets] = free
    return unplaced, headroom, left
