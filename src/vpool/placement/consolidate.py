"""`consolidate` (DPM): empty as many hosts as the target utilisations allow, so they can be
powered off — or, when demand passes the high mark, say which powered-off hosts to wake.

It first decides which hosts stay on — the fewest, largest hosts that hold every VM under
the targets, found by bisection over first-fit-decreasing packings — and only then which VMs
move. VMs on hosts that stay on do not move unless their host is above a target; such a
host first sheds as little as it can, to hosts that only receive, and only then takes VMs
from hosts being emptied. So every host's load moves one way per phase, towards a final
load under the targets, and every intermediate state fits. A host holding a VM that cannot
move (not live-migratable, or kept out of plans: `auto_balance` off) stays on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .filters import EPSILON
from .packing import lower_bound
from .plan import Move, Plan, staged
from .request import count
from .score import hbal_score, host_divisors, per_host, vm_arrays
from .state import ClusterState


#: a host tagged so stays on whatever the load (vpool tags the machine the control plane runs on)
STAYS_ON = "stays-on"


@dataclass(frozen=True)
class ConsolidationPolicy:
    """Targets are shares of each host's usable capacity that consolidation may fill;
    `wake_above` is the share of the powered-on pool's capacity above which hosts are
    woken instead. `min_hosts` stay on whatever the load. With `measured_cpu` (the VMs'
    `cpu_load` measured, each host's `cpu_pool` its CPUs) the VMs a host keeps must also keep
    its CPUs at most `load_target` busy: vCPUs allotted four to a core pack idle VMs, and
    busy ones would wait for CPU; as vCenter's DPM, it never consolidates into contention. 0.63
    is DPM's demand target, and on PlanetLab traces (benchmarks/dpm_load.py) it kept CPU
    contention where no consolidation has it, which 0.8 did not. Above `load_wake_above` of the
    powered-on CPUs busy (DPM's 81 %), hosts are woken instead."""

    cpu_target: float = 0.8
    memory_target: float = 0.9
    disk_target: float = 1.0
    wake_above: float = 0.9
    max_moves: int | None = None
    min_hosts: int = 1
    load_target: float = 0.63
    load_wake_above: float = 0.81
    measured_cpu: bool = False

    @property
    def targets(self) -> np.ndarray:
        return np.array([self.cpu_target, self.memory_target, self.disk_target])


@dataclass(frozen=True)
class _Resources:
    """What consolidation packs, per VM (`demand`) and per host (`used`, `usable`), with the
    share of each it fills to (`targets`) and above which it wakes hosts (`wake_at`): the three
    allocations, and with `measured_cpu` a fourth, the cores the VMs' measured load keeps busy
    (usable: the host's CPUs; DPM's 63 % target and 81 % wake-up point by default)."""

    names: tuple[str, ...]
    demand: np.ndarray
    used: np.ndarray
    usable: np.ndarray
    targets: np.ndarray
    wake_at: np.ndarray

    @classmethod
    def of(cls, state: ClusterState, policy: ConsolidationPolicy) -> "_Resources":
        plain = cls(("CPU", "memory", "disk"), state.demand, state.used, state.usable, policy.targets,
                    np.full(3, policy.wake_above))
        if not policy.measured_cpu:
            return plain
        load = vm_arrays(state, True)["cpu_load"]
        return cls(plain.names + ("measured CPU",), np.column_stack([state.demand, load]),
                   np.column_stack([state.used, per_host(state, load)]),
                   np.column_stack([state.usable, host_divisors(state)["cpu_pool"]]),
                   np.append(policy.targets, policy.load_target), np.append(plain.wake_at, policy.load_wake_above))


def consolidate(state: ClusterState, policy: ConsolidationPolicy = ConsolidationPolicy()) -> Plan:
    """Moves that empty hosts and the hosts to power off; or the hosts to wake."""
    score = hbal_score(state)
    on = state.accepts_vms
    res = _Resources.of(state, policy)
    pool = res.usable[on].sum(axis=0)
    share = np.divide(res.used[on].sum(axis=0), pool, out=np.zeros(pool.size), where=pool > 0)
    if (share > res.wake_at).any():
        wake = _hosts_to_wake(state, res)
        words = ", ".join(f"{r} {s:.0%} (high mark {w:.0%})" for r, s, w in zip(res.names, share, res.wake_at)
                          if s > w)
        return Plan("consolidate", (), score, score, wake=wake,
                    note=f"demand is above the high mark: {words}; wake {count(len(wake), 'host')}")
    if not on.any():
        return Plan("consolidate", (), score, score, note="no host is up and out of maintenance")
    layout = _Layout(state, policy, res)
    keep = layout.fewest_hosts()
    moves = layout.moves(keep)
    note = "the fewest hosts that hold every VM under the targets stay on"
    if policy.max_moves is not None and len(moves) > policy.max_moves:
        moves = _within_budget(moves, policy.max_moves)
        note = f"move budget of {policy.max_moves} reached"
    names = state.host_names
    emptied = set(np.flatnonzero(on).tolist()) - set(keep.tolist())
    leaving = np.bincount([s for _, s, _ in moves], minlength=state.n_hosts)
    off = sorted(h for h in emptied if leaving[h] == state.vm_count[h])
    plan_moves = [Move(state.vms[v].name, names[s], names[d],
                       f"empty {names[s]} so it can be powered off" if s in emptied
                       else f"bring {names[s]} under the targets") for v, s, d in moves]
    after = hbal_score(state.with_moves((m.vm, m.dst) for m in plan_moves)) \
        if plan_moves else score
    return Plan("consolidate", staged(plan_moves), score, after,
                power_off=tuple(names[h] for h in off),
                note=f"{note}; {count(len(off), 'host')} can be powered off")


def _hosts_to_wake(state: ClusterState, res: _Resources):
    """Powered-off hosts, largest first, until the pool is back under the targets."""
    asleep = np.flatnonzero(~state.up & ~state.maintenance)
    order = asleep[np.argsort(-state.usable[asleep, 1], kind="stable")]
    capacity = res.usable[state.accepts_vms].sum(axis=0)
    demand = res.used.sum(axis=0)
    wake = []
    for h in order:
        if (demand <= capacity * res.targets + EPSILON).all():
            break
        capacity = capacity + res.usable[h]
        wake.append(state.host_names[h])
    return tuple(wake)


def _within_budget(moves, budget):
    """Whole hosts' worth of moves, in plan order, while the budget lasts."""
    by_source: dict[int, list] = {}
    for move in moves:
        by_source.setdefault(move[1], []).append(move)
    kept = []
    for group in by_source.values():
        if len(kept) + len(group) <= budget:
            kept += group
    return kept


def _seen_elsewhere(state: ClusterState) -> np.ndarray:
    """Per VM: another host that takes VMs is on its disk's storage. A VM without one keeps its
    host on, which the layout then orders first, as it does hosts of VMs that cannot move."""
    if not state.vms:
        return np.zeros(0, dtype=bool)
    placed = state.vm_host >= 0
    codes = np.where(placed, state.vm_storage, 0)
    on = state.accepts_vms
    hosts_on = np.bincount(state.storage[on], minlength=int(max(state.storage.max(initial=0), codes.max()) + 1))
    own = on[state.vm_host] & (state.storage[state.vm_host] == codes) & placed
    return placed & (hosts_on[codes] - own > 0)


class _Layout:
    """Which hosts stay on and where the VMs of the others go."""

    def __init__(self, state: ClusterState, policy: ConsolidationPolicy, res: _Resources):
        self.state = state
        self.policy = policy
        self.demand, self.used, self.limit = res.demand, res.used, res.usable * res.targets
        on = state.accepts_vms
        self.on_host: list[list[int]] = [[] for _ in range(state.n_hosts)]
        for v, h in enumerate(state.vm_host):
            if h >= 0 and on[h]:
                self.on_host[h].append(v)
        self.movable = np.fromiter((v.migratable and v.auto_balance and v.secondary is None for v in state.vms),
                                   dtype=bool, count=len(state.vms)) & _seen_elsewhere(state)
        pinned = np.array([not self.movable[vms].all() for vms in self.on_host], dtype=bool) | state.tag_mask(STAYS_ON)
        hosts = np.flatnonzero(on)
        # hosts that must stay first, then the largest, then the fullest (fewer moves)
        size = (self.limit[hosts] / np.maximum(self.limit[hosts].max(axis=0), EPSILON)).sum(1)
        self.order = hosts[np.lexsort((-state.used[hosts, 1], -size, ~pinned[hosts]))]
        self.must, self.pinned = int(pinned[hosts].sum()), pinned
        self.hard = sorted(state.groups_with("anti-affinity"))
        self.scale = np.maximum(self.limit[hosts].max(axis=0), EPSILON)

    def fewest_hosts(self) -> np.ndarray:
        """The shortest prefix of the host order that holds every VM (bisection)."""
        n = self.order.size
        demand = self.demand[[v for vms in self.on_host for v in vms]]
        low = max(1, self.policy.min_hosts, self.must,
                  lower_bound(self.limit[self.order], demand) if demand.size else 1)
        low = min(low, n)
        high = n
        if self._assign(self.order[:high]) is None:
            return self.order
        while low < high:
            middle = (low + high) // 2
            if self._assign(self.order[:middle]) is None:
                low = middle + 1
            else:
                high = middle
        return self._without_idle(self.order[:high])

    def _without_idle(self, keep: np.ndarray) -> np.ndarray:
        """`keep` less the hosts that would hold no VM: the order puts the largest first, which
        may see none of these VMs' storage. First fit never chose them, so without them every
        VM goes where it went; `min_hosts` (at least one) stay on all the same."""
        empty = np.array([not self.on_host[h] for h in keep], dtype=bool) & ~self.pinned[keep]
        if not empty.any():
            return keep         # each kept host holds VMs of its own: no packing to redo
        receiving = {dst for _, _, dst in self._assign(keep)}
        idle = empty & np.array([h not in receiving for h in keep], dtype=bool)
        spare = int(idle.sum()) - max(0, keep.size - max(1, self.policy.min_hosts))
        if spare > 0:
            idle[np.flatnonzero(idle)[:spare]] = False   # the first of them stay, to make up min_hosts
        return keep[~idle]

    def moves(self, keep: np.ndarray) -> list[tuple[int, int, int]]:
        """(vm, src, dst) moves that leave only `keep` running VMs; none if that is all."""
        return [] if keep.size == self.order.size else self._assign(keep)

    def _shed(self, candidates: list[int], excess: np.ndarray) -> int:
        """The smallest VM whose leaving ends the excess, else the largest: a host above a
        target sheds as little as it can, since it then takes no VM."""
        demand = self.demand[candidates]
        size = (demand / self.scale).max(axis=1)
        enough = (demand + EPSILON >= excess).all(axis=1)
        pool = np.flatnonzero(enough) if enough.any() else np.arange(len(candidates))
        pick = pool[np.argmin(size[pool])] if enough.any() else pool[np.argmax(size[pool])]
        return candidates[int(pick)]

    def _assign(self, keep: np.ndarray):
        """(vm, src, dst) moves that empty every other host, or None if they do not fit."""
        state = self.state
        used = self.used[keep].copy()
        count = state.vm_count[keep].astype(float)
        members = np.stack([state.group_members(g)[keep] for g in self.hard]) \
            if self.hard else None
        homeless = [v for h in np.setdiff1d(self.order, keep) for v in self.on_host[h]]
        sheds = np.zeros(keep.size, dtype=bool)
        shed: set[int] = set()
        for j, h in enumerate(keep):
            if (used[j] <= self.limit[h] + EPSILON).all():
                continue
            sheds[j] = True
            candidates = [v for v in self.on_host[h] if self.movable[v]]
            while candidates and not (used[j] <= self.limit[h] + EPSILON).all():
                v = self._shed(candidates, used[j] - self.limit[h])
                candidates.remove(v)
                used[j] -= self.demand[v]
                homeless.append(v)
                shed.add(v)
        free = self.limit[keep] - used
        room = state.max_vms[keep]
        size = (self.demand[homeless] / self.scale).max(axis=1) if homeless else []
        moves = []
        for i in np.argsort(-np.asarray(size), kind="stable"):
            v = homeless[i]
            demand = self.demand[v]
            fits = (free + EPSILON >= demand).all(axis=1) & (count < room)
            if v in shed:
                fits &= ~sheds
            fits &= state.storage[keep] == state.vm_storage[v]
            groups = [k for k, g in enumerate(self.hard) if g in state.vms[v].groups]
            for k in groups:
                fits &= members[k] == 0
            if not fits.any():
                return None
            j = int(np.flatnonzero(fits)[0])
            free[j] -= demand
            count[j] += 1
            for k in groups:
                members[k, j] += 1
            moves.append((v, int(state.vm_host[v]), int(keep[j])))
        # VMs leave hosts above a target before any VM arrives there
        return sorted(moves, key=lambda m: m[0] not in shed)
