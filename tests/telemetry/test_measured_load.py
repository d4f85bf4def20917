"""The balance plan on the live pool weighs what VMs were measured to use: samples written as the
collector writes them, plans asked for through the API and the CLI."""

import time

import pytest
from typer.testing import CliRunner

from tests.core.conftest import eventually
from tests.serving import cli_env
from vpool.cli.main import app
from vpool.store.timeseries import Point, Retention


@pytest.fixture
def pool(tapi, tmp_path):
    """Two hosts even by allocation: three 2-vCPU VMs on each, the ones on h1 busy."""
    for host in ("h1", "h2"):
        tapi.add_sim_host(tmp_path, host, cpus=8, memory_mib=16384, storage="nas")
    for name, host in [(f"busy{i}", "h1") for i in range(3)] + [(f"idle{i}", "h2") for i in range(3)]:
        tapi.task(tapi.post("/vms", json={"name": name, "cpus": 2, "memory": "2G", "disk": "1G", "host": host}))
    return tapi


def measure(api, percent: dict[str, float], age_s: float = 0.0) -> None:
    """A minute of 10-second samples of each VM's cpu_percent, ending `age_s` ago."""
    end = time.time() - age_s
    points = []
    for name, value in percent.items():
        vm = api.get(f"/vms/{name}").json()
        points += [Point("vm", vm["uuid"], "cpu_percent", name, vm["host"], int((end - 10 * k) * 1000), value)
                   for k in range(6)]
    api.cp.telemetry.series.write(points)


def measure_hosts(api, percent: dict[str, float], age_s: float = 0.0, samples: int = 6) -> None:
    """10-second samples of the hosts' own cpu_percent, as the collector writes them, ending `age_s` ago."""
    end = time.time() - age_s
    api.cp.telemetry.series.write([Point("host", h, "cpu_percent", h, h, int((end - 10 * k) * 1000), value)
                                   for h, value in percent.items() for k in range(samples)])


def test_a_new_vm_goes_to_the_host_whose_cpus_were_least_busy(pool, tmp_path):
    """h1 and h2 are alike by allocation; each create goes where the CPUs were less busy, and so
    does a migration that names no destination."""
    measure_hosts(pool, {"h1": 90, "h2": 10})
    new = {"cpus": 1, "memory": "512M", "disk": "1G"}
    assert pool.get(f"/tasks/{pool.post('/vms', json={'name': 'n1'} | new).json()['id']}",
                    params={"wait": 10}).json()["params"]["host"] == "h2"
    pool.task(pool.delete("/vms/n1"))
    measure_hosts(pool, {"h1": 0, "h2": 100}, age_s=60, samples=12)  # over the hour: h1 30 % busy, h2 70 %
    assert pool.get(f"/tasks/{pool.post('/vms', json={'name': 'n2'} | new).json()['id']}",
                    params={"wait": 10}).json()["params"]["host"] == "h1"
    for h in ("h3", "h4"):  # alike by allocation, and emptier than h2
        pool.add_sim_host(tmp_path, h, cpus=8, memory_mib=16384, storage="nas")
    measure_hosts(pool, {"h3": 95, "h4": 5})
    r = pool.post("/vms/busy0/migrate", json={})  # the hosts share a storage marker but no disk: refused, naming it
    assert r.status_code == 409 and r.json()["detail"].startswith("h4 does not see"), r.text


def test_busy_vms_are_spread_though_allocations_are_even(pool):
    assert pool.get("/plans/balance").json()["moves"] == []                 # nothing measured: VMs counted
    measure(pool, {"busy0": 90, "busy1": 90, "busy2": 90, "idle0": 2, "idle1": 2}, age_s=120)
    plan = pool.get("/plans/balance").json()
    assert plan["load"] == {"cpu": "measured", "window_s": 3600.0, "running_vms": 6, "measured_vms": 5}
    assert plan["moves"][0]["vm"].startswith("busy") and plan["moves"][0]["to"] == "h2"
    assert "CPU load" in plan["moves"][0]["reason"]
    # three VMs at 90 % of 2 vCPUs on h1's 8 CPUs, and 2 % of 2 vCPUs twice on h2's; idle2 counts 2 busy
    busy = {h["host"]: (h["before"], h["after"]) for h in plan["cpu_busy"]}
    assert busy["h1"][0] == pytest.approx(3 * 1.8 / 8) and busy["h2"][0] == pytest.approx((2 * 0.04 + 2) / 8)
    assert abs(busy["h1"][1] - busy["h2"][1]) < busy["h1"][0] - busy["h2"][0]
    r = pool.post("/plans/drs/run").json()                                  # DRS plans on the same loads
    assert r["task"] and r["last_run"]["outcome"] == (
        f"applying {len(plan['moves'])} move{'s' * (len(plan['moves']) > 1)} on measured CPU load (task {r['task']})")
    assert eventually(lambda: pool.get(f"/tasks/{r['task']}").json()["finished_at"])  # the test driver fails it
    # samples older than the window are not load: the plan counts VMs again, and says so
    plan = pool.get("/plans/balance", params={"load_window_s": 60}).json()
    assert plan["load"]["cpu"] == "not measured" and plan["moves"] == []
    assert "load" not in pool.get("/plans/balance", params={"ignore_dynu": "true"}).json()
    status = pool.patch("/plans/drs", json={"load_window_s": 60}).json()
    assert status["load_window_s"] == 60.0
    r = pool.post("/plans/drs/run").json()
    assert r["task"] is None and r["last_run"]["outcome"].startswith("balanced on VM counts: ")
    plan = pool.get("/plans/balance", params={"load_window_s": 0}).json()     # 0: count VMs, whatever is measured
    assert plan["load"] == {"cpu": "not measured", "window_s": 0.0, "running_vms": 6, "measured_vms": 0}
    assert plan["moves"] == []


