"""The time-series store: bulk writes, 5-min and 1-h rollups with exact aggregates, retention,
queries, the migration against the tables, the same on PostgreSQL, and /metrics/query's errors."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.postgres import postgres_server
from vpool.store.db import Store
from vpool.store.tables import Base
from vpool.store.telemetry_tables import Rollup
from vpool.store.timeseries import Point, Retention, TimeSeries

H = 3600 * 1000  # ms
T0 = 1_700_000_000 * 1000 - (1_700_000_000 * 1000) % H  # an hour boundary


def _fill(ts: TimeSeries, hours: int) -> None:
    """Two series, one sample every 10 s: value = minute of the hour for a, constant 7 for b."""
    for i in range(hours * 360):
        t = T0 + i * 10_000
        ts.write([Point("vm", "uuid-a", "cpu_percent", "a", "h1", t, float((i // 6) % 60)),
                  Point("vm", "uuid-b", "cpu_percent", "b", "h1", t, 7.0)])


def _check_rollups(ts: TimeSeries) -> None:
    _fill(ts, 2)
    now = T0 + 2 * H + 60_000
    written = ts.maintain(now, grace_ms=10_000)
    assert written == {300: 2 * 24, 3600: 2 * 2}  # 2 series x 24 five-minute buckets; 2 x 2 hours
    [a] = ts.find("vm", name="a")
    five = ts.read([a], T0, T0 + 2 * H, 300, None)[a.id]
    assert len(five) == 24
    assert five[0] == [T0 / 1000, 2.0, 0.0, 4.0]  # minutes 0..4, 6 samples each
    hour = ts.read([a], T0, T0 + 2 * H, 3600, None)[a.id]
    assert hour == [[T0 / 1000, 29.5, 0.0, 59.0], [T0 / 1000 + 3600, 29.5, 0.0, 59.0]]
    assert ts.maintain(now, grace_ms=10_000) == {300: 0, 3600: 0}  # nothing new closed
    with ts.store.session() as s:
        assert s.query(Rollup).count() == 2 * 24 + 2 * 2
    # a finer step than stored comes back at the stored resolution; a coarser one is re-bucketed
    assert ts.read([a], T0, T0 + 2 * H, 300, 900)[a.id][0] == [T0 / 1000, 7.0, 0.0, 14.0]
    raw = ts.read([a], T0, T0 + 60_000, None, None)[a.id]
    assert [p[1] for p in raw] == [0.0] * 6
    assert ts.read([a], T0, T0 + 2 * H, None, 1800)[a.id][1] == [T0 / 1000 + 1800, 44.5, 30.0, 59.0]

    # Six minutes more: the 5-minute bucket that closed is rolled up, the hour is not, and the
    # newest minute is raw only. Every level answers for its own stretch, none twice.
    for i in range(36):
        ts.write([Point("vm", "uuid-a", "cpu_percent", "a", "h1", T0 + 2 * H + i * 10_000, float(i))])
    assert ts.maintain(T0 + 2 * H + 360_000, grace_ms=10_000) == {300: 1, 3600: 0}  # series a, T0 + 2 h
    five = ts.read([a], T0, T0 + 3 * H, 300, None)[a.id]
    assert five[-2:] == [[T0 / 1000 + 7200, 14.5, 0.0, 29.0], [T0 / 1000 + 7500, 32.5, 30.0, 35.0]]
    hour = ts.read([a], T0, T0 + 3 * H, 3600, None)[a.id]
    assert hour[1:] == [[T0 / 1000 + 3600, 29.5, 0.0, 59.0], [T0 / 1000 + 7200, 17.5, 0.0, 35.0]]

    # what a restarted detector is fed: each series' last samples, oldest first
    recent = ts.recent([("vm", "uuid-a", "cpu_percent"), ("vm", "uuid-b", "cpu_percent"),
                        ("vm", "uuid-z", "cpu_percent")], 6)
    assert recent[("vm", "uuid-a", "cpu_percent")] == [((T0 + 2 * H + i * 10_000) / 1000, float(i))
                                                       for i in range(30, 36)]
    # b stopped six minutes earlier: its own last ones, not what came after it ended
    assert recent[("vm", "uuid-b", "cpu_percent")] == [((T0 + 2 * H - i * 10_000) / 1000, 7.0) for i in range(6, 0, -1)]
    assert recent[("vm", "uuid-z", "cpu_percent")] == []
    # what its daily slots recall first: a rollup level's means from `since` up to where each
    # replay begins, a bucket that reaches past that left out
    until = {("vm", "uuid-a", "cpu_percent"): (T0 + 2 * H + 60_000) / 1000,
             ("vm", "uuid-b", "cpu_percent"): (T0 + 2 * H) / 1000, ("vm", "uuid-z", "cpu_percent"): (T0 + 2 * H) / 1000}
    recalled = ts.rollup_means(until, T0 + H, 300)
    hour_two = [((T0 + H) / 1000 + 300 * k, 5 * k + 2.0) for k in range(12)]
    assert recalled[("vm", "uuid-a", "cpu_percent")] == hour_two
    assert recalled[("vm", "uuid-b", "cpu_percent")] == [(t, 7.0) for t, _ in hour_two]
    assert recalled[("vm", "uuid-z", "cpu_percent")] == []
    until[("vm", "uuid-b", "cpu_percent")] = (T0 + 2 * H - 600_000) / 1000  # inside b's second hour
    hourly = ts.rollup_means(until, T0, 3600)
    assert hourly[("vm", "uuid-a", "cpu_percent")] == [(T0 / 1000, 29.5), ((T0 + H) / 1000, 29.5)]
    assert hourly[("vm", "uuid-b", "cpu_percent")] == [(T0 / 1000, 7.0)]

    # what a balance plan weighs: each VM's mean since a time off the 5-minute grid, read from raw
    # samples before the first whole bucket, rollups over the buckets, raw samples after the last
    since = T0 + 2 * H - 1_000_000
    first = (since - T0) // 10_000
    a_values = [float((i // 6) % 60) for i in range(first, 720)] + [float(i) for i in range(36)]
    means = ts.means("vm", "cpu_percent", ["uuid-a", "uuid-b", "uuid-z"], since)
    assert means == {"uuid-a": pytest.approx(sum(a_values) / len(a_values)), "uuid-b": pytest.approx(7.0)}
    assert ts.means("vm", "cpu_percent", ["uuid-a"], T0 + 2 * H + 200_000) == {"uuid-a": pytest.approx(27.5)}


def test_rollups_and_queries_on_sqlite(tmp_path):
    _check_rollups(TimeSeries(Store(f"sqlite:///{tmp_path / 'ts.db'}")))


@pytest.mark.postgres
def test_rollups_and_queries_on_postgresql():
    with postgres_server() as url:
        store = Store(url)
        try:
            _check_rollups(TimeSeries(store))
        finally:
            store.close()


def test_retention_drops_what_is_too_old(tmp_path):
    ts = TimeSeries(Store(f"sqlite:///{tmp_path / 'ts.db'}"), Retention(raw_s=3600, rollup_5m_s=7200, rollup_1h_s=10800))
    _fill(ts, 3)
    now = T0 + 3 * H + 60_000
    ts.maintain(now, grace_ms=10_000)
    [a] = ts.find("vm", name="a")
    raw = ts.read([a], 0, now, None, None)[a.id]
    assert raw[0][0] * 1000 >= now - 3600 * 1000 and len(raw) == 354  # the last hour, less the first minute
    five = ts.read([a], 0, now, 300, None)[a.id]
    assert five[0][0] * 1000 >= now - 7200 * 1000
    assert len(ts.read([a], 0, now, 3600, None)[a.id]) == 2  # the first hour began 3 h 1 min ago
    assert ts.resolution(now - 1800 * 1000, now) is None
    assert ts.resolution(now - 5000 * 1000, now) == 300
    assert ts.resolution(now - 9000 * 1000, now) == 3600


def test_a_series_follows_its_vm_to_another_host(tmp_path):
    ts = TimeSeries(Store(f"sqlite:///{tmp_path / 'ts.db'}"))
    ts.write([Point("vm", "uuid-a", "cpu_percent", "a", "h1", 1000, 1.0)])
    ts.write([Point("vm", "uuid-a", "cpu_percent", "a", "h2", 2000, 2.0)])
    [a] = ts.find("vm", name="a")
    assert a.host == "h2" and [p[1] for p in ts.read([a], 0, 3000, None, None)[a.id]] == [1.0, 2.0]


def test_the_migration_creates_exactly_the_telemetry_tables(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_query_api_refuses_bad_input(tapi, tcp, tmp_path):
    tapi.add_sim_host(tmp_path, "q1")
    tcp.telemetry.collect_once()
    for params, status, words in (
            ({"vm": "nope"}, 404, "no VM"), ({"host": "nope"}, 404, "no host"),
            ({"host": "q1", "metric": "disk_read_iops"}, 422, "unknown"),
            ({"since": "last week"}, 422, "ISO 8601"), ({"since": "1h", "until": "2h"}, 422, "later"),
            ({"step": "0s"}, 422, "at least"), ({"step": "-5m"}, 422, "duration"),
            ({"since": "9" * 400}, 422, "100 years"), ({"since": "99999999999d"}, 422, "100 years"),
            ({"step": "99999999999999999999s"}, 422, "100 years")):
        r = tapi.get("/metrics/query", params=params)
        assert r.status_code == status and words in r.json()["detail"], (params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    pool = tapi.get("/metrics/query", params={"metric": "hosts_up", "step": "1m"}).json()
    assert pool["scope"] == "pool" and pool["series"][0]["points"][0][1] == 1.0
    host = tapi.get("/metrics/query", params={"host": "q1"}).json()
    assert "memory_total_bytes" in {s["metric"] for s in host["series"]}
