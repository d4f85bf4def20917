"""How much of a host may be allocated: Nova's rule, usable = capacity x ratio - reserved."""

from dataclasses import dataclass

RESOURCES = ("cpus", "memory_mib", "disk_gib")
DEFAULTS = {
    "cpu_ratio": 4.0, "ram_ratio": 1.0, "disk_ratio": 1.0,
    "reserved_cpus": 0, "reserved_memory_mib": 512, "reserved_disk_gib": 0,
}
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


def effective(overrides: dict, defaults: dict) -> dict:
    """A host's own ratio or reservation where it has one, the pool's default otherwise."""
    return {k: overrides.get(k) if overrides.get(k) is not None else defaults.get(k, v) for k, v in DEFAULTS.items()}


def capacity_lines(capacity: dict, policy: dict, allocated: dict) -> dict[str, Line]:
    return {r: Line(capacity[r], policy[_RATIO[r]], policy[_RESERVED[r]], allocated.get(r, 0)) for r in RESOURCES}
