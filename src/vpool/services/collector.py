"""The collection loop: every interval, each host's bulk statistics become rates, anomaly
scores, stored samples, and a step of every alarm.

Hosts are read in parallel and waited for at most one interval, so a host that hangs or
fails is marked stale and the others are stored on time; a host whose previous read has not
returned is not asked again until it does. One detector per series is kept in memory (a
restart relearns, which the detector's learning period is for).

`vpool serve` runs this loop in a process of its own (`collector_process`), so that at
thousands of VMs its rates, detectors and exposition never hold the API's interpreter lock;
it then reads hosts over connections of its own (`OwnConnections`). Tests and embedded control
planes run it on a thread over the control plane's connections (`SharedConnections`).
"""

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import func, select

import vpool.store.telemetry_tables  # noqa: F401  (registers the telemetry tables on Base.metadata)
from vpool.model.errors import Conflict, HypervisorError, Invalid, NotFound
from vpool.model.states import HostState
from vpool.store.tables import VM, Host, Task, utcnow
from vpool.store.timeseries import ROLLUP_STEPS_S, Point, Retention, TimeSeries
from vpool.telemetry.collector import (ANOMALY_SUFFIX, PERCENT_METRICS, SCOPES, HostReading, VMReading,
                                       anomaly_metric, host_rates, host_reading, known_metric, pool_metrics,
                                       vm_rates, vm_reading)
from vpool.telemetry.detectors import Detector, make_detector
from vpool.telemetry.exporter import PoolCollector
from vpool.telemetry.forecast import forecast_points
from vpool.telemetry.timespec import parse_duration, parse_instant

FORECAST_STEPS = 600  # at most this many steps of history are fitted: a few milliseconds
ROUND_STEPS_S = (10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)  # "+5m", not "+5.33m"
DETECTOR_IDLE_S = 3600  # a series unseen this long (its VM deleted) gives its detector back


@dataclass(frozen=True)
class HostRead:
    """What one host answered, with the monotonic time of the answer (for rates) and the wall
    time the question left (for the reconciler, whose writes must not undo a task's newer ones)."""

    host_id: int
    host: str
    mono: float
    domains: list[tuple[str, str, dict]]
    host_stats: dict
    duration_s: float
    read_at: datetime | None = None


@dataclass
class HostStatus:
    stale: bool = True
    error: str | None = None
    last_collected: float | None = None
    duration_s: float | None = None
    vms: int = 0


class SharedConnections:
    """Reads hosts over the control plane's own connections (the loop runs on a thread of the
    control plane's process); a host without one is down, and its reconnection is not ours."""

    def __init__(self, connections):
        self.connections = connections

    def driver(self, host_id: int, uri: str):
        drv = self.connections.drivers.get(host_id)
        if drv is None:
            raise HypervisorError("vpool has no connection to the host")
        return drv

    def failed(self, host_id: int) -> None:
        pass


