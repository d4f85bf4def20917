"""Applying balance and consolidation plans on simulated hosts: the moves run as migrations
stage by stage, a refused move ends the plan with what was done, and bad requests change
nothing. libvirt's test driver cannot migrate, so each migration here moves the domain from
one simulated host to the other by hand; tests/migration/test_live.py applies a plan to real
guests."""

import threading

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from tests.core.conftest import eventually
from tests.serving import cli_env
from vpool.cli.main import app
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.model.errors import HypervisorError
from vpool.services import drs
from vpool.services.migration import MigrationService
from vpool.store.tables import Host, Task


@pytest.fixture
def pool(api, tmp_path, monkeypatch):
    for name in ("h1", "h2", "h3"):
        api.add_sim_host(tmp_path, name, cpus=8, memory_mib=16384, storage="nas")
    for i in range(4):
        api.task(api.post("/vms", json={"name": f"v{i}", "cpus": 1, "memory": "2G", "disk": "1G", "host": "h1"}))

    def moved_by_hand(self, ctx, job, policy, new_disk, run):
        src = self.cp.connections.driver(job["src_id"]).conn
        dst = self.cp.connections.driver(job["dst_id"]).conn
        dom = src.lookupByUUIDString(job["uuid"])
        xml = dom.XMLDesc(0)
        dom.destroy()
        dom.undefine()
        dst.defineXML(xml).create()
        run.started, run.stats = True, {"time_elapsed": 10, "downtime": 1, "memory_processed": 2**20}
        run.source_state, run.dest_state = "missing", "running"
    monkeypatch.setattr(MigrationService, "_live", moved_by_hand)
    monkeypatch.setattr(LibvirtDriver, "volume_exists", lambda self, path: True)  # "nas": each host sees each disk
    return api


def _hosts(api) -> dict[str, str]:
    return {v["name"]: v["host"] for v in api.get("/vms").json()["items"]}


def test_a_balance_plan_is_applied_stage_by_stage(pool):
    plan = pool.get("/plans/balance").json()
    assert plan["moves"]
    task = pool.task(pool.post("/plans/balance/apply"))
    r = task["result"]
    assert [(m["vm"], m["to"]) for m in r["moves"]] == [(m["vm"], m["to"]) for m in plan["moves"]]
    hosts = _hosts(pool)
    assert all(hosts[m["vm"]] == m["to"] for m in r["moves"])
    assert r["score_now"] == pytest.approx(r["score_planned"]) and r["score_now"] < r["score_before"]
    assert pool.get("/plans/balance").json()["moves"] == []                  # nothing left to do
    kinds = [t["kind"] for t in pool.get("/tasks", params={"limit": 50}).json()["items"]]
    assert kinds.count("vm.migrate") == len(plan["moves"])                    # each move is a migration task


def test_a_consolidation_parks_the_hosts_it_empties(pool):
    pool.task(pool.post("/vms/v3/migrate", json={"to": "h2"}))
    plan = pool.get("/plans/consolidate").json()
    assert plan["power_off"] and plan["moves"]
    r = pool.task(pool.post("/plans/consolidate/apply", json={"cpu_target": 0.9}))["result"]
    for host in r["power_off"]:
        assert pool.get(f"/hosts/{host}").json()["maintenance"] is True
        assert host not in _hosts(pool).values()
    r = pool.post("/vms", json={"name": "new", "cpus": 1, "memory": "1G", "host": r["power_off"][0]})
    assert r.status_code == 409                                                # parked: nothing new lands there


def test_a_failed_move_ends_the_plan_after_its_stage_with_what_was_done(pool, monkeypatch):
    moves = pool.get("/plans/balance").json()["moves"]
    assert len(moves) >= 2
    failing = moves[0]["vm"]
    moved_by_hand = MigrationService._live

    def breaks_for_one(self, ctx, job, policy, new_disk, run):
        if job["name"] == failing:
            raise HypervisorError("the link dropped")
        moved_by_hand(self, ctx, job, policy, new_disk, run)
    monkeypatch.setattr(MigrationService, "_live", breaks_for_one)
    task = pool.task(pool.post("/plans/balance/apply"), expect="failed")
    made = [m for m in moves[1:] if m["stage"] == 1]  # its stage's other moves run; later stages do not
    assert task["error"].startswith(f"the balance plan stopped after {len(made)} of {len(moves)} moves: "
                                    f"{failing}: migration of {failing} from h1 to {moves[0]['to']} failed: "
                                    f"the link dropped; it still runs on h1. Every move made is whole"), task["error"]
    hosts = _hosts(pool)
    assert hosts[failing] == "h1" and all(hosts[m["vm"]] == (m["to"] if m in made else "h1") for m in moves[1:])


