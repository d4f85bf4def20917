"""The task runner: every operation that touches a hypervisor is a persisted Task.

A task is queued in the same request that asked for it (so the API can answer 202 with it),
runs on a worker thread, reports progress into the store, can be cancelled at the points it
checks, and always ends in succeeded, failed or cancelled, also across a restart.
"""

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import func, select, update

from vpool.model.errors import Conflict, NotFound, VpoolError
from vpool.model.states import TaskState
from vpool.store.db import Store
from vpool.store.tables import Task, utcnow

RESTARTED = "the control plane restarted while this task was running; nothing it started was kept"
NOT_STARTED = "cancelled before it started"


class Cancelled(Exception):
    """Raised inside a task at a cancel point once someone asked to cancel it."""


PROGRESS_EVERY_S = 0.2


@dataclass
class TaskContext:
    task_id: int
    runner: "TaskRunner"
    _written: float = field(default_factory=time.monotonic)

    def progress(self, percent: int, message: str | None = None) -> None:
        """Progress nobody can see is not written: a step that ends within PROGRESS_EVERY_S of the
        last write is skipped, so a fast task costs two writes, not one per step."""
        now = time.monotonic()
        if now - self._written < PROGRESS_EVERY_S:
            return
        self._written = now
        values: dict = {"progress": max(0, min(100, int(percent)))}
        if message is not None:
            values["message"] = message
        with self.runner.store.session() as s:
            s.execute(update(Task).where(Task.id == self.task_id).values(**values))
            s.commit()

    def cancelled(self) -> bool:
        return self.task_id in self.runner.cancel_flags

    def check_cancel(self) -> None:
        if self.cancelled():
            raise Cancelled()


Body = Callable[[TaskContext], dict | None]


@dataclass(frozen=True)
class TaskOrder:
    """A task to queue in another unit of work's transaction (a booking and its create task are
    one commit: neither is left without the other)."""
    kind: str
    params: dict
    requested_by: str = "admin"


def queued(order: TaskOrder, target: str | None) -> Task:
    return Task(kind=order.kind, target=target, params=order.params, requested_by=order.requested_by,
                state=TaskState.queued, message="queued")