class TelemetryService:
    def __init__(self, cp, source=None):
        self.cp = cp
        self.source = source or SharedConnections(cp.connections)
        self.remote = None  # the collector process's view, when the loop runs there
        st = cp.settings
        self.interval_s = st.telemetry_interval_s
        self.series = TimeSeries(cp.store, Retention(st.telemetry_raw_retention_s, st.telemetry_5m_retention_s,
                                                     st.telemetry_1h_retention_s))
        self.latest: dict[tuple[str, str], dict[str, float]] = {}  # (scope, name) -> metric -> value
        self.placement: dict[str, str] = {}  # VM name -> host it was read on
        self.readings: dict[str, tuple[HostReading, list[VMReading]]] = {}  # host -> last counters
        self.status: dict[str, HostStatus] = {}
        self.samples_stored = 0
        self._prev_vm: dict[int, dict[str, tuple[float, VMReading]]] = {}
        self._prev_host: dict[int, tuple[float, HostReading]] = {}
        self._detectors: dict[tuple[str, str, str], list] = {}  # key -> [detector, last update epoch s]
        self._busy: set[int] = set()
        self._maintained: int | None = None  # the 5-minute bucket rollups last ran in
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="collect")
        self._stop = threading.Event()
        self._registry = CollectorRegistry()
        self._registry.register(PoolCollector(self.snapshot))

    def start(self, remote=None) -> None:
        """Runs the loop on a thread here, or hands it to `remote` (a started `CollectorProcess`)
        and asks that for the last interval from then on."""
        if self.interval_s <= 0:
            return
        if remote is not None:
            self.remote = remote
            remote.start()
        else:
            threading.Thread(target=self._loop, name="telemetry", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.remote is not None:
            self.remote.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.collect_once()
            except Exception as e:  # the loop outlives any one bad interval
                print(f"vpool: telemetry collection failed: {e}")

    # --- one interval -----------------------------------------------------------------------
    def collect_once(self, now: float | None = None) -> list[dict]:
        """Reads every host, stores and scores the interval, steps the alarms; returns announcements."""
        now = time.time() if now is None else now
        with self.cp.store.session() as s:
            hosts = list(s.execute(select(Host.id, Host.name, Host.uri, Host.state).order_by(Host.id)))
        futures, failed = {}, {}
        for host_id, name, uri, state in hosts:
            if state == HostState.down:
                failed[name] = "the host is down"
            elif host_id in self._busy:
                failed[name] = "its previous reading has not returned yet"
            else:
                self._busy.add(host_id)
                future = self._pool.submit(self._read, host_id, name, uri)
                future.add_done_callback(lambda _f, h=host_id: self._busy.discard(h))
                futures[future] = name
        done, late = wait(futures, timeout=self.interval_s)
        reads = []
        for future in done:
            try:
                reads.append(future.result())
            except Exception as e:
                failed[futures[future]] = str(e)
        for future in late:
            failed[futures[future]] = f"no answer within the {self.interval_s:g} s interval"
        return self.ingest(now, reads, failed)

    def _read(self, host_id: int, name: str, uri: str) -> HostRead:
        start, read_at = time.monotonic(), utcnow()
        try:
            drv = self.source.driver(host_id, uri)
            domains = drv.all_domain_stats()
            host_stats = drv.host_stats()
        except Exception:
            self.source.failed(host_id)
            raise
        end = time.monotonic()
        return HostRead(host_id, name, end, domains, host_stats, end - start, read_at)

    def ingest(self, now: float, reads: list[HostRead], failed: dict[str, str]) -> list[dict]:
        """The pure-ish half of an interval, separate from the reading so tests and the
        benchmark can feed it: rates, scores, one bulk write, the alarms."""
        with self._lock:
            t_ms = int(now * 1000)
            points: list[Point] = []
            latest: dict[tuple[str, str], dict[str, float]] = {}
            placement: dict[str, str] = {}
            for name, why in failed.items():
                status = self.status.setdefault(name, HostStatus())
                status.stale, status.error = True, why
            for hr in reads:
                vms = [vm_reading(uuid, vm, stats) for uuid, vm, stats in hr.domains]
                prev = self._prev_vm.get(hr.host_id, {})
                vm_metrics = []
                for r in vms:
                    before = prev.get(r.uuid)
                    m = vm_rates(before[1] if before else None, r, hr.mono - before[0] if before else 0.0)
                    vm_metrics.append(m)
                    latest[("vm", r.name)] = self._points(points, "vm", r.uuid, r.name, hr.host, t_ms, m)
                    placement[r.name] = hr.host
                self._prev_vm[hr.host_id] = {r.uuid: (hr.mono, r) for r in vms}
                hs = hr.host_stats
                cur = host_reading(hs["cpu"], hs["memory_total_bytes"], hs["memory"])
                before = self._prev_host.get(hr.host_id)
                hm = host_rates(before[1] if before else None, cur, vm_metrics, vms)
                self._prev_host[hr.host_id] = (hr.mono, cur)
                latest[("host", hr.host)] = self._points(points, "host", hr.host, hr.host, hr.host, t_ms, hm)
                self.readings[hr.host] = (cur, vms)
                self.status[hr.host] = HostStatus(False, None, now, hr.duration_s, len(vms))
                if hr.read_at is not None:
                    self.cp.reconciler.sync_sizes(hr.host_id, hr.read_at, {r.uuid: r.size for r in vms if r.size})
            for name in failed:
                self.readings.pop(name, None)
            with self.cp.store.session() as s:
                pm = pool_metrics(self.cp.hosts.describe_all(s))
            latest[("pool", "pool")] = self._points(points, "pool", "", "pool", "", t_ms, pm)
            self._score(points, now, latest)
            self.samples_stored += self.series.write(points)
            self.latest, self.placement = latest, placement
            announced = self.cp.alarms.evaluate(latest, now)
            self._maintain(now)
            return announced

    @staticmethod
    def _points(points: list[Point], scope: str, subject: str, name: str, host: str, t_ms: int,
                metrics: dict[str, float]) -> dict[str, float]:
        """Appends the metrics as points; returns them by metric name (their scores come later)."""
        points.extend(Point(scope, subject, metric, name, host, t_ms, value) for metric, value in metrics.items())
        return dict(metrics)

    def _score(self, points: list[Point], now: float, latest: dict[tuple[str, str], dict[str, float]]) -> None:
        """Scores every point of the interval and appends the scores as points of their own. A
        series whose detector is still learning gets no score rather than a 0 that reads as
        normal: its anomaly series, its alarms and its Prometheus gauge begin once it has learnt."""
        new = [(p.scope, p.subject, p.metric) for p in points if (p.scope, p.subject, p.metric) not in self._detectors]
        if new:
            self._warm(new, now)
        for p in list(points):
            entry = self._detectors[(p.scope, p.subject, p.metric)]
            entry[1] = now
            score = entry[0].update(now, p.value)
            if not entry[0].learnt:
                continue
            latest[(p.scope, p.name)][anomaly_metric(p.metric)] = score
            points.append(p._replace(metric=anomaly_metric(p.metric), value=score))

    def _warm(self, keys: list[tuple[str, str, str]], now: float) -> None:
        """New detectors, each first fed the series' stored history: after a restart, a collector
        process started again or a standby taking over, scoring goes on at once instead of
        after a whole learning period (50 minutes at 10 s) of silence. Those that learn over
        days (daily slots) first recall the days before from the hourly rollups."""
        detectors = {key: self.new_detector(key[2]) for key in keys}
        history = self.series.recent(keys, max(d.learning_period for d in detectors.values()))
        recalling = {key: history[key][0][0] if history[key] else now for key, d in detectors.items() if d.recall_s}
        if recalling:
            longest = max(detectors[key].recall_s for key in recalling)
            # the hourly rollups: a two-hour slot gets two means, together exactly its own, from a
            # twelfth of the rows of the 5-minute ones (BENCHMARKS.md: about half the restart's cost)
            hourly = ROLLUP_STEPS_S[-1]
            for key, means in self.series.rollup_means(recalling, int((now - longest) * 1000), hourly).items():
                detectors[key].recall(means)
        for key, detector in detectors.items():
            for t, value in history[key]:
                detector.update(t, value)
            self._detectors[key] = [detector, now]

    @staticmethod
    def new_detector(metric: str) -> Detector:
        """The detector a series of `metric` gets: a percentage's range is known, so it learns
        no range and has daily slots to recall (the restart benchmark asks which do)."""
        return make_detector(value_range=(0.0, 100.0) if metric in PERCENT_METRICS else None)

    def _maintain(self, now: float) -> None:
        """Rollups and retention when a 5-minute bucket has closed since the last time; between
        those moments there is nothing for them to do."""
        bucket = int((now - self.interval_s) // ROLLUP_STEPS_S[0])
        if bucket == self._maintained:
            return
        self._maintained = bucket
        self.series.maintain(int(now * 1000), grace_ms=int(self.interval_s * 1000))
        idle = [k for k, (_d, seen) in self._detectors.items() if now - seen > DETECTOR_IDLE_S]
        for key in idle:
            del self._detectors[key]

    # --- what the adapters read -------------------------------------------------------------
    def query(self, vm: str | None, host: str | None, metric: str | None, since: str, until: str | None,
              step: str | None, now: float | None = None) -> dict:
        """Stored series of one VM, one host or the pool over a range, at the finest resolution
        kept that far back (or in buckets of `step`)."""
        now = time.time() if now is None else now
        start = parse_instant(since, now, "since")
        end = parse_instant(until, now, "until") if until is not None else now
        if end <= start:
            raise Invalid(f"until must be later than since (since {since!r}, until {until!r})")
        step_s = None
        if step is not None:
            step_s = int(parse_duration(step, "step"))
            if step_s < 1:
                raise Invalid(f"step must be at least 1s, got {step!r}")
        scope, name, found = self._series(vm, host, metric)
        native = self.series.resolution(int(start * 1000), int(now * 1000))
        points = self.series.read(found, int(start * 1000), int(end * 1000), native, step_s)
        return {"scope": scope, "name": name, "since": start, "until": end,
                "resolution_s": native, "step_s": max(step_s or 0, native or 0) or None,
                "series": [{"metric": x.metric, "name": x.name, "host": x.host, "subject": x.subject,
                            "points": points[x.id]} for x in found]}

    def forecast(self, vm: str | None, host: str | None, metric: str, horizon: str, history: str,
                 now: float | None = None) -> dict:
        """One series' next values, from Holt-Winters fitted on its stored history: what a
        predictive balancer or an autoscaler asks ("where will this VM's CPU be in 30 minutes?")."""
        now = time.time() if now is None else now
        if metric.endswith(ANOMALY_SUFFIX):
            raise Invalid("anomaly scores are not forecast; name the metric itself")
        horizon_s, history_s = parse_duration(horizon, "horizon"), parse_duration(history, "history")
        if not 0 < horizon_s <= history_s:
            raise Invalid(f"the horizon must be longer than zero and no longer than the history it is "
                          f"forecast from (horizon {horizon!r}, history {history!r})")
        scope, name, found = self._series(vm, host, metric)
        if not found:
            raise Conflict(f"{name} has no {metric} stored yet")
        newest = max(found, key=lambda x: x.id)  # a VM deleted and made again under its name has two
        now_ms = int(now * 1000)
        # a model of at most ~600 steps over the history there is: a VM 20 minutes old is
        # forecast from its 10 s samples, not from the twenty 1-minute steps 6 hours would take
        asked_ms = int((now - history_s) * 1000)
        start_ms = self.series.oldest(newest, asked_ms) or asked_ms
        native = self.series.resolution(start_ms, now_ms)
        base = native or self.interval_s
        need = max(base, (now_ms - start_ms) / 1000 / FORECAST_STEPS)
        step = next((n for n in ROUND_STEPS_S if n >= need and n % base == 0), base * math.ceil(need / base))
        points = self.series.read([newest], start_ms, now_ms, native, int(math.ceil(step)))[newest.id]
        try:
            ahead = forecast_points([(p[0], p[1]) for p in points], step, horizon_s)
        except ValueError as e:
            raise Conflict(f"cannot forecast {name}'s {metric} yet: {e}") from None
        return {"scope": scope, "name": name, "metric": metric, "history_s": history_s, "horizon_s": horizon_s,
                **ahead}

    def _series(self, vm: str | None, host: str | None, metric: str | None) -> tuple[str, str, list]:
        """(scope, name, the stored series) a query names: one VM's (host narrows it), one host's, or the pool's."""
        scope = "vm" if vm is not None else "host" if host is not None else "pool"
        if metric is not None and not known_metric(scope, metric):
            raise Invalid(f"{scope} metric {metric!r} is unknown; known: {', '.join(SCOPES[scope])} "
                          f"(each also as <metric>{ANOMALY_SUFFIX})")
        name = vm if scope == "vm" else host if scope == "host" else "pool"
        found = self.series.find(scope, name=name, host=host if scope == "vm" else None, metric=metric)
        if not found:
            self._check_exists(scope, name)
        return scope, name, found

    def _check_exists(self, scope: str, name: str) -> None:
        table = {"vm": VM, "host": Host}.get(scope)
        if table is None:
            return
        with self.cp.store.session() as s:
            if s.scalar(select(table.id).where(table.name == name)) is None:
                raise NotFound(f"there is no {'VM' if scope == 'vm' else 'host'} {name!r}")

    def current(self, host: str | None = None) -> dict:
        """The last interval, from memory: what `vpool top` shows."""
        if self.remote is not None:
            return self.remote.latest(host)
        latest, placement = self.latest, self.placement
        vms = [{"name": name, "host": placement.get(name), "metrics": metrics}
               for (scope, name), metrics in latest.items()
               if scope == "vm" and (host is None or placement.get(name) == host)]
        hosts = [{"name": name, "stale": st.stale, "error": st.error, "last_collected": st.last_collected,
                  "duration_s": st.duration_s, "vms": st.vms, "metrics": latest.get(("host", name), {})}
                 for name, st in sorted(self.status.items()) if host is None or name == host]
        return {"interval_s": self.interval_s, "vms": sorted(vms, key=lambda v: v["name"]), "hosts": hosts,
                "pool": latest.get(("pool", "pool"), {})}

    def exposition(self) -> bytes:
        """The pool's Prometheus text, rendered where the loop's memory is."""
        if self.remote is not None:
            return self.remote.exposition()
        return generate_latest(self._registry)

    def snapshot(self) -> dict:
        """Everything the Prometheus exporter shows, as plain data, for one scrape."""
        with self.cp.store.session() as s:
            hosts = self.cp.hosts.describe_all(s)
            tasks = dict(s.execute(select(Task.state, func.count(Task.id)).group_by(Task.state)).all())
        return {"hosts": hosts, "readings": dict(self.readings), "latest": self.latest, "status": dict(self.status),
                "tasks": tasks, "alarms_firing": self.cp.alarms.firing_counts(),
                "samples_stored": self.samples_stored}