@pytest.mark.parametrize("kind, body, status, words", [
    ("ha", {}, 422, "only balance and consolidate plans are applied"),
    ("sideways", {}, 422, "only balance and consolidate"),
    ("balance", {"max_moves": "many"}, 422, "parameter max_moves"),
    ("balance", {"bogus": 1}, 422, "takes no parameter 'bogus'"),
    ("consolidate", {"cpu_target": [1]}, 422, ""),
    ("consolidate", {"cpu_target": 2}, 422, "parameter cpu_target: must be a share above 0 and at most 1"),
    ("balance", {"min_gain": "nan"}, 422, "parameter min_gain: must be at least 0"),
    ("balance", {"max_moves": -1}, 422, "parameter max_moves: must be at least 0"),
    ("balance", {"load_window_s": 5}, 422, "load_window_s must be 0 (weigh no measurement) or between 10 s"),
])
def test_bad_requests_start_nothing(pool, kind, body, status, words):
    before = pool.get("/tasks").json()["total"]
    r = pool.post(f"/plans/{kind}/apply", json=body)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert pool.get("/tasks").json()["total"] == before


def test_the_cli_applies_and_says_what_it_did(pool, monkeypatch, tmp_path):
    with cli_env(pool.cp, monkeypatch):
        r = CliRunner().invoke(app, ["plan", "balance", "--apply"])
        assert r.exit_code == 0 and "balance: 2 moves made" in r.stdout, r.output
        r = CliRunner().invoke(app, ["plan", "consolidate", "--apply"])
        assert r.exit_code == 0 and "consolidate: 2 moves made" in r.stdout, r.output
        assert "in maintenance, can be powered off: " in r.stdout
        r = CliRunner().invoke(app, ["plan", "balance", "--apply", "--htools", str(tmp_path / "c.txt")])
        assert r.exit_code == 1 and "--apply works on the live pool" in r.stderr


def test_drs_balances_the_pool_by_itself_once_turned_on(pool, monkeypatch):
    assert pool.get("/plans/drs").json()["automation"] == "off"
    status = pool.patch("/plans/drs", json={"automation": "automatic", "interval_s": 10, "max_moves": 1}).json()
    assert (status["automation"], status["interval_s"], status["max_moves"]) == ("automatic", 10.0, 1)
    monkeypatch.setattr(drs, "TICK_S", 0.2)
    stop = threading.Event()
    pool.cp.drs.start(stop)  # the fixture's control plane started its loop at the old tick
    try:
        task = eventually(lambda: next((t for t in pool.get("/tasks", params={"kind": "plan.apply"}).json()["items"]
                                        if t["state"] == "succeeded"), None), timeout=30)
    finally:
        stop.set()
    assert task["requested_by"] == "drs" and len(task["result"]["moves"]) == 1  # one move a run, as asked
    assert "applying 1 move on VM counts (task" in pool.get("/plans/drs").json()["last_run"]["outcome"]


