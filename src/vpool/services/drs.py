"""DRS automation: the pool balances itself, as vCenter's DRS does at its "fully automated" level.

Every `interval_s` the balance plan is made on the live pool, weighing what the VMs were
measured to use (services/measured_load.py); when it has moves, it is applied
(`PlanService.apply`, a `plan.apply` task asked for by "drs") with at most `max_moves` of them,
so one run is never a migration storm and the next run starts from what the last one did. A run
is skipped, and says why, while migrations, a plan or an evacuation are under way (they change
the pool it would plan on) and while a host is down (the pool is not what it seems).
Off by default: an operator turns it on (`vpool plan drs --set automation=automatic`).
"""

import threading
import time
from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from vpool.model.errors import Invalid, VpoolError
from vpool.model.states import HostState, TaskState
from vpool.placement.request import count
from vpool.services import stored_policy
from vpool.services.measured_load import WINDOW_S, load_window
from vpool.store.tables import Host, Task

PREFIX = "drs."
BUSY_KINDS = ("vm.migrate", "plan.apply", "host.maintenance")
TICK_S = 5.0  # how often the loop looks whether a run is due (and at a changed policy)


@dataclass(frozen=True)
class DrsPolicy:
    automation: str = "off"  # "off" or "automatic"
    interval_s: float = 300.0  # vCenter's DRS runs every 5 minutes
    max_moves: int = 4  # per run
    min_gain: float = 0.01  # the balance plan's, as hbal -g
    migration_cost: float = 0.0  # score a move must gain per GiB of memory it copies
    load_window_s: float = WINDOW_S  # each VM weighs its mean measured CPU load over this

    def check(self) -> "DrsPolicy":
        if self.automation not in ("off", "automatic"):
            raise Invalid(f"automation must be 'off' or 'automatic', not {self.automation!r}")
        if self.interval_s < 10:
            raise Invalid(f"interval_s must be at least 10 s, got {self.interval_s:g}")
        if self.max_moves < 1:
            raise Invalid(f"max_moves must be at least 1, got {self.max_moves}")
        if self.min_gain < 0 or self.migration_cost < 0:
            raise Invalid("min_gain and migration_cost must not be negative")
        return self

    @property
    def plan_params(self) -> dict:
        return {"max_moves": str(self.max_moves), "min_gain": str(self.min_gain),
                "migration_cost": str(self.migration_cost), "load_window_s": str(self.load_window_s)}


class DrsService:
    def __init__(self, cp):
        self.cp = cp
        self.last: dict = {"at": None, "outcome": "not run yet"}
        self._due = 0.0

    def policy(self) -> DrsPolicy:
        with self.cp.store.session() as s:
            return stored_policy.load(s, DrsPolicy, PREFIX)

    def status(self) -> dict:
        return asdict(self.policy()) | {"last_run": self.last}

    def set_policy(self, changes: dict) -> dict:
        if changes.get("load_window_s") is not None:
            load_window(changes["load_window_s"], self.cp.telemetry.series.retention.raw_s)
        with self.cp.store.session() as s:
            stored_policy.save(s, DrsPolicy, PREFIX, changes, "DRS")
        self._due = 0.0  # a changed policy is acted on at the next tick
        return self.status()

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self._loop, args=(stop,), name="drs", daemon=True).start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(TICK_S):
            try:
                policy = self.policy()
                if policy.automation == "automatic" and time.monotonic() >= self._due:
                    self._due = time.monotonic() + policy.interval_s
                    self.run_once(policy)
            except Exception as e:  # the loop outlives any one bad run
                print(f"vpool: DRS run failed: {e}")

    def run_once(self, policy: DrsPolicy | None = None) -> int | None:
        """One DRS run: the id of the plan.apply task it started, or None (why: in `last`)."""
        policy = policy or self.policy()
        why, task_id = self._skip_reason(), None
        if why is None:
            try:
                plan = self.cp.plans.plan("balance", policy.plan_params)
            except VpoolError as e:  # a setting the pool no longer allows (raw samples kept less long)
                why = f"could not plan: {e.detail}"
        if why is None:
            weighed = "measured CPU load" if (plan.get("load") or {}).get("cpu") == "measured" else "VM counts"
            if not plan["moves"]:
                why = f"balanced on {weighed}: {plan['note']} (score {plan['score_before']:.4f})"
            else:
                try:
                    task_id = self.cp.plans.apply("balance", policy.plan_params, requested_by="drs").id
                except VpoolError as e:
                    why = f"could not start the plan: {e.detail}"
        outcome = f"applying {count(len(plan['moves']), 'move')} on {weighed} (task {task_id})" if task_id else why
        self.last = {"at": time.time(), "outcome": outcome}
        return task_id

    def _skip_reason(self) -> str | None:
        with self.cp.store.session() as s:
            busy = s.scalar(select(func.count()).select_from(Task).where(
                Task.kind.in_(BUSY_KINDS), Task.state.in_((TaskState.queued, TaskState.running))))
            down = list(s.scalars(select(Host.name).where(Host.state == HostState.down).order_by(Host.name)))
        if busy:
            return f"skipped: {busy} migration, plan or evacuation task(s) under way"
        if down:
            return (f"skipped: {', '.join(down)} {'is' if len(down) == 1 else 'are'} down; balancing waits until "
                    f"every host answers")
        return None
