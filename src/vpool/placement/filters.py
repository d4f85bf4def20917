"""Filters: each one a named, small policy that returns one boolean mask over all hosts.

Nova calls `host_passes` once per host; here a filter sees the whole cluster at once, so a
decision costs a handful of vector operations and a refusal can say how many hosts each
filter removed. A filter takes a `ClusterState` or a `Workspace` (same attribute names) and
returns None when the request gives it nothing to check, so idle filters cost nothing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .request import PlacementRequest

Filter = Callable[[object, PlacementRequest], "np.ndarray | None"]

#: slack for float sums of integral amounts
EPSILON = 1e-9


def capacity_filter(state, request: PlacementRequest) -> np.ndarray:
    """Room for the VM in every resource, under allocation ratios and reservations."""
    free = state.free
    mask = free[:, 0] >= request.cpus - EPSILON
    mask &= free[:, 1] >= request.memory_mib - EPSILON
    mask &= free[:, 2] >= request.disk_gib - EPSILON
    return mask


def maintenance_filter(state, request: PlacementRequest) -> np.ndarray:
    """The host is up and not in maintenance."""
    return state.accepts_vms


def max_vms_filter(state, request: PlacementRequest) -> np.ndarray | None:
    """The host is below its maximum number of VMs."""
    if not state.limits_vms:
        return None
    return state.vm_count < state.max_vms


def tag_filter(state, request: PlacementRequest) -> np.ndarray | None:
    """The host has every required tag and no forbidden one."""
    if not (request.require_tags or request.forbid_tags):
        return None
    mask = np.ones(state.n_hosts, dtype=bool)
    for tag in request.require_tags:
        mask &= state.tag_mask(tag)
    for tag in request.forbid_tags:
        mask &= ~state.tag_mask(tag)
    return mask


def storage_filter(state, request: PlacementRequest) -> np.ndarray | None:
    """The host sees the storage the VM's disk is on."""
    if request.storage is None:
        return None
    return state.storage_mask(request.storage)


def anti_affinity_filter(state, request: PlacementRequest) -> np.ndarray | None:
    """No member of the VM's anti-affinity groups runs on the host."""
    if not request.anti_affinity:
        return None
    mask = np.ones(state.n_hosts, dtype=bool)
    for group in request.anti_affinity:
        mask &= state.group_members(group) == 0
    return mask


def affinity_filter(state, request: PlacementRequest) -> np.ndarray | None:
    """The host already runs a member of each affinity group that has members."""
    if not request.affinity:
        return None
    mask = np.ones(state.n_hosts, dtype=bool)
    for group in request.affinity:
        members = state.group_members(group)
        if members.any():
            mask &= members > 0
    return mask


def host_filter(state, request: PlacementRequest) -> np.ndarray | None:
    """The host the request is pinned to, if any."""
    if request.host is None:
        return None
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
    "StorageFilter": storage_filter,
    "AntiAffinityFilter": anti_affinity_filter,
    "AffinityFilter": affinity_filter,
}

DEFAULT_FILTERS: tuple[str, ...] = tuple(FILTERS)
