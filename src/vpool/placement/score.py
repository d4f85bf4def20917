"""Ganeti's cluster score ("CV", hbal 3.0.2), computed over a `ClusterState` with NumPy.

The score is Σ wₖ·vₖ, where most vₖ are population standard deviations over the online
hosts of a per-host value (free memory share, vCPU ratio, load, …). It is exactly what
`hbal` and `hinfo` print, so vpool's plans and hbal's are judged by the same number; the
exact component list is in WEIGHTS, in hbal's order.

`sigma_terms` exposes the standard-deviation terms in the form the balancer needs: a
per-host value x, and for each VM the amount a it adds to x on a host with divisor c
(x_h += a/c_h). That form lets the change of every σ for every (VM, destination) pair be
computed at once from running sums Σx and Σx².

What vpool does not model is zero here, as it is in Ganeti for such clusters: forthcoming
instances (the `_forth` terms equal their plain twins except memory, where stopped VMs count)
and location tags (`location_score`, `location_exclusion_score`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .state import ClusterState

WEIGHTS: tuple[tuple[str, float], ...] = (
    ("free_mem_cv", 0.5), ("free_disk_cv", 0.5), ("n1_cnt", 1.0),
    ("reserved_mem_cv", 1.0), ("offline_all_cnt", 4.0),
    ("offline_pri_cnt", 16.0), ("vcpu_ratio_cv", 0.5),
    ("cpu_load_cv", 1.0), ("mem_load_cv", 1.0), ("disk_load_cv", 1.0),
    ("net_load_cv", 1.0), ("pri_tags_score", 2.0), ("spindles_cv", 0.5),
    ("free_mem_cv_forth", 0.5), ("free_disk_cv_forth", 0.5),
    ("vcpu_ratio_cv_forth", 0.5), ("spindles_cv_forth", 0.5),
    ("location_score", 1.0), ("location_exclusion_score", 1.0),
    ("reserved_mem_rtotal", 0.25),
)

#: the terms that stand for CPU use where none is measured (sigma_terms, `measured_cpu`)
_ALLOCATED_CPU = frozenset({"vcpu_ratio_cv", "mem_load_cv", "disk_load_cv", "net_load_cv"})

#: offline_all_cnt and offline_pri_cnt weights: what moving one VM off an offline host gains
OFFLINE_WEIGHT = 4.0 + 16.0
TAGS_WEIGHT = 2.0


@dataclass(frozen=True)
class SigmaTerm:
    """A σ term: per-host value x; a VM adds a/c_h to x on host h, and on the host of its DRBD
    mirror too when the term is `mirrored` (disk terms: the mirror holds a copy)."""

    names: tuple[str, ...]
    weight: float
    x: np.ndarray
    a: np.ndarray
    c: np.ndarray
    mirrored: bool = False


def per_host(state: ClusterState, weights, secondary=False) -> np.ndarray:
    placed = state.vm_host >= 0
    total = np.bincount(state.vm_host[placed], weights=weights[placed], minlength=state.n_hosts)
    if secondary:
        mirrored = state.vm_secondary >= 0
        total += np.bincount(state.vm_secondary[mirrored], weights=weights[mirrored],
                             minlength=state.n_hosts)
    return total


def vm_arrays(state: ClusterState, dynamic_load: bool) -> dict[str, np.ndarray]:
    """Per-VM amounts the score counts. Without dynamic load every VM weighs 1 in each load
    term, as in hbal without `-U`; a VM's measured CPU load replaces its 1 in the CPU term."""
    vms = state.vms
    n = len(vms)
    running = np.fromiter((v.running for v in vms), dtype=bool, count=n)
    load = np.fromiter((1.0 if v.cpu_load is None else v.cpu_load for v in vms), float, n)
    unit = np.ones(n) if dynamic_load else np.zeros(n)
    return {
        "running_mem": state.demand[:, 1] * running,
        "mem": state.demand[:, 1].copy(),
        "cpus": state.demand[:, 0].copy(),
        "disk": state.demand[:, 2].copy(),
        "spindles": np.fromiter((v.spindle_use for v in vms), float, n),
        "cpu_load": load if dynamic_load else np.zeros(n),
        "unit": unit,
    }


def host_divisors(state: ClusterState) -> dict[str, np.ndarray]:
    cap = state.capacity
    with np.errstate(divide="ignore"):
        return {
            "mem": np.where(cap[:, 1] > 0, cap[:, 1], np.inf),
            "disk": np.where(cap[:, 2] > 0, cap[:, 2], np.inf),
            "cpus": np.where(cap[:, 0] > 0, cap[:, 0] * _speed(state), np.inf),
            "spindles": np.array([h.spindle_capacity for h in state.hosts], dtype=float),
            "cpu_pool": np.array([h.cpu_pool for h in state.hosts], dtype=float),
            "unit": np.ones(state.n_hosts),
        }


def _speed(state):
    return np.array([h.cpu_speed for h in state.hosts], dtype=float)


