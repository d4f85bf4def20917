"""The three resources vpool allocates: vCPUs, memory (MiB) and disk (GiB)."""

from dataclasses import dataclass

from vpool.model.errors import Invalid

MAX_CPUS = 512
MAX_MEMORY_MIB = 16 * 1024 * 1024
MAX_DISK_GIB = 1024 * 1024


@dataclass(frozen=True)
class Resources:
    cpus: int
    memory_mib: int
    disk_gib: int

    def check(self) -> "Resources":
        """Sizes must be positive and possible before any host is asked."""
        for value, what, top, unit in (
            (self.cpus, "cpus", MAX_CPUS, ""),
            (self.memory_mib, "memory", MAX_MEMORY_MIB, " MiB"),
            (self.disk_gib, "disk", MAX_DISK_GIB, " GiB"),
        ):
            if not isinstance(value, int) or value <= 0:
                raise Invalid(f"{what} must be a positive whole number, got {value!r}")
            if value > top:
                raise Invalid(f"{what} {value}{unit} is larger than any host vpool can manage ({top}{unit})")
        return self

    def describe(self) -> str:
        return f"{self.cpus} vCPU / {self.memory_mib} MiB / {self.disk_gib} GiB"
