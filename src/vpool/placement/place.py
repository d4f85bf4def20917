"""`place`: one VM, one host — filters remove hosts, weighers rank the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .filters import DEFAULT_FILTERS, FILTERS
from .request import Placement, PlacementRequest, describe_demand, number
from .state import RESOURCES, UNITS
from .weighers import DEFAULT_WEIGHERS, WEIGHERS, Shared


@dataclass(frozen=True)
class PlacementPolicy:
    """Which filters run, in which order, and how much each weigher counts (by name, as
    Nova's `enabled_filters` and weight multipliers)."""

    filters: tuple[str, ...] = DEFAULT_FILTERS
    weighers: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHERS))

    def __post_init__(self):
        for name in self.filters:
            if name not in FILTERS:
                raise ValueError(f"unknown filter {name!r}; known: {', '.join(FILTERS)}")
        for name in self.weighers:
            if name not in WEIGHERS:
                raise ValueError(f"unknown weigher {name!r}; known: {', '.join(WEIGHERS)}")


DEFAULT_POLICY = PlacementPolicy()


def place(state, request: PlacementRequest, policy: PlacementPolicy = DEFAULT_POLICY) -> Placement:
    """Choose the host for `request`, or explain in one sentence why none will do.

    `state` is a `ClusterState` or a `Workspace`. Ties go to the first host in state order,
    so the same input always gives the same host.
    """
    alive, removed_by, masks = feasible_hosts(state, request, policy)
    candidates = np.flatnonzero(alive)
    if candidates.size == 0:
        return Placement(None, _refusal(state, request, removed_by, masks), removed_by)
    best = candidates[int(np.argmax(rank(state, request, candidates, policy)))] \
        if candidates.size > 1 else candidates[0]
    return Placement(state.host_names[best], "", removed_by)


def feasible_hosts(state, request: PlacementRequest, policy: PlacementPolicy = DEFAULT_POLICY):
    """(hosts passing every filter, hosts removed per filter, each filter's own mask)."""
    alive = np.ones(state.n_hosts, dtype=bool)
    removed_by: dict[str, int] = {}
    masks = {}
    left = state.n_hosts
    for name in policy.filters:
        mask = FILTERS[name](state, request)
        if mask is None:
            removed_by[name] = 0
            continue
        masks[name] = mask
        alive &= mask
        now = int(np.count_nonzero(alive))
        removed_by[name], left = left - now, now
    return alive, removed_by, masks


def refusal(state, request: PlacementRequest, policy: PlacementPolicy = DEFAULT_POLICY) -> str:
    """Why no host passes the filters, in one sentence."""
    _, removed_by, masks = feasible_hosts(state, request, policy)
    return _refusal(state, request, removed_by, masks)


def rank(state, request: PlacementRequest, candidates: np.ndarray,
         policy: PlacementPolicy = DEFAULT_POLICY) -> np.ndarray:
    """The weighed total of each candidate host (higher is better): each weigher's values
    scaled to [0, 1] over the candidates, times its multiplier, summed."""
    _, weighed = _weighed(state, request, candidates, policy)
    return weighed.sum(axis=0) if len(weighed) else np.zeros(candidates.size)


def _weighed(state, request: PlacementRequest, candidates: np.ndarray,
             policy: PlacementPolicy) -> tuple[list[str], np.ndarray]:
    """Each weigher's part of each candidate's total (weighers x candidates), and the weighers'
    names. All weighers are scaled in one pass over one array: a decision is a few dozen NumPy
    calls on a thousand hosts, where each call's overhead costs as much as its work."""
    shared = Shared(state, request)
    names, rows, multipliers = [], [], []
    for name, multiplier in policy.weighers.items():
        if multiplier and (values := WEIGHERS[name](state, request, shared)) is not None:
            names.append(name)
            rows.append(values)
            multipliers.append(multiplier)
    if not rows:
        return names, np.zeros((0, candidates.size))
    values = np.array(rows)
    if candidates.size < state.n_hosts:
        values = np.take(values, candidates, axis=1)  # C-ordered, unlike values[:, candidates]
    low = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - low
    flat = span < 1e-12  # all-equal values weigh nothing
    return names, (values - low) / np.where(flat, 1.0, span) * np.where(flat, 0.0, np.array(multipliers)[:, None])


