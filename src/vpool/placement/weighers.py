"""Weighers: each one a named preference that scores the hosts left after filtering.

As in Nova, each weigher's raw values are scaled to [0, 1] over the candidates and then
multiplied by the weigher's multiplier, so weighers with different units can be summed; a
negative multiplier turns spreading into packing. The highest total wins.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .request import PlacementRequest

Weigher = Callable[[object, PlacementRequest, np.ndarray], np.ndarray]


def _free_fraction_after(state, request, hosts, resource):
    """Share of the host's usable amount left after the VM lands; fractions, not absolute
    amounts, so a small host that is half empty is as attractive as a big one."""
    usable = state.usable[hosts, resource]
    left = state.free[hosts, resource] - request.demand[resource]
    return np.divide(left, usable, out=np.zeros_like(left), where=usable > 0)


def ram_weigher(state, request, hosts):
    """Prefer hosts with more free memory (spread); a negative multiplier packs."""
    return _free_fraction_after(state, request, hosts, 1)


def cpu_weigher(state, request, hosts):
    """Prefer hosts with more free vCPUs (spread); a negative multiplier packs."""
    return _free_fraction_after(state, request, hosts, 0)


def disk_weigher(state, request, hosts):
    """Prefer hosts with more free disk (spread); a negative multiplier packs."""
    return _free_fraction_after(state, request, hosts, 2)


def soft_anti_affinity_weigher(state, request, hosts):
    """Prefer hosts with fewer members of the VM's soft anti-affinity groups."""
    score = np.zeros(len(hosts))
    for group in request.soft_anti_affinity:
        score -= state.group_members(group)[hosts]
    return score


def balance_weigher(state, request, hosts):
    """Prefer hosts whose CPU, memory and disk use stay even after the VM lands, so no
    resource is stranded by another running out first."""
    usable = state.usable[hosts]
    used = usable - state.free[hosts] + request.demand
    fraction = np.divide(used, usable, out=np.zeros_like(used), where=usable > 0)
    return -(fraction.max(axis=1) - fraction.min(axis=1))


WEIGHERS: dict[str, Weigher] = {
    "RAMWeigher": ram_weigher,
    "CPUWeigher": cpu_weigher,
    "DiskWeigher": disk_weigher,
    "SoftAntiAffinityWeigher": soft_anti_affinity_weigher,
    "BalanceWeigher": balance_weigher,
}

DEFAULT_WEIGHERS: dict[str, float] = {
    "RAMWeigher": 1.0,
    "CPUWeigher": 1.0,
    "SoftAntiAffinityWeigher": 2.0,
    "BalanceWeigher": 0.5,
}


def normalise(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the candidates; all-equal values weigh nothing."""
    low, high = values.min(), values.max()
    if high - low < 1e-12:
        return np.zeros_like(values)
    return (values - low) / (high - low)
