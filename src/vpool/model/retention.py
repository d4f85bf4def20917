"""Which backups a retention policy keeps: the newest of each of the last N days and M weeks.

A backup kept by the daily rule also covers its week (as Proxmox Backup Server counts), and
every kept incremental keeps the points it needs to be restored: its whole chain back to the full.
"""

from dataclasses import dataclass
from datetime import datetime

from vpool.model.errors import Invalid


@dataclass(frozen=True)
class Point:
    id: int
    at: datetime
    parent_id: int | None


def _mark(points: list[Point], keep: set[int], count: int, period) -> None:
    covered = {period(p.at) for p in points if p.id in keep}
    taken = 0
    for p in points:
        if taken >= count:
            break
        key = period(p.at)
        if p.id in keep or key in covered:
            continue
        covered.add(key)
        keep.add(p.id)
        taken += 1


def keep_set(points: list[Point], daily: int, weekly: int) -> set[int]:
    if daily < 0 or weekly < 0:
        raise Invalid("retention counts cannot be negative")
    if daily + weekly == 0:
        raise Invalid("a retention policy must keep something: give --keep-daily or --keep-weekly at least 1")
    newest_first = sorted(points, key=lambda p: (p.at, p.id), reverse=True)
    keep: set[int] = set()
    _mark(newest_first, keep, daily, lambda t: t.date())
    _mark(newest_first, keep, weekly, lambda t: t.isocalendar()[:2])
    parents = {p.id: p.parent_id for p in points}
    for pid in list(keep):
        while (pid := parents.get(pid)) is not None:
            keep.add(pid)
    return keep
