"""How much of a host may be allocated: Nova's rule, usable = capacity x ratio - reserved."""

from dataclasses import dataclass

from vpool.model.errors import Invalid
from vpool.model.resources import MAX_CPUS, MAX_DISK_GIB, MAX_MEMORY_MIB

RESOURCES = ("cpus", "memory_mib", "disk_gib")
DEFAULTS = {
    "cpu_ratio": 4.0, "ram_ratio": 1.0, "disk_ratio": 1.0,
    "reserved_cpus": 0, "reserved_memory_mib": 512, "reserved_disk_gib": 0,
}
MAX_RATIO = 1000.0  # far past any overcommit anyone runs (Nova's default CPU ratio is 16)
_RATIO = {"cpus": "cpu_ratio", "memory_mib": "ram_ratio", "disk_gib": "disk_ratio"}
_RESERVED = {"cpus": "reserved_cpus", "memory_mib": "reserved_memory_mib", "disk_gib": "reserved_disk_gib"}


@dataclass(frozen=True)
class Line:
    capacity: int
    ratio: float
    reserved: int
    allocated: int

    @property
    def usable(self) -> int:
        return int(self.capacity * self.ratio - self.reserved)

    @property
    def free(self) -> int:
        return self.usable - self.allocated


def check_setting(key: str, value: float | int | None, what: str = "pool setting") -> None:
    """A ratio or a reservation as the pool defaults and each host take it: positive, finite,
    and within what any host can have (an unbounded one would overflow the database's integers).
    None (no value) passes: it means the default."""
    if key not in DEFAULTS:
        raise Invalid(f"unknown {what} {key!r}; known: {', '.join(DEFAULTS)}")
    if value is None:
        return
    top = MAX_RATIO if key.endswith("ratio") else \
        {"reserved_cpus": MAX_CPUS, "reserved_memory_mib": MAX_MEMORY_MIB, "reserved_disk_gib": MAX_DISK_GIB}[key]
    if value != value or value < 0 or (key.endswith("ratio") and value == 0):  # NaN is not equal to itself
        raise Invalid(f"{key} must be positive, got {value}")
    if value > top:
        raise Invalid(f"{key} {value} is more than any host can use (at most {top:g})")


def effective(overrides: dict, defaults: dict) -> dict:
    """A host's own ratio or reservation where it has one, the pool's default otherwise."""
    return {k: overrides.get(k) if overrides.get(k) is not None else defaults.get(k, v) for k, v in DEFAULTS.items()}


def capacity_lines(capacity: dict, policy: dict, allocated: dict) -> dict[str, Line]:
    return {r: Line(capacity[r], policy[_RATIO[r]], policy[_RESERVED[r]], allocated.get(r, 0)) for r in RESOURCES}