def sigma_terms(state: ClusterState, dynamic_load: bool = True, measured_cpu: bool = False) -> list[SigmaTerm]:
    """The σ terms with their per-host x in "used" orientation (σ(−x) = σ(x)), twins merged.

    With `measured_cpu` the VMs' `cpu_load` is what they were measured to use, and the CPU-load
    term takes the place of the vCPU-ratio and VM-count terms: the pool is balanced on what VMs
    use, as vCenter's DRS balances demand. Kept beside it, the vCPU term would undo every move:
    a VM busy on half its vCPUs shifts the vCPU ratio twice as far as the load, so no move off a
    busy host could gain while allocations are even. Capacity still holds each host's vCPUs to
    its CPU ratio.

    Terms whose x, a and c are equal (and, when a VM has a mirror, that count mirrors
    alike) have equal σ whatever moves happen, so they are merged into one with the summed
    weight: with every VM running and no cpu_load, hbal's 20 components reduce to memory,
    vCPU, disk, spindles and VM count.
    """
    a = vm_arrays(state, dynamic_load)
    c = host_divisors(state)
    cap, ratio, reserved = state.capacity, state.ratio, state.reserved
    usable = state.usable
    with np.errstate(divide="ignore", invalid="ignore"):
        free_mem = (usable[:, 1] - per_host(state, a["running_mem"])) / c["mem"]
        free_mem_forth = (cap[:, 1] * ratio[:, 1] - reserved[:, 1] - state.missing_memory
                          - per_host(state, a["mem"])) / c["mem"]
        free_disk = np.where(np.isinf(c["disk"]), 1.0,
                             (usable[:, 2] - state.used[:, 2]) / c["disk"])
        vcpu = (reserved[:, 0] + state.used[:, 0]) / c["cpus"]
        spindles = per_host(state, a["spindles"], secondary=True) / c["spindles"]
        cpu_load = per_host(state, a["cpu_load"]) / c["cpu_pool"]
    mirrors = bool((state.vm_secondary >= 0).any())
    raw = [
        (("free_mem_cv",), 0.5, -free_mem, a["running_mem"], c["mem"], False),
        (("free_mem_cv_forth",), 0.5, -free_mem_forth, a["mem"], c["mem"], False),
        (("free_disk_cv", "free_disk_cv_forth"), 1.0, -free_disk, a["disk"], c["disk"], mirrors),
        (("vcpu_ratio_cv", "vcpu_ratio_cv_forth"), 1.0, vcpu, a["cpus"], c["cpus"], False),
        (("spindles_cv", "spindles_cv_forth"), 1.0, spindles, a["spindles"], c["spindles"], mirrors),
        (("cpu_load_cv",), 1.0, cpu_load, a["cpu_load"], c["cpu_pool"], False),
        (("mem_load_cv",), 1.0, per_host(state, a["unit"]), a["unit"], c["unit"], False),
        (("disk_load_cv",), 1.0, per_host(state, a["unit"], secondary=True), a["unit"],
         c["unit"], mirrors),
        (("net_load_cv",), 1.0, per_host(state, a["unit"]), a["unit"], c["unit"], False),
    ]
    if measured_cpu:
        raw = [r for r in raw if r[0][0] not in _ALLOCATED_CPU]
    terms: list[SigmaTerm] = []
    online = state.up
    for names, weight, x, amount, divisor, mirrored in raw:
        x = np.where(online, x, 0.0)
        for i, t in enumerate(terms):
            if (np.array_equal(t.x, x) and np.array_equal(t.a, amount)
                    and np.array_equal(t.c, divisor) and t.mirrored == mirrored):
                terms[i] = SigmaTerm(t.names + names, t.weight + weight, t.x, t.a, t.c, mirrored)
                break
        else:
            terms.append(SigmaTerm(names, weight, x, amount, divisor, mirrored))
    return terms


def mirror_memory(state: ClusterState) -> np.ndarray:
    """Per VM, the memory its DRBD mirror must be ready to start: an auto-balanced VM's."""
    auto = np.fromiter((v.auto_balance for v in state.vms), dtype=bool, count=len(state.vms))
    return state.demand[:, 1] * auto