@dataclass(frozen=True)
class HostVerdict:
    """One host in an `Explanation`: the first filter that removed it and why in words (for room,
    what it lacks), or each weigher's part of its total."""

    host: str
    removed_by: str | None = None
    why: str = ""
    weights: Mapping[str, float] = field(default_factory=dict)
    total: float | None = None


@dataclass(frozen=True)
class Explanation:
    """`place`'s answer with its reasons, host by host: the chosen host first, the other
    candidates best first, then the hosts the filters removed, in pool order."""

    placement: Placement
    hosts: tuple[HostVerdict, ...]


def explain(state, request: PlacementRequest, policy: PlacementPolicy = DEFAULT_POLICY,
            tag_words: Mapping[str, str] | None = None) -> Explanation:
    """What `place` decides for `request` and why: vCenter shows a ranked list of placement
    recommendations, Nova only its logs. Not on the hot path: it keeps every filter's verdict on
    every host and every weigher's part, where `place` keeps only the totals. `tag_words` says
    in words what a host's tag that keeps it off means (a caller's own tags, such as "the VM's
    own host")."""
    alive, removed_by, masks = feasible_hosts(state, request, policy)
    candidates = np.flatnonzero(alive)
    names, weighed = _weighed(state, request, candidates, policy) if candidates.size else ([], None)
    totals = weighed.sum(axis=0) if names else np.zeros(candidates.size)
    if candidates.size:  # as `place` decides: the highest total, the first host on a tie
        decision = Placement(state.host_names[candidates[int(np.argmax(totals))]], "", removed_by)
    else:
        decision = Placement(None, _refusal(state, request, removed_by, masks), removed_by)
    ranked = [HostVerdict(state.host_names[h], weights={n: float(w) for n, w in zip(names, weighed[:, j])},
                          total=float(totals[j]))
              for j, h in sorted(enumerate(candidates), key=lambda jh: -totals[jh[0]])]
    removed = []
    for h in np.flatnonzero(~alive):
        first = next(name for name in policy.filters if name in masks and not masks[name][h])
        removed.append(HostVerdict(state.host_names[h], removed_by=first,
                                   why=_why_removed(state, request, h, first, tag_words or {})))
    return Explanation(decision, tuple(ranked + removed))


def _why_removed(state, request: PlacementRequest, h: int, first: str, tag_words: Mapping[str, str]) -> str:
    """What a host lacks for room, or which tags keep it off; other filters' names say it all."""
    if first == "CapacityFilter":
        return "short " + shortfall(np.maximum(request.demand - state.free[h], 0.0))
    if first == "TagFilter":
        tags = state.hosts[h].tags
        return "; ".join([tag_words.get(t, f"tagged {t}") for t in sorted(request.forbid_tags & tags)]
                         + [f"lacks tag {t}" for t in sorted(request.require_tags - tags)])
    return ""


def _refusal(state, request, removed_by, masks) -> str:
    parts = [f"{name} removed {count} of {state.n_hosts} hosts" if i == 0 else f"{name} {count}"
             for i, (name, count) in enumerate((n, c) for n, c in removed_by.items() if c)]
    message = f"no host has room for {describe_demand(request.demand)}: " + ", ".join(parts)
    if "CapacityFilter" in masks:
        others = np.ones(state.n_hosts, dtype=bool)
        for name, mask in masks.items():
            if name != "CapacityFilter":
                others &= mask
        near = np.flatnonzero(others & ~masks["CapacityFilter"])
        if near.size:
            short = np.maximum(request.demand - state.free[near], 0.0)
            usable = np.maximum(state.usable[near], 1e-9)
            best = near[int(np.argmin((short / usable).sum(axis=1)))]
            message += f"; best candidate {state.host_names[best]} is short " + shortfall(
                np.maximum(request.demand - state.free[best], 0.0))
    return message


def shortfall(short) -> str:
    words = {"cpu": "vCPU", "memory": "RAM", "disk": "disk"}
    return " and ".join(f"{number(amount)} {unit}{'' if unit == 'vCPU' else ' ' + words[r]}"
                        for r, unit, amount in zip(RESOURCES, UNITS, short) if amount > 1e-9)
