"""Rates from counters, and the collection loop over simulated hosts: one bulk call per host,
every series stored with its anomaly score, a failing or hanging host marked stale."""

import dataclasses
import threading
import time

from tests.core.conftest import Api, eventually, make_settings
from tests.telemetry.conftest import domain, feed_cpu, host_read
from vpool.model.errors import HypervisorError
from vpool.services.controlplane import ControlPlane
from vpool.store.timeseries import Point
from vpool.telemetry.collector import host_rates, host_reading, vm_rates, vm_reading
from vpool.telemetry.detectors import ContextNoveltyDetector


def test_vm_rates_from_two_readings():
    before = vm_reading("u", "v", domain(cpu_s=100, vcpus=2, rd=0, wr=4096 * 10, rx=1000, tx=0))
    after = vm_reading("u", "v", domain(cpu_s=105, vcpus=2, rd=4096 * 20, wr=4096 * 30, rx=6000, tx=500))
    m = vm_rates(before, after, dt=10.0)
    assert m["cpu_percent"] == 25.0  # 5 CPU-seconds over 10 s on 2 vCPUs
    assert m["disk_read_bytes_per_s"] == 4096 * 2 and m["disk_read_iops"] == 2
    assert m["disk_write_bytes_per_s"] == 4096 * 2 and m["disk_write_iops"] == 2
    assert m["net_rx_bytes_per_s"] == 500 and m["net_tx_bytes_per_s"] == 50
    assert m["memory_balloon_bytes"] == 2**30 and m["memory_used_bytes"] == 2**30 * 3 / 4


def test_devices_are_summed_and_a_reset_counter_gives_no_rate():
    stats = {"state.state": 1, "cpu.time": 10**9, "block.count": 2, "block.0.rd.bytes": 100,
             "block.1.rd.bytes": 50, "net.count": 2, "net.0.rx.bytes": 7, "net.1.rx.bytes": 3}
    r = vm_reading("u", "v", stats)
    assert (r.rd_bytes, r.rx_bytes, r.wr_bytes) == (150, 10, None)
    restarted = vm_reading("u", "v", {**stats, "cpu.time": 10**6})  # rebooted: the counter starts over
    assert "cpu_percent" not in vm_rates(r, restarted, 10.0)
    assert vm_rates(r, restarted, 10.0)["disk_read_bytes_per_s"] == 0
    stopped = vm_reading("u", "v", {**stats, "state.state": 5, "balloon.current": 2**20})
    assert vm_rates(r, stopped, 10.0) == {}  # not even the configured memory it would have


def test_host_rates():
    before = host_reading({"user": 10, "kernel": 10, "idle": 70, "iowait": 10}, 10**6, {"free": 100})
    after = host_reading({"user": 40, "kernel": 20, "idle": 120, "iowait": 20}, 10**6, {"free": 90, "cached": 10})
    vms = [vm_reading("a", "a", domain(0, vcpus=4)), vm_reading("b", "b", domain(0, running=False))]
    m = host_rates(before, after, [{"cpu_percent": 50.0}, {}], vms)
    assert m["cpu_percent"] == 40.0  # 40 of 100 ns busy; iowait counts as idle
    assert m["guest_cpu_cores"] == 2.0 and m["vms_running"] == 1
    assert m["memory_used_bytes"] == 10**6 - 100 * 1024  # page cache counts as free
    assert "cpu_percent" not in host_rates(None, after, [], [])
    # the statistics' own total, where they give one: virNodeGetInfo may count less than the OS has
    both = host_rates(None, host_reading({}, 9 * 2**30, {"total": 24 * 2**20, "free": 20 * 2**20}), [], [])
    assert (both["memory_total_bytes"], both["memory_used_bytes"]) == (24 * 2**30, 4 * 2**30)