class Peers:
    """Ganeti's peer memory: per (secondary, primary) pair, the memory of the auto-balanced
    VMs the secondary would have to start if that primary failed; r_mem is the worst pair."""

    def __init__(self, n_hosts: int, vm_host: np.ndarray, vm_secondary: np.ndarray,
                 secondary_mem: np.ndarray):
        self.n = n_hosts
        pairs = (vm_secondary >= 0) & (vm_host >= 0)
        keys = vm_secondary[pairs].astype(np.int64) * n_hosts + vm_host[pairs]
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.values = np.bincount(inverse.ravel(), weights=secondary_mem[pairs],
                                  minlength=self.keys.size)
        self.best = np.zeros(n_hosts)
        self.best_primary = np.full(n_hosts, -1, dtype=np.int64)
        self.second = np.zeros(n_hosts)
        if self.keys.size:
            sec, pri = self.keys // n_hosts, self.keys % n_hosts
            order = np.lexsort((-self.values, sec))
            sec, pri, values = sec[order], pri[order], self.values[order]
            first = np.ones(sec.size, dtype=bool)
            first[1:] = sec[1:] != sec[:-1]
            self.best[sec[first]] = values[first]
            self.best_primary[sec[first]] = pri[first]
            runner_up = np.zeros(sec.size, dtype=bool)
            runner_up[1:] = first[:-1] & ~first[1:]
            self.second[sec[runner_up]] = values[runner_up]

    @property
    def r_mem(self) -> np.ndarray:
        return self.best

    def lookup(self, secondary: np.ndarray, primary: np.ndarray) -> np.ndarray:
        """Peer memory of each (secondary, primary) pair, 0 where there is none."""
        key = secondary.astype(np.int64) * self.n + primary
        if not self.keys.size:
            return np.zeros(key.shape)
        at = np.minimum(np.searchsorted(self.keys, key), self.keys.size - 1)
        return np.where(self.keys[at] == key, self.values[at], 0.0)

    def without(self, secondary: np.ndarray, primary: np.ndarray, mem: np.ndarray) -> np.ndarray:
        """r_mem of each secondary after `mem` of its pair with `primary` leaves it."""
        others = np.where(self.best_primary[secondary] == primary, self.second[secondary],
                          self.best[secondary])
        return np.maximum(self.lookup(secondary, primary) - mem, others)


def reserved_memory(state: ClusterState) -> np.ndarray:
    """Ganeti's r_mem: per host, the most memory one failed primary would make it start
    (Σ memory of auto-balanced DRBD instances mirrored here, for the worst primary)."""
    return Peers(state.n_hosts, state.vm_host, state.vm_secondary, mirror_memory(state)).r_mem


def n1_state(state: ClusterState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r_mem, unallocated memory, reported free memory) per host, for the N+1 count."""
    running = per_host(state, state.demand[:, 1] * np.fromiter(
        (v.running for v in state.vms), dtype=bool, count=len(state.vms)))
    unallocated = state.usable[:, 1] - running
    reported = (state.capacity[:, 1] * state.ratio[:, 1] - state.reserved[:, 1]
                - state.missing_memory - running)
    return reserved_memory(state), unallocated, reported


def instance_counts(state: ClusterState) -> tuple[np.ndarray, np.ndarray]:
    """(#primaries, #primaries + #secondaries) per host."""
    placed = state.vm_host >= 0
    primaries = np.bincount(state.vm_host[placed], minlength=state.n_hosts)
    mirrored = state.vm_secondary >= 0
    secondaries = np.bincount(state.vm_secondary[mirrored], minlength=state.n_hosts)
    return primaries, primaries + secondaries


def exclusion_groups(state: ClusterState) -> frozenset[str]:
    """Groups whose co-located members the score counts (Ganeti's exclusion tags)."""
    return state.groups_with("anti-affinity") | state.groups_with("soft-anti-affinity")


def tag_conflicts(state: ClusterState) -> np.ndarray:
    """Per host: Σ over exclusion groups of (members − 1) where a group has members."""
    conflicts = np.zeros(state.n_hosts)
    for group in exclusion_groups(state):
        members = state.group_members(group)
        conflicts += np.maximum(members - 1, 0)
    return conflicts


def hbal_components(state: ClusterState, dynamic_load: bool = True,
                    touched: np.ndarray | None = None, measured_cpu: bool = False) -> dict[str, float]:
    """Every component of hbal's score, by hbal's names (see sigma_terms for `measured_cpu`,
    which leaves the vCPU-ratio and VM-count components at 0).

    `touched` marks hosts changed by simulated moves: like hbal, vpool judges their N+1
    state by unallocated memory, and the others by the free memory the file reported.
    """
    online = state.up
    components = dict.fromkeys((name for name, _ in WEIGHTS), 0.0)
    for term in sigma_terms(state, dynamic_load, measured_cpu):
        sigma = float(np.std(term.x[online])) if online.any() else float("nan")
        for name in term.names:
            components[name] = sigma
    r_mem, unallocated, reported = n1_state(state)
    touched = np.zeros(state.n_hosts, dtype=bool) if touched is None else touched
    fail = np.where(touched, unallocated <= r_mem, reported < r_mem)
    primaries, instances = instance_counts(state)
    components["n1_cnt"] = float(instances[fail & online].sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(state.capacity[:, 1] > 0, r_mem / state.capacity[:, 1], 0.0)
    components["reserved_mem_cv"] = float(np.std(share[online])) if online.any() else float("nan")
    components["reserved_mem_rtotal"] = float(share[online].sum())
    components["offline_all_cnt"] = float(instances[~online].sum())
    components["offline_pri_cnt"] = float(primaries[~online].sum())
    components["pri_tags_score"] = float(tag_conflicts(state)[online].sum())
    return components


def hbal_score(state: ClusterState, dynamic_load: bool = True,
               touched: np.ndarray | None = None, measured_cpu: bool = False) -> float:
    """hbal's cluster score of `state` (lower is better; 0 is perfectly balanced)."""
    components = hbal_components(state, dynamic_load, touched, measured_cpu)
    return float(sum(w * components[name] for name, w in WEIGHTS))