def test_an_unmeasured_vm_counts_all_its_vcpus_busy(pool):
    """idle2 has no sample: were it taken as idle, busy VMs would be moved next to it."""
    measure(pool, {"busy0": 60, "busy1": 60, "busy2": 60, "idle0": 1, "idle1": 1})
    with_unknown = pool.get("/plans/balance").json()
    measure(pool, {"idle2": 1})
    known = pool.get("/plans/balance").json()
    assert known["load"]["measured_vms"] == 6
    assert known["score_before"] > with_unknown["score_before"]   # all idle on h2: further apart


def test_consolidation_keeps_hosts_out_of_cpu_contention(pool):
    """By allocation one host holds all six VMs; by load only while its CPUs stay under the target."""
    assert len(pool.get("/plans/consolidate").json()["power_off"]) == 1      # nothing measured: allocations
    measure(pool, {"busy0": 90, "busy1": 90, "busy2": 90, "idle0": 2, "idle1": 2, "idle2": 2})
    plan = pool.get("/plans/consolidate", params={"load_target": 0.8}).json()  # 5.52 of 8 cores: under 80 %
    assert plan["load"]["cpu"] == "measured" and len(plan["power_off"]) == 1
    after = {h["host"]: h["after"] for h in plan["cpu_busy"]}
    assert after[plan["power_off"][0]] == 0 and max(after.values()) == pytest.approx(5.52 / 8)
    plan = pool.get("/plans/consolidate").json()                             # over 63 %: both stay on
    assert plan["power_off"] == [] and plan["moves"] == []
    plan = pool.get("/plans/consolidate", params={"load_window_s": 0}).json()
    assert plan["load"]["cpu"] == "not measured" and len(plan["power_off"]) == 1
    for bad in ("0", "1.5", "nan"):
        r = pool.get("/plans/consolidate", params={"load_target": bad})
        assert r.status_code == 422 and "load_target" in r.json()["detail"], r.text


def test_bad_load_windows_are_refused_and_change_nothing(pool):
    for value in ("5", "abc", str(10 * 86400)):
        r = pool.get("/plans/balance", params={"load_window_s": value})
        assert r.status_code == 422 and "load_window_s" in r.json()["detail"], r.text
    r = pool.post("/plans/balance/apply", json={"load_window_s": 5})
    assert r.status_code == 422 and "load_window_s" in r.json()["detail"]
    assert [t for t in pool.get("/tasks").json()["items"] if t["kind"] == "plan.apply"] == []
    for value in (1, [60], "soon"):
        r = pool.patch("/plans/drs", json={"load_window_s": value})
        assert r.status_code == 422 and "load_window_s" in r.json()["detail"], r.text
    assert pool.get("/plans/drs").json()["load_window_s"] == 3600.0
    assert pool.patch("/plans/drs", json={"load_window_s": 900}).json()["load_window_s"] == 900.0
    # raw samples kept for less than the window since: each run says why it cannot plan
    pool.cp.telemetry.series.retention = Retention(raw_s=600)
    outcome = pool.post("/plans/drs/run").json()["last_run"]["outcome"]
    assert outcome.startswith("could not plan: load_window_s must be 0 (weigh no measurement) or between 10 s and "
                              "600 s"), outcome


def test_the_cli_says_what_the_plan_weighed(pool, monkeypatch):
    measure(pool, {"busy0": 90, "busy1": 90, "busy2": 90, "idle0": 2, "idle1": 2})
    with cli_env(pool.cp, monkeypatch):
        r = CliRunner().invoke(app, ["plan", "balance"])
        assert r.exit_code == 0, r.output
        assert ("CPU load: measured over the last 60 min for 5 of 6 running VMs; 1 not yet measured counts all "
                "its vCPUs busy") in " ".join(r.output.split())
        assert "CPUs busy by measured load" in r.output and "68%" in r.output   # h1 now: 5.4 of 8 CPUs
        r = CliRunner().invoke(app, ["plan", "balance", "--load-window", "60", "--htools", "c.txt"])
        assert r.exit_code != 0 and "--load-window needs the live pool" in r.output
