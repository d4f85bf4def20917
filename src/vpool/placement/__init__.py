"""Placement: pure decisions over a `ClusterState` snapshot (NumPy arrays, one row per host).

Same input, same output: no clock, no I/O, no hypervisor, no database.
"""

from .filters import FILTERS
from .place import PlacementPolicy, place
from .request import Placement, PlacementRequest
from .state import ClusterState, HostRecord, VMRecord, Workspace
from .weighers import WEIGHERS

__all__ = [
    "FILTERS", "WEIGHERS", "ClusterState", "HostRecord", "Placement", "PlacementPolicy",
    "PlacementRequest", "VMRecord", "Workspace", "place",
]
