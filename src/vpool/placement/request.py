"""What a caller asks placement for (`PlacementRequest`) and what it gets back (`Placement`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PlacementRequest:
    """One VM to place, with its constraints.

    The VM joins every group it names: `affinity` groups must already have a member on the
    chosen host (unless the group has no member yet), `anti_affinity` groups must have none
    there, and `soft_anti_affinity` groups would rather have none. `host` pins the VM to a
    named host, which is still checked by every filter. `storage` keeps the VM on hosts of
    that storage: a live migration that leaves the disk where it is.
    """

    name: str = "new"
    cpus: float = 1.0
    memory_mib: float = 0.0
    disk_gib: float = 0.0
    require_tags: frozenset[str] = frozenset()
    forbid_tags: frozenset[str] = frozenset()
    affinity: frozenset[str] = frozenset()
    anti_affinity: frozenset[str] = frozenset()
    soft_anti_affinity: frozenset[str] = frozenset()
    host: str | None = None
    storage: str | None = None

    @property
    def demand(self) -> np.ndarray:
        return np.array([self.cpus, self.memory_mib, self.disk_gib], dtype=float)

    @property
    def groups(self) -> frozenset[str]:
        return self.affinity | self.anti_affinity | self.soft_anti_affinity


@dataclass(frozen=True)
class Placement:
    """The answer: a host, or a refusal that says which filter removed how many hosts."""

    host: str | None
    message: str = ""
    removed_by: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.host is not None


def describe_demand(demand) -> str:
    """'2 vCPU / 1024 MiB / 10 GiB' — the way people write a VM size."""
    return f"{number(demand[0])} vCPU / {number(demand[1])} MiB / {number(demand[2])} GiB"


def count(n: int, noun: str) -> str:
    """'1 host', '3 hosts': messages people read say it as they would."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def number(x: float) -> str:
    """An amount without noise: 1024, 1.5, never 1024.0 or 1.02e+03."""
    x = float(x)
    return str(int(round(x))) if abs(x - round(x)) < 1e-9 else f"{x:.2f}".rstrip("0")
