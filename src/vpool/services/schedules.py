"""Schedules: backups on a cron expression, run by the control plane itself.

Every due time is accounted for. A due time the scheduler reaches late (the control plane was
down, or busy) by more than LATE_AFTER is recorded as `missed`, with the reason, and the most
recent one of them is run once as a catch-up: after a weekend of downtime you get one backup
now and a record of the ones that did not happen, not silence and not a burst of backups.
"""

import threading
from datetime import datetime, timedelta

from sqlalchemy import select

from vpool.model import cron as cronlib
from vpool.model.errors import Invalid, NotFound, VpoolError
from vpool.model.retention import keep_set
from vpool.store.backup_tables import Backup, Schedule, ScheduleRun
from vpool.store.tables import Task, utcnow

KINDS = ("backup",)
LATE_AFTER = timedelta(minutes=5)
TICK_S = 20.0
NEW_CHAIN_AFTER = timedelta(days=7)  # an incremental schedule starts a new full chain weekly


def describe(sc: Schedule, runs: list[ScheduleRun] | None = None, tasks: dict[int, Task] | None = None) -> dict:
    """A started run reads as its task's state (succeeded, failed with its error, still running):
    a nightly backup that fails must not read as 'started' for ever."""
    out = {"id": sc.id, "kind": sc.kind, "vm": sc.vm_name, "cron": sc.cron, "incremental": sc.incremental,
           "keep_daily": sc.keep_daily, "keep_weekly": sc.keep_weekly, "enabled": sc.enabled,
           "handled_until": sc.handled_until, "created_at": sc.created_at,
           "next_run": cronlib.parse(sc.cron).next_after(sc.handled_until)}
    if runs is not None:
        out["runs"] = [_run_view(r, (tasks or {}).get(r.task_id)) for r in runs]
        out["missed"] = sum(1 for r in out["runs"] if r["outcome"] == "missed")
        out["failed"] = sum(1 for r in out["runs"] if r["outcome"] in ("failed", "refused", "cancelled"))
    return out


def _run_view(r: ScheduleRun, task: Task | None) -> dict:
    outcome, note = r.outcome, r.note
    if r.outcome == "started" and task is not None:
        outcome = task.state
        if task.state == "failed":
            note = "; ".join(n for n in (note, task.error) if n)
    return {"due_at": r.due_at, "outcome": outcome, "task_id": r.task_id, "note": note}


def _runs(s, schedule_id: int, limit: int) -> tuple[list[ScheduleRun], dict[int, Task]]:
    runs = list(s.scalars(select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)
                          .order_by(ScheduleRun.due_at.desc(), ScheduleRun.id.desc()).limit(limit)))
    ids = [r.task_id for r in runs if r.task_id]
    return runs, {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(ids)))} if ids else {}


class ScheduleService:
    def __init__(self, cp):
        self.cp = cp
        self._lock = threading.Lock()

    def create(self, kind: str, vm: str, cron: str, incremental: bool = True, keep_daily: int | None = None,
               keep_weekly: int | None = None) -> dict:
        if kind not in KINDS:
            raise Invalid(f"vpool schedules {', '.join(KINDS)}, not {kind!r}")
        cronlib.parse(cron)
        if keep_daily is not None or keep_weekly is not None:
            keep_set([], keep_daily or 0, keep_weekly or 0)
        with self.cp.store.session() as s:
            self.cp.vms.get(s, vm)
            sc = Schedule(kind=kind, vm_name=vm, cron=" ".join(cron.split()), incremental=incremental,
                          keep_daily=keep_daily, keep_weekly=keep_weekly, handled_until=utcnow())
            s.add(sc)
            s.commit()
            return describe(sc, [])

    def _get(self, s, schedule_id: int) -> Schedule:
        sc = s.get(Schedule, schedule_id)
        if sc is None:
            raise NotFound(f"there is no schedule {schedule_id}")
        return sc

    def show(self, schedule_id: int) -> dict:
        with self.cp.store.session() as s:
            sc = self._get(s, schedule_id)
            return describe(sc, *_runs(s, sc.id, 100))

    def listing(self) -> list[dict]:
        with self.cp.store.session() as s:
            out = []
            for sc in s.scalars(select(Schedule).order_by(Schedule.id)):
                out.append(describe(sc, *_runs(s, sc.id, 20)))
            return out

    def delete(self, schedule_id: int) -> None:
        with self.cp.store.session() as s:
            s.delete(self._get(s, schedule_id))
            s.commit()

    # --- running ------------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> None:
        def loop() -> None:
            while not stop.wait(TICK_S):
                try:
                    self.tick()
                except Exception as e:  # the scheduler must outlive one bad tick
                    print(f"vpool: schedule tick failed: {e}")

        threading.Thread(target=loop, name="schedules", daemon=True).start()

    def tick(self, now: datetime | None = None) -> list[ScheduleRun]:
        """Deals with every due time up to now, once; safe to call at any rate."""
        now = now or utcnow()
        made = []
        with self._lock, self.cp.store.session() as s:
            for sc in list(s.scalars(select(Schedule).where(Schedule.enabled.is_(True)))):
                due = cronlib.parse(sc.cron).due_between(sc.handled_until, now)
                if not due:
                    continue
                late = [t for t in due if now - t > LATE_AFTER]
                runs = [ScheduleRun(schedule_id=sc.id, due_at=t, outcome="missed",
                                    note=f"the control plane did not run at {t:%Y-%m-%d %H:%M} UTC") for t in late]
                runs.append(self._run(s, sc, due[-1], caught_up=due[-1] in late))
                sc.handled_until = now
                s.add_all(runs)
                made.extend(runs)
            s.commit()
        return made

    def _run(self, s, sc: Schedule, due_at: datetime, caught_up: bool) -> ScheduleRun:
        incremental = sc.incremental and not self._chain_is_old(s, sc.vm_name, due_at)
        note = "catch-up for the missed run" if caught_up else ""
        try:
            task = self.cp.backups.create(sc.vm_name, incremental=incremental, requested_by=f"schedule:{sc.id}")
        except VpoolError as e:
            return ScheduleRun(schedule_id=sc.id, due_at=due_at, outcome="refused", note=e.detail)
        if sc.keep_daily or sc.keep_weekly:
            self._retain_after(task.id, sc.vm_name, sc.keep_daily or 0, sc.keep_weekly or 0)
        return ScheduleRun(schedule_id=sc.id, due_at=due_at, outcome="started", task_id=task.id,
                           note=note if caught_up else ("" if incremental or not sc.incremental
                                                        else "full: the chain's full backup is a week old"))

    def _chain_is_old(self, s, vm: str, at: datetime) -> bool:
        last_full = s.scalar(select(Backup).where(Backup.vm_name == vm, Backup.state == "valid",
                                                  Backup.kind == "full").order_by(Backup.id.desc()).limit(1))
        return last_full is not None and at - last_full.point_at > NEW_CHAIN_AFTER

    def _retain_after(self, task_id: int, vm: str, daily: int, weekly: int) -> None:
        def prune_when_done() -> None:
            if self.cp.runner.outcome(task_id).state == "succeeded":
                self.cp.backups.apply_retention(vm, daily, weekly)

        threading.Thread(target=prune_when_done, name=f"retain-{vm}", daemon=True).start()