def test_a_drs_run_waits_for_migrations_and_says_when_there_is_nothing_to_gain(pool):
    h2 = pool.get("/hosts/h2").json()["id"]
    with pool.cp.store.session() as s:
        s.add(Task(kind="vm.migrate", target="v0", state="running", params={}))
        s.commit()
    r = pool.post("/plans/drs/run").json()
    assert r["task"] is None and r["last_run"]["outcome"].startswith("skipped: 1 migration")
    with pool.cp.store.session() as s:
        s.execute(update(Task).where(Task.kind == "vm.migrate").values(state="failed"))
        s.execute(update(Host).where(Host.id == h2).values(state="down"))
        s.commit()
    assert "h2 is down" in pool.post("/plans/drs/run").json()["last_run"]["outcome"]
    with pool.cp.store.session() as s:
        s.execute(update(Host).where(Host.id == h2).values(state="up"))
        s.commit()
    r = pool.post("/plans/drs/run").json()            # automation off: a run asked for by hand still runs
    assert eventually(lambda: pool.get(f"/tasks/{r['task']}").json()["state"] == "succeeded")
    r = pool.post("/plans/drs/run").json()
    assert r["task"] is None and r["last_run"]["outcome"].startswith("balanced on VM counts: ")
    for body, words in (({"automation": "sometimes"}, "automation must be"), ({"interval_s": 1}, "at least 10"),
                        ({"max_moves": 0}, "at least 1"), ({"nope": 1}, "unknown DRS setting nope")):
        r = pool.patch("/plans/drs", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    assert pool.get("/plans/drs").json()["automation"] == "off"


def test_the_cli_shows_changes_and_runs_drs(pool, monkeypatch):
    with cli_env(pool.cp, monkeypatch):
        r = CliRunner().invoke(app, ["plan", "drs", "--set", "automation=automatic", "--set", "interval_s=600"])
        shown = dict(line.split(None, 1) for line in r.stdout.splitlines())
        assert r.exit_code == 0 and (shown["automation"], shown["interval_s"]) == ("automatic", "600.0"), r.output
        r = CliRunner().invoke(app, ["plan", "drs", "--set", "automation"])
        assert r.exit_code == 1 and "--set takes KEY=VALUE" in r.stderr
        r = CliRunner().invoke(app, ["plan", "drs", "--run"])
        assert r.exit_code == 0 and "applying 2 moves" in r.stdout and "plan.apply balance: succeeded" in r.stdout, \
            r.output


def test_a_vm_kept_out_of_plans_stays_where_it_is(pool, monkeypatch):
    moved = {m["vm"] for m in pool.get("/plans/balance").json()["moves"]}
    keep = sorted(moved)[0]
    vm = pool.patch(f"/vms/{keep}", json={"auto_balance": False}).json()
    assert vm["auto_balance"] is False
    assert next(v for v in pool.get("/vms").json()["items"] if v["name"] == keep)["auto_balance"] is False
    plan = pool.get("/plans/balance").json()
    assert plan["moves"] and keep not in {m["vm"] for m in plan["moves"]}
    r = pool.task(pool.post("/plans/balance/apply"))["result"]
    assert _hosts(pool)[keep] == "h1" and keep not in {m["vm"] for m in r["moves"]}
    pool.task(pool.post(f"/vms/{keep}/migrate", json={"to": "h3"}))          # an operator still moves it by hand
    assert _hosts(pool)[keep] == "h3"
    # consolidation empties hosts around such VMs: with one kept on h2 and one on h3, only h1 can go
    on_h2 = next(vm for vm, host in _hosts(pool).items() if host == "h2")
    pool.patch(f"/vms/{on_h2}", json={"auto_balance": False})
    assert pool.get("/plans/consolidate").json()["power_off"] == ["h1"]
    pool.task(pool.post("/hosts/h3/maintenance", json={"mode": "on"}))     # an evacuation moves it too
    assert _hosts(pool)[keep] != "h3"
    pool.task(pool.post("/hosts/h3/maintenance", json={"mode": "off"}))
    for vm in (keep, on_h2):
        assert pool.patch(f"/vms/{vm}", json={"auto_balance": True}).json()["auto_balance"] is True
    assert len(pool.get("/plans/consolidate").json()["power_off"]) == 2
    with cli_env(pool.cp, monkeypatch):
        r = CliRunner().invoke(app, ["vm", "set", keep, "--no-auto-balance"])
        assert r.exit_code == 0 and f"{keep}: plans leave it where it is" in r.stdout, r.output
        r = CliRunner().invoke(app, ["vm", "set", keep])
        assert r.exit_code == 1 and "name a setting to change" in r.stderr
    assert pool.get(f"/vms/{keep}").json()["auto_balance"] is False


@pytest.mark.parametrize("body, status, words", [
    ({}, 422, "name a setting to change"),
    ({"auto_balance": "sometimes"}, 422, "auto_balance"),
    ({"cpus": 4}, 422, "cpus"),
])
def test_bad_vm_changes_change_nothing(pool, body, status, words):
    r = pool.patch("/vms/v0", json=body)
    assert r.status_code == status and words in r.text, r.text
    assert pool.get("/vms/v0").json()["auto_balance"] is True
    assert pool.patch("/vms/nosuch", json={"auto_balance": False}).status_code == 404
