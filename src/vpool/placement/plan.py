"""`Plan` and `Move`: what the balancer and consolidation propose, in the order it can run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable


@dataclass(frozen=True)
class Move:
    """Migrate `vm` from host `src` to host `dst`, because of `reason`.

    Moves of one `stage` touch pairwise different hosts, so they can run at the same time;
    stages run one after the other.
    """

    vm: str
    src: str
    dst: str
    reason: str = ""
    stage: int = 1


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
        stage = 1 + max(last_stage.get(move.src, 0), last_stage.get(move.dst, 0))
        last_stage[move.src] = last_stage[move.dst] = stage
        result.append(replace(move, stage=stage))
    return tuple(result)
