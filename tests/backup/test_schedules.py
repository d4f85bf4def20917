"""Schedules on a simulated host: every due time is accounted for, missed ones are reported."""

from datetime import datetime, timezone

from vpool.store.backup_tables import Backup, Schedule


def test_missed_runs_after_downtime_are_reported_and_caught_up_once(api, tmp_path):
    api.add_sim_host(tmp_path, "sim1")
    api.task(api.post("/vms", json={"name": "w1", "memory": "512M"}))
    sc = api.post("/schedules", json={"vm": "w1", "cron": "0 2 * * *", "keep_daily": 7})
    assert sc.status_code == 201, sc.text
    sid = sc.json()["id"]
    down_since = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    with api.cp.store.session() as s:
        s.get(Schedule, sid).handled_until = down_since
        s.commit()

    now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)  # back after three nights
    runs = api.cp.schedules.tick(now)
    assert [(r.due_at.day, r.outcome) for r in runs] == [(21, "missed"), (22, "missed"), (23, "missed"),
                                                         (23, "started")]
    assert "catch-up" in runs[-1].note and runs[-1].task_id
    assert api.cp.schedules.tick(now) == []  # each due time is dealt with once
    api.cp.runner.outcome(runs[-1].task_id, 60)  # the catch-up ends before the next night's run
    shown = api.get(f"/schedules/{sid}").json()
    assert shown["missed"] == 3 and shown["next_run"].startswith("2026-11-24T02:00")
    catch_up = shown["runs"][0]  # its task's end, not "started": backups fail on the test driver
    assert (catch_up["task_id"], catch_up["outcome"]) == (runs[-1].task_id, "failed"), catch_up
    assert catch_up["note"].startswith("catch-up for the missed run; ") and shown["failed"] == 1

    on_time = api.cp.schedules.tick(datetime(2026, 11, 24, 2, 1, tzinfo=timezone.utc))
    assert [(r.outcome, r.note) for r in on_time] == [("started", "")]


def test_bad_schedules_are_refused(api, tmp_path):
    api.add_sim_host(tmp_path, "sim2")
    api.task(api.post("/vms", json={"name": "w2", "memory": "512M"}))
    assert api.post("/schedules", json={"vm": "w2", "cron": "0 2 * *"}).status_code == 422
    assert api.post("/schedules", json={"vm": "nope", "cron": "0 2 * * *"}).status_code == 404
    assert api.post("/schedules", json={"vm": "w2", "cron": "0 2 * * *", "kind": "reboot"}).status_code == 422
    r = api.post("/schedules", json={"vm": "w2", "cron": "0 2 * * *", "keep_daily": 0, "keep_weekly": 0})
    assert r.status_code == 422
    assert api.get("/schedules").json()["total"] == 0
    assert api.delete("/schedules/99").status_code == 404


def test_a_backup_running_when_the_control_plane_died_is_marked_failed(cp):
    with cp.store.session() as s:
        s.add(Backup(vm_name="x", vm_uuid="u", chain="c", kind="full", state="running", spec={}))
        s.commit()
    assert len(cp.backups.recover()) == 1
    [b] = cp.backups.listing("x")
    assert b["state"] == "failed" and "not a restore point" in b["error"]
