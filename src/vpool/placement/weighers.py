"""Weighers: each one a named preference that scores hosts for the VM.

A weigher scores every host; `rank` keeps the hosts left after filtering. As in Nova, each
weigher's raw values are scaled to [0, 1] over those candidates and then
multiplied by the weigher's multiplier, so weighers with different units can be summed; a
negative multiplier turns spreading into packing. The highest total wins. A weigher returns
None when the request gives it nothing to weigh.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from .request import PlacementRequest


class Shared:
    """What several weighers read, computed once per decision. It covers every host, not only
    the candidates: `rank` keeps the candidates' columns of all weighers in one step, where
    taking them out of each array a weigher reads cost more than the arithmetic."""

    def __init__(self, state, request: PlacementRequest):
        self.state = state
        self.request = request

    @cached_property
    def free_after(self) -> np.ndarray:
        """Share of each host's usable amount left after the VM lands, per resource:
        shares, not amounts, so a small host half empty is as attractive as a big one."""
        return (self.state.free - self.request.demand) * self.state.inverse_usable


Weigher = Callable[[object, PlacementRequest, Shared], "np.ndarray | None"]


def ram_weigher(state, request, shared):
    """Prefer hosts with more free memory (spread); a negative multiplier packs."""
    return shared.free_after[:, 1]


def cpu_weigher(state, request, shared):
    """Prefer hosts with more free vCPUs (spread); a negative multiplier packs."""
    return shared.free_after[:, 0]


def disk_weigher(state, request, shared):
    """Prefer hosts with more free disk (spread); a negative multiplier packs."""
    return shared.free_after[:, 2]


def soft_anti_affinity_weigher(state, request, shared):
    """Prefer hosts with fewer members of the VM's soft anti-affinity groups."""
    if not request.soft_anti_affinity:
        return None  # nothing to prefer: weighs nothing, and costs nothing
    score = np.zeros(state.n_hosts)
    for group in request.soft_anti_affinity:
        score -= state.group_members(group)
    return score


def balance_weigher(state, request, shared):
    """Prefer hosts whose CPU and memory stay equally used after the VM lands, so neither
    is stranded by the other running out first (disk is left out: it rarely binds)."""
    after = shared.free_after
    return -np.abs(after[:, 0] - after[:, 1])


def measured_cpu_weigher(state, request, shared):
    """Prefer hosts whose CPUs were measured least busy, the new VM's vCPUs counted busy (what it
    will use is not known yet; the balancer counts an unmeasured VM so too). In twentieths: finer
    differences are noise, and scaled to their spread (as every weigher is) they would outweigh
    the allocation weighers between hosts otherwise alike."""
    busy = state.cpu_busy
    if busy is None:
        return None  # nothing measured (htools files, telemetry off): allocations alone decide
    return -np.round((busy + request.demand[0] / state.cpu_cores) * 20.0)


WEIGHERS: dict[str, Weigher] = {
    "RAMWeigher": ram_weigher,
    "CPUWeigher": cpu_weigher,
    "DiskWeigher": disk_weigher,
    "SoftAntiAffinityWeigher": soft_anti_affinity_weigher,
    "BalanceWeigher": balance_weigher,
    "MeasuredCPUWeigher": measured_cpu_weigher,
}

DEFAULT_WEIGHERS: dict[str, float] = {
    "RAMWeigher": 1.0,
    "CPUWeigher": 1.0,
    "SoftAntiAffinityWeigher": 2.0,
    "BalanceWeigher": 0.5,
    # Above the allocation weighers together: replayed on PlanetLab traces (benchmarks/place_load.py),
    # 1.0 left the hosts as unevenly busy as allocation alone; 3.0 made them 10-18 % more even with
    # fewer host-steps in CPU contention, and more weight gained nothing.
    "MeasuredCPUWeigher": 3.0,
}
