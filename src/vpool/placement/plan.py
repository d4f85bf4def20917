"""`Plan` and `Move`: what the balancer and consolidation propose, in the order it can run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable


@dataclass(frozen=True)
class Move:
    """Migrate `vm` from host `src` to host `dst`, because of `reason`.

    A VM whose disk is mirrored (DRBD) also names the host of its copy before and after
    (`src_secondary`, `dst_secondary`); the reason then says which failovers and disk
    replacements make the move. Moves of one `stage` touch pairwise different hosts, so
    they can run at the same time; stages run one after the other.
    """

    vm: str
    src: str
    dst: str
    reason: str = ""
    stage: int = 1
    src_secondary: str | None = None
    dst_secondary: str | None = None

    @property
    def hosts(self) -> set[str]:
        return {h for h in (self.src, self.dst, self.src_secondary, self.dst_secondary) if h}


@dataclass(frozen=True)
class Plan:
    """Ordered moves, the score before and after them, and hosts to power off or wake.

    `note` says in one sentence why the planner stopped where it did.
    """

    kind: str
    moves: tuple[Move, ...] = ()
    score_before: float = 0.0
    score_after: float = 0.0
    power_off: tuple[str, ...] = ()
    wake: tuple[str, ...] = ()
    note: str = ""

    @property
    def stages(self) -> int:
        return max((m.stage for m in self.moves), default=0)


def staged(moves: Iterable[Move]) -> tuple[Move, ...]:
    """Give each move the earliest stage after every earlier move that shares a host with it.

    Moves in one stage then touch disjoint hosts, so they commute: running a stage's moves
    in any order, or together, passes through states that each fit, given that the plan's
    own order does.
    """
    last_stage: dict[str, int] = {}
    result = []
    for move in moves:
        stage = 1 + max(last_stage.get(h, 0) for h in move.hosts)
        last_stage.update(dict.fromkeys(move.hosts, stage))
        result.append(replace(move, stage=stage))
    return tuple(result)