def test_collect_stores_every_series_and_no_score_while_learning(tapi, tcp, tmp_path):
    """Every series is stored from the first interval; its anomaly score only once its detector
    has learnt (test_alarms feeds one that long), so a 0 never stands for "not learnt yet"."""
    tapi.add_sim_host(tmp_path, "h1")
    for name in ("v1", "v2"):
        tapi.task(tapi.post("/vms", json={"name": name, "cpus": 1, "memory": "512M", "disk": "1G"}))
    tcp.telemetry.collect_once()
    tcp.telemetry.collect_once()
    for vm in ("v1", "v2"):
        metrics = {s.metric for s in tcp.telemetry.series.find("vm", name=vm)}
        assert {"cpu_percent", "memory_used_bytes"} <= metrics and not any(m.endswith(".anomaly") for m in metrics)
        assert not any(m.endswith(".anomaly") for m in tcp.telemetry.latest[("vm", vm)])
    cpu = tapi.get("/metrics/query", params={"vm": "v1", "metric": "cpu_percent"}).json()["series"][0]["points"]
    assert len(cpu) == 1 and 99 <= cpu[0][1] <= 100  # the test driver's CPU clock runs with the wall clock
    host = {s.metric for s in tcp.telemetry.series.find("host", name="h1")}
    assert {"memory_total_bytes", "vms_running", "guest_cpu_cores"} <= host
    assert tcp.telemetry.latest[("pool", "pool")]["vms"] == 2
    assert not tcp.telemetry.status["h1"].stale


def test_a_failing_or_hanging_host_is_stale_and_the_others_go_on(tcp, tmp_path):
    api = Api(tcp)
    api.add_sim_host(tmp_path, "good")
    api.add_sim_host(tmp_path, "bad")
    bad_id = api.get("/hosts/bad").json()["id"]
    drv = tcp.connections.drivers[bad_id]

    def broken():
        raise HypervisorError("cannot read domain statistics: connection reset")
    drv.all_domain_stats = broken
    tcp.telemetry.collect_once()
    status = tcp.telemetry.status
    assert status["bad"].stale and "connection reset" in status["bad"].error
    assert not status["good"].stale and ("host", "good") in tcp.telemetry.latest

    release = threading.Event()
    drv.all_domain_stats = lambda: release.wait() and []
    tcp.telemetry.interval_s = 0.3  # how long one interval waits for a host
    tcp.telemetry.collect_once()
    assert "no answer" in status["bad"].error and not status["good"].stale
    tcp.telemetry.collect_once()
    assert "has not returned" in status["bad"].error
    release.set()
    assert eventually(lambda: bad_id not in tcp.telemetry._busy)


def test_the_background_loop_collects(tmp_path):
    cp = ControlPlane(dataclasses.replace(make_settings(tmp_path), telemetry_interval_s=0.2))
    cp.start()
    try:
        Api(cp).add_sim_host(tmp_path, "loop1")
        assert eventually(lambda: ("host", "loop1") in cp.telemetry.latest)
        assert cp.telemetry.samples_stored > 0
    finally:
        cp.stop()


def test_ingest_keeps_rates_per_vm_across_intervals(tcp):
    t = tcp.telemetry
    t.ingest(1000.0, [host_read(0.0, {"a": domain(cpu_s=0, rx=0)})], {})
    t.ingest(1010.0, [host_read(10.0, {"a": domain(cpu_s=2, rx=10_000)})], {})
    assert t.latest[("vm", "a")]["cpu_percent"] == 20.0
    assert t.latest[("vm", "a")]["net_rx_bytes_per_s"] == 1000.0
    assert t.latest[("host", "h1")]["cpu_percent"] == 25.0


def test_a_restarted_collector_scores_at_once_from_the_stored_history(tmp_path):
    """A control plane that starts again after 20 minutes down (an upgrade, a crash, a standby
    taking over) feeds each new detector the series' last stored samples: a spike right after
    the start is seen, where a detector without history would still be learning for 300
    intervals. The CPU series is scored from the second interval on, after the first wrote the
    memory series: its history is still its own last 300 points."""
    spike = [0.21, 0.95, 0.95, 0.95]  # the first interval only sets the counters again
    settings = dataclasses.replace(make_settings(tmp_path / "a"), telemetry_interval_s=3600.0)
    start = time.time() - 10 * 410 - 1200
    first = ControlPlane(settings)
    first.start()
    try:
        cpu, _ = feed_cpu(first, start, [0.20 + 0.01 * (i % 3) for i in range(400)])
    finally:
        first.stop()
    again = ControlPlane(settings)
    again.start()
    again.telemetry.interval_s = 10.0  # the span of history it reads (the loop itself never runs here)
    try:
        _, scores = feed_cpu(again, start + 4010 + 1200, spike, cpu)
    finally:
        again.stop()
    assert max(scores) >= 0.5, scores

    fresh = ControlPlane(dataclasses.replace(make_settings(tmp_path / "b"), telemetry_interval_s=3600.0))
    fresh.start()
    try:
        assert max(feed_cpu(fresh, start + 4010, spike, cpu)[1]) == 0.0  # still learning: no history, no score
    finally:
        fresh.stop()