class TaskRunner:
    def __init__(self, store: Store, workers: int = 16):
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self.cancel_flags: set[int] = set()
        self.done: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def recover(self) -> list[int]:
        """Tasks that were running when the process died cannot be resumed safely: end them."""
        with self.store.session() as s:
            ids = list(s.scalars(select(Task.id).where(Task.state.in_([TaskState.queued, TaskState.running]))))
            if ids:
                s.execute(update(Task).where(Task.id.in_(ids)).values(
                    state=TaskState.failed, error=RESTARTED, message=RESTARTED, finished_at=utcnow()))
                s.commit()
        return ids

    def new(self, kind: str, target: str | None, params: dict, requested_by: str = "admin") -> Task:
        with self.store.session() as s:
            task = queued(TaskOrder(kind, params, requested_by), target)
            s.add(task)
            s.commit()
            return task

    def start(self, task: Task, body: Body, on_failure: Callable[[], None] | None = None) -> Task:
        """Run body on a worker. on_failure undoes what a half-done body left (rollback)."""
        event = threading.Event()
        with self._lock:
            self.done[task.id] = event
        self.pool.submit(self._run, task.id, body, on_failure, event)
        return task

    def submit(self, kind: str, target: str | None, params: dict, body: Body,
               on_failure: Callable[[], None] | None = None, requested_by: str = "admin") -> Task:
        return self.start(self.new(kind, target, params, requested_by), body, on_failure)

    def _finish(self, task_id: int, **values) -> None:
        with self.store.session() as s:
            s.execute(update(Task).where(Task.id == task_id).values(finished_at=utcnow(), **values))
            s.commit()

    def _run(self, task_id: int, body: Body, on_failure, event: threading.Event) -> None:
        ctx = TaskContext(task_id, self)
        try:
            if ctx.cancelled():
                raise Cancelled(NOT_STARTED)
            with self.store.session() as s:
                s.execute(update(Task).where(Task.id == task_id).values(
                    state=TaskState.running, started_at=utcnow(), message="running"))
                s.commit()
            ctx.check_cancel()
            result = body(ctx) or {}
            # a body's note (a fallback taken, something dropped on the way) is what the task ends
            # saying, so `task list` shows it beside the tasks that went as asked
            self._finish(task_id, state=TaskState.succeeded, progress=100, result=result,
                         message=(isinstance(result, dict) and result.get("note")) or "done")
        except Cancelled as e:
            self._rollback(on_failure, task_id)
            self._finish(task_id, state=TaskState.cancelled, message=str(e) or "cancelled at the operator's request")
        except Exception as e:  # a task must always end with a reason, whatever went wrong
            detail = e.detail if isinstance(e, VpoolError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, VpoolError):
                traceback.print_exc()
            rollback_note = self._rollback(on_failure, task_id)
            self._finish(task_id, state=TaskState.failed, error=detail + rollback_note, message="failed")
        finally:
            self.cancel_flags.discard(task_id)
            event.set()
            with self._lock:
                self.done.pop(task_id, None)

    def _rollback(self, on_failure, task_id: int) -> str:
        if on_failure is None:
            return ""
        try:
            on_failure()
            return ""
        except Exception as e:
            traceback.print_exc()
            return f" (and rolling back failed too: {e})"

    def get(self, task_id: int) -> dict:
        with self.store.session() as s:
            task = s.get(Task, task_id)
            if task is None:
                raise NotFound(f"there is no task {task_id}")
            return describe(task)

    def listing(self, limit: int, offset: int, state: str | None = None, kind: str | None = None,
                target: str | None = None) -> tuple[list[dict], int]:
        """Newest first; filters combine."""
        where = [col == v for col, v in ((Task.state, state), (Task.kind, kind), (Task.target, target)) if v]
        with self.store.session() as s:
            total = s.scalar(select(func.count(Task.id)).where(*where))
            rows = s.scalars(select(Task).where(*where).order_by(Task.id.desc()).limit(limit).offset(offset))
            return [describe(t) for t in rows], total

    def request_cancel(self, task_id: int) -> dict:
        """An operator's cancel: refused, with the reason, for a task that has already ended."""
        task = self.get(task_id)
        if TaskState(task["state"]).finished:
            raise Conflict(f"task {task_id} has already {task['state']}")
        self.cancel(task_id)
        return self.get(task_id)

    def cancel(self, task_id: int) -> None:
        """A task queued on this runner is only flagged: it ends when a worker takes it up, after
        its rollback, so that `cancelled` means undone (a create's booking gone). One that nothing
        here will run ends at once."""
        self.cancel_flags.add(task_id)
        with self.store.session() as s:
            s.execute(update(Task).where(Task.id == task_id).values(cancel_requested=True))
            if not self.running(task_id):
                s.execute(update(Task).where(Task.id == task_id, Task.state == TaskState.queued).values(
                    state=TaskState.cancelled, finished_at=utcnow(), message=NOT_STARTED))
            s.commit()

    def running(self, task_id: int) -> bool:
        """Handed to this runner (waiting for a worker or running) and not yet ended: until it
        is, its row cannot say it has ended."""
        event = self.done.get(task_id)
        return event is not None and not event.is_set()

    def wait(self, task_id: int, timeout: float | None = None) -> bool:
        with self._lock:
            event = self.done.get(task_id)
        return True if event is None else event.wait(timeout)

    def outcome(self, task_id: int, timeout: float | None = None) -> Task:
        """The task's row once it has ended, or as it stands when `timeout` runs out."""
        self.wait(task_id, timeout)
        with self.store.session() as s:
            return s.get(Task, task_id)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def describe(t: Task) -> dict:
    return {
        "id": t.id, "kind": t.kind, "state": t.state, "progress": t.progress, "message": t.message,
        "error": t.error, "target": t.target, "requested_by": t.requested_by, "params": t.params,
        "result": t.result, "cancel_requested": t.cancel_requested, "created_at": t.created_at,
        "started_at": t.started_at, "finished_at": t.finished_at,
    }
