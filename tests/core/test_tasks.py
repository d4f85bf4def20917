"""The task runner: what an operator sees of a task, from its queue to its end."""

import threading

from vpool.services.tasks import NOT_STARTED, TaskRunner
from vpool.store.db import Store


def test_a_task_cancelled_in_the_queue_ends_after_its_rollback_and_never_runs(tmp_path):
    runner = TaskRunner(Store(f"sqlite:///{tmp_path}/tasks.db"), workers=1)
    release, ran, undone = threading.Event(), [], []
    busy = runner.submit("test.busy", "a", {}, lambda ctx: release.wait(10) and None)
    queued = runner.submit("test.queued", "b", {}, lambda ctx: ran.append(1), on_failure=lambda: undone.append(1))
    runner.cancel(queued.id)
    # Its rollback has not run yet: ended now, it would say so before the booking went.
    assert runner.get(queued.id)["state"] == "queued" and runner.get(queued.id)["cancel_requested"]
    release.set()
    assert runner.outcome(busy.id, 10).state == "succeeded"
    task = runner.outcome(queued.id, 10)
    assert (task.state, task.message, task.started_at) == ("cancelled", NOT_STARTED, None)
    assert undone == [1] and ran == []
    runner.shutdown()


def test_a_task_nothing_here_will_run_is_cancelled_at_once(tmp_path):
    runner = TaskRunner(Store(f"sqlite:///{tmp_path}/tasks.db"))
    orphan = runner.new("test.orphan", "c", {})  # queued, never started on this runner
    runner.cancel(orphan.id)
    task = runner.get(orphan.id)
    assert (task["state"], task["message"]) == ("cancelled", NOT_STARTED)
    runner.shutdown()


def test_a_task_ends_saying_its_note_when_its_body_left_one(tmp_path):
    runner = TaskRunner(Store(f"sqlite:///{tmp_path}/tasks.db"))
    plain = runner.submit("test.plain", "a", {}, lambda ctx: {"state": "shutoff"})
    noted = runner.submit("test.noted", "b", {}, lambda ctx: {"state": "shutoff", "note": "powered off after 60 s"})
    listed = runner.submit("test.listed", "c", {}, lambda ctx: ["not", "a", "dict"])
    assert runner.outcome(plain.id, 10).message == "done"
    assert runner.outcome(noted.id, 10).message == "powered off after 60 s"
    assert (runner.outcome(listed.id, 10).state, runner.get(listed.id)["message"]) == ("succeeded", "done")
    runner.shutdown()
