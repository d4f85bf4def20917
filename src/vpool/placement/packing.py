"""`place_many`: a set of VMs placed together or not at all, packed tightly; and the lower
bound that says how tight a packing is.

First-fit decreasing does most of the work in a few vector operations per VM; when the caller
grants a budget and the instance is small, OR-Tools CP-SAT then looks for a packing that
opens fewer empty hosts. The budget is CP-SAT's *deterministic* time, so the answer does not
depend on how busy the machine is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .place import DEFAULT_POLICY, PlacementPolicy, feasible_hosts, refusal
from .request import PlacementRequest
from .state import ClusterState, Workspace

#: CP-SAT is tried only below this many (VM, host) pairs
CP_SAT_PAIRS = 20_000
#: CP-SAT works on integers; amounts are scaled by this before rounding
SCALE = 1000


@dataclass(frozen=True)
class BatchPlacement:
    """Hosts for every request (request name -> host), or a refusal naming the VM that
    did not fit and why. `method` says which packing won."""

    hosts: dict[str, str] = field(default_factory=dict)
    message: str = ""
    hosts_used: int = 0
    method: str = ""

    @property
    def ok(self) -> bool:
        return not self.message


def decreasing(requests: Sequence[PlacementRequest], scale: np.ndarray) -> list[int]:
    """Request indexes, largest first: size is the largest share of a typical host a
    request takes in any resource, so a VM big in one dimension is not packed last."""
    if not requests:
        return []
    demand = np.array([r.demand for r in requests]) / np.maximum(scale, 1e-9)
    return sorted(range(len(requests)), key=lambda i: (-demand[i].max(), i))


def place_many(state: ClusterState, requests: Sequence[PlacementRequest],
               policy: PlacementPolicy = DEFAULT_POLICY,
               time_budget: float | None = None) -> BatchPlacement:
    """Place all `requests` or none, packed onto as few hosts as possible.

    First-fit decreasing: largest VM first, each onto the first host that passes the
    policy's filters, hosts already running VMs first and then the largest empty ones (so a
    batch opens few, big hosts). Soft anti-affinity moves a VM past hosts where its group
    already runs, if another host fits. `time_budget` (CP-SAT deterministic seconds) allows
    an exact improvement on small instances.
    """
    names = [r.name for r in requests]
    if len(set(names)) != len(names):
        raise ValueError("requests in one batch need distinct names")
    work = Workspace(state)
    order = np.lexsort((-state.usable[:, 1], -state.usable[:, 0], state.vm_count == 0))
    position = np.empty(state.n_hosts, dtype=np.int64)
    position[order] = np.arange(state.n_hosts)
    scale = state.usable[state.accepts_vms].mean(axis=0) if state.accepts_vms.any() \
        else np.ones(3)
    hosts: dict[str, str] = {}
    for i in decreasing(requests, scale):
        request = requests[i]
        alive = feasible_hosts(work, request, policy)[0]
        candidates = np.flatnonzero(alive)
        if candidates.size == 0:
            return BatchPlacement(message=f"{request.name} does not fit, so none of the "
                                          f"{len(requests)} VMs is placed: "
                                          f"{refusal(work, request, policy)}")
        crowd = np.zeros(candidates.size)
        for group in request.soft_anti_affinity:
            crowd += work.group_members(group)[candidates]
        h = int(candidates[np.lexsort((position[candidates], crowd))[0]])
        work.add(h, request.demand, request.groups)
        hosts[request.name] = state.host_names[h]
    method = "first-fit decreasing"
    if time_budget and len(requests) * state.n_hosts <= CP_SAT_PAIRS:
        better = _cp_sat(state, requests, hosts, policy, time_budget)
        if better is not None:
            hosts, method = better, "CP-SAT"
    ordered = {r.name: hosts[r.name] for r in requests}
    used = state.vm_count > 0
    for host in ordered.values():
        used[state.host_index[host]] = True
    return BatchPlacement(ordered, "", int(used.sum()), method)


def _cp_sat(state, requests, start, policy, budget):
    """Fewest newly used hosts, under the same filters; None if it finds nothing better."""
    from ortools.sat.python import cp_model   # heavy import, paid only when CP-SAT runs

    allowed = [np.flatnonzero(feasible_hosts(state, r, policy)[0]) for r in requests]
    model = cp_model.CpModel()
    x = {}
    for i, hosts in enumerate(allowed):
        for h in hosts:
            x[i, int(h)] = model.NewBoolVar(f"x{i}_{h}")
        model.AddExactlyOne(x[i, int(h)] for h in hosts)
    for h in range(state.n_hosts):
        on_h = [(i, x[i, h]) for i in range(len(requests)) if (i, h) in x]
        if not on_h:
            continue
        for r in range(2 if state.pooled[h] else 3):
            _at_most(model, requests, r, on_h, state.free[h, r])
        if np.isfinite(state.max_vms[h]):
            model.Add(sum(v for _, v in on_h) <= int(state.max_vms[h] - state.vm_count[h]))
    for code in np.unique(state.storage[state.pooled]):
        on = state.storage == code          # a pooled storage: one room for all its hosts
        _at_most(model, requests, 2, [(i, v) for (i, h), v in x.items() if on[h]], state.free[on, 2].min())
    for g in {g for r in requests for g in r.anti_affinity}:
        members = [i for i, r in enumerate(requests) if g in r.groups]
        for h in range(state.n_hosts):
            on_h = [x[i, h] for i in members if (i, h) in x]
            if len(on_h) > 1:
                model.Add(sum(on_h) <= 1)
    for g in {g for r in requests for g in r.affinity}:
        together = [i for i, r in enumerate(requests) if g in r.groups]
        for i in together[1:]:
            for h in range(state.n_hosts):
                model.Add(x.get((i, h), 0) == x.get((together[0], h), 0))
    empty = np.flatnonzero(state.vm_count == 0)
    opened = []
    for h in empty:
        on_h = [x[i, int(h)] for i in range(len(requests)) if (i, int(h)) in x]
        if on_h:
            y = model.NewBoolVar(f"y{h}")
            for v in on_h:
                model.AddImplication(v, y)
            opened.append(y)
    model.Minimize(sum(opened))
    for i, r in enumerate(requests):
        h = state.host_index[start[r.name]]
        if (i, h) in x:
            model.AddHint(x[i, h], True)
    solver = cp_model.CpSolver()
    solver.parameters.max_deterministic_time = float(budget)
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    start_opened = len({start[r.name] for r in requests} & {state.host_names[h] for h in empty})
    if solver.ObjectiveValue() >= start_opened:
        return None
    return {r.name: state.host_names[h] for (i, h), v in x.items()
            for r in (requests[i],) if solver.Value(v)}


def _at_most(model, requests, r, booked, room) -> None:
    """The requests `booked` ((index, their variable on a host)) take at most `room` of resource r."""
    model.Add(sum(math.ceil(requests[i].demand[r] * SCALE - 1e-6) * v for i, v in booked)
              <= math.floor(room * SCALE + 1e-6))


def lower_bound(bins: np.ndarray, items: np.ndarray) -> int:
    """A lower bound on the hosts any packing of `items` (V, 3) into hosts of capacities
    `bins` (H, 3) needs: per resource, the fewest largest hosts whose sum holds the total,
    and Martello–Toth's L2 when all hosts are alike; the largest over resources."""
    best = 0
    for r in range(bins.shape[1]):
        sizes = items[:, r]
        caps = np.sort(bins[:, r])[::-1]
        if sizes.sum() <= 0:
            continue
        reach = np.cumsum(caps)
        k = int(np.searchsorted(reach, sizes.sum() - 1e-9)) + 1
        best = max(best, k)
        if np.allclose(caps, caps[0]) and caps[0] > 0:
            best = max(best, _martello_toth_l2(sizes, float(caps[0])))
    return best


def _martello_toth_l2(sizes: np.ndarray, capacity: float) -> int:
    sizes = np.sort(sizes)
    bound = 0
    for alpha in np.unique(np.concatenate([[0.0], sizes[sizes <= capacity / 2]])):
        big = sizes > capacity - alpha
        mid = (sizes > capacity / 2) & ~big
        small = (sizes >= alpha) & (sizes <= capacity / 2)
        spare = mid.sum() * capacity - sizes[mid].sum()
        extra = math.ceil(max(0.0, sizes[small].sum() - spare) / capacity - 1e-9)
        bound = max(bound, int(big.sum() + mid.sum() + extra))
    return bound