def test_a_restarted_collector_teaches_the_daily_slots_the_days_before_from_the_rollups(tmp_path, monkeypatch):
    """The raw samples a restarted detector replays cover under an hour; a CPU series' daily
    slots are first taught the days before from the store's hourly means (``recall``), up to
    where the replay begins, so a series' times of day are not news again for days after an
    upgrade. Three days stored here: two beyond the raw retention, one still raw."""
    settings = dataclasses.replace(make_settings(tmp_path), telemetry_interval_s=3600.0)
    now = time.time()
    start = now - 3 * 86400
    first = ControlPlane(settings)
    first.start()
    try:
        first.telemetry.series.write([Point("vm", "uuid-web", "cpu_percent", "web", "h1", int((start + 300 * i) * 1000),
                                            70.0 if i % 288 >= 144 else 40.0) for i in range(864)])
        first.telemetry.series.maintain(int(now * 1000), grace_ms=10_000)
    finally:
        first.stop()
    recalled = {}
    monkeypatch.setattr(ContextNoveltyDetector, "recall", lambda self, means: recalled.setdefault(id(self), means))
    again = ControlPlane(settings)
    again.start()
    try:
        feed_cpu(again, now, [0.2, 0.2])
        key = ("vm", "uuid-web", "cpu_percent")
        replayed = again.telemetry.series.recent([key], 300)[key]
        detector = again.telemetry._detectors[key][0]
    finally:
        again.stop()
    means = recalled[id(detector)]
    assert 2 * 24 - 1 <= len(means) <= 2 * 24 + 1  # the two days no longer raw
    assert means[-1][0] + 3600 <= replayed[0][0]  # none overlaps the replay
    assert min(v for _, v in means) == 40.0 and max(v for _, v in means) == 70.0


def test_forecast_api_follows_a_rising_series_and_refuses_what_it_cannot(tapi, tcp):
    tcp.telemetry.interval_s = 10.0  # the fixture's loop never runs; the forecast steps by this
    start = time.time() - 10 * 200
    feed_cpu(tcp, start, [0.10 + 0.002 * i for i in range(200)])  # 10 % rising to 50 % over 33 minutes
    r = tapi.get("/metrics/forecast", params={"vm": "web", "metric": "cpu_percent", "horizon": "5m",
                                              "history": "1h"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["step_s"] == 10 and len(f["points"]) == 30 and 45 < f["last"][1] < 51
    ahead = [p[1] for p in f["points"]]
    assert ahead == sorted(ahead) and f["last"][1] < ahead[-1] < 60  # still rising, damped
    # a week of history asked for, 33 minutes there: its 10 s samples, not a week's 20-minute steps
    week = tapi.get("/metrics/forecast", params={"vm": "web", "metric": "cpu_percent", "horizon": "5m",
                                                 "history": "7d"})
    assert week.status_code == 200, week.text
    week = week.json()
    assert week["step_s"] == 10 and week["fitted_on"] >= 190, week
    for params, status, words in (
            ({"vm": "web", "metric": "cpu_percent.anomaly"}, 422, "not forecast"),
            ({"vm": "web", "metric": "cpu_percent", "horizon": "2h", "history": "1h"}, 422, "no longer than"),
            ({"vm": "web", "metric": "cpu_percent", "history": "2m", "horizon": "1m"}, 409, "cannot forecast"),
            ({"vm": "ghost", "metric": "cpu_percent"}, 404, "no VM"), ({"vm": "web"}, 422, "metric")):
        r = tapi.get("/metrics/forecast", params=params)
        assert r.status_code == status and words in r.json()["detail"], (params, r.text)
