"""Placement: pure decisions over a `ClusterState` snapshot (NumPy arrays, one row per host).

Same input, same output: no clock, no I/O, no hypervisor, no database.
"""

from .balance import BalancePolicy, balance
from .capacity import CapacityReport, capacity
from .consolidate import ConsolidationPolicy, consolidate
from .filters import FILTERS
from .ha import HaReport, ha_admission
from .packing import BatchPlacement, place_many
from .place import Explanation, HostVerdict, PlacementPolicy, explain, place
from .plan import Move, Plan
from .request import Placement, PlacementRequest
from .score import hbal_score
from .state import ClusterState, HostRecord, VMRecord, Workspace
from .weighers import WEIGHERS

__all__ = [
    "FILTERS", "WEIGHERS", "BalancePolicy", "BatchPlacement", "CapacityReport", "ClusterState",
    "ConsolidationPolicy", "Explanation", "HaReport", "HostRecord", "HostVerdict", "Move", "Placement",
    "PlacementPolicy", "PlacementRequest", "Plan", "VMRecord", "Workspace", "balance", "capacity", "consolidate",
    "explain", "ha_admission", "hbal_score", "place", "place_many",
]
