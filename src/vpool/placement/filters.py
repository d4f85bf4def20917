"""Filters: each one a named, small policy that returns one boolean mask over all hosts.

Nova calls `host_passes` once per host; here a filter sees the whole cluster at once, so a
decision costs a handful of vector operations and a refusal can say how many hosts each
filter removed. A filter takes a `ClusterState` or a `Workspace` (same attribute names).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .request import PlacementRequest

Filter = Callable[[object, PlacementRequest], np.ndarray]

#: slack for float sums of integral amounts
EPSILON = 1e-9


def capacity_filter(state, request: PlacementRequest) -> np.ndarray:
    """Room for the VM in every resource, under allocation ratios and reservations."""
    return (state.free + EPSILON >= request.demand).all(axis=1)


def maintenance_filter(state, request: PlacementRequest) -> np.ndarray:
    """The host is up and not in maintenance."""
    return state.accepts_vms


def max_vms_filter(state, request: PlacementRequest) -> np.ndarray:
    """The host is below its maximum number of VMs."""
    return state.vm_count < state.max_vms


def tag_filter(state, request: PlacementRequest) -> np.ndarray:
    """The host has every required tag and no forbidden one."""
    mask = np.ones(state.n_hosts, dtype=bool)
    for tag in request.require_tags:
        mask &= state.tag_mask(tag)
    for tag in request.forbid_tags:
        mask &= ~state.tag_mask(tag)
    return mask


def anti_affinity_filter(state, request: PlacementRequest) -> np.ndarray:
    """No member of the VM's anti-affinity groups runs on the host."""
    mask = np.ones(state.n_hosts, dtype=bool)
    for group in request.anti_affinity:
        mask &= state.group_members(group) == 0
    return mask


def affinity_filter(state, request: PlacementRequest) -> np.ndarray:
    """The host already runs a member of each affinity group that has members."""
    mask = np.ones(state.n_hosts, dtype=bool)
    for group in request.affinity:
        members = state.group_members(group)
        if members.any():
            mask &= members > 0
    return mask


def host_filter(state, request: PlacementRequest) -> np.ndarray:
    """The host the request is pinned to, if any."""
    if request.host is None:
        return np.ones(state.n_hosts, dtype=bool)
    mask = np.zeros(state.n_hosts, dtype=bool)
    index = state.host_index.get(request.host)
    if index is not None:
        mask[index] = True
    return mask


FILTERS: dict[str, Filter] = {
    "HostFilter": host_filter,
    "CapacityFilter": capacity_filter,
    "MaintenanceFilter": maintenance_filter,
    "MaxVMsFilter": max_vms_filter,
    "TagFilter": tag_filter,
    "AntiAffinityFilter": anti_affinity_filter,
    "AffinityFilter": affinity_filter,
}

DEFAULT_FILTERS: tuple[str, ...] = tuple(FILTERS)
