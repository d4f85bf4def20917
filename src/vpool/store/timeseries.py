"""The time-series repository: bulk writes, rollups, retention and range queries in SQL.

One collection interval is one transaction with one executemany of its samples, so a
thousand VMs cost one commit, not ten thousand. The samples go straight to the DB-API
cursor as tuples: at 10,000 VMs an interval is 180,000 rows, and the ORM's per-row
bookkeeping cost three times what SQLite's own insert does. Rollups are aggregated by the database
(INSERT ... SELECT ... GROUP BY t - t % step), which is the same SQL on SQLite and
PostgreSQL because times are integer milliseconds.
"""

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import delete, func, insert, literal, literal_column, select, tuple_, union_all, update

from vpool.store.db import Store
from vpool.store.telemetry_tables import Rollup, Sample, Series

ROLLUP_STEPS_S = (300, 3600)  # each rolled up from the one before it (raw for the first)


class Point(NamedTuple):  # a tuple: an interval makes hundreds of thousands
    scope: str
    subject: str
    metric: str
    name: str
    host: str
    t_ms: int
    value: float


@dataclass(frozen=True)
class Retention:
    raw_s: int = 86400
    rollup_5m_s: int = 30 * 86400
    rollup_1h_s: int = 365 * 86400

    def of(self, step_s: int | None) -> int:
        return {None: self.raw_s, 300: self.rollup_5m_s, 3600: self.rollup_1h_s}[step_s]


class TimeSeries:
    def __init__(self, store: Store, retention: Retention = Retention()):
        self.store = store
        self.retention = retention
        self._ids: dict[tuple[str, str, str], tuple[int, str, str]] = {}  # key -> (id, name, host)
        self._rolled: dict[int, int | None] = {}  # step -> end (ms) of the last bucket rolled up
        self._lock = threading.Lock()

    # --- writing --------------------------------------------------------------------------
    def write(self, points: list[Point]) -> int:
        """Stores one interval's points in one transaction; returns how many were stored."""
        if not points:
            return 0
        with self._lock, self.store.session() as s:
            ids = self._series_ids(s, points)
            rows = {(ids[(p.scope, p.subject, p.metric)], p.t_ms): p.value for p in points}
            with _dbapi_cursor(s) as (cursor, mark):
                cursor.executemany(f"INSERT INTO {Sample.__tablename__} (series_id, t, value) "
                                   f"VALUES ({mark}, {mark}, {mark})", [(i, t, v) for (i, t), v in rows.items()])
            s.commit()
            return len(rows)

    def _series_ids(self, s, points: list[Point]) -> dict[tuple[str, str, str], int]:
        wanted = {(p.scope, p.subject, p.metric): (p.name, p.host) for p in points}
        missing = [k for k in wanted if k not in self._ids]
        if missing:
            for chunk in _chunks(missing, 500):
                for sid, scope, subject, metric, name, host in s.execute(
                        select(Series.id, Series.scope, Series.subject, Series.metric, Series.name, Series.host)
                        .where(tuple_(Series.scope, Series.subject, Series.metric).in_(chunk))):
                    self._ids[(scope, subject, metric)] = (sid, name, host)
            new = [k for k in missing if k not in self._ids]
            if new:
                s.execute(insert(Series), [{"scope": k[0], "subject": k[1], "metric": k[2], "name": wanted[k][0],
                                            "host": wanted[k][1]} for k in new])
                for chunk in _chunks(new, 500):
                    for sid, scope, subject, metric in s.execute(
                            select(Series.id, Series.scope, Series.subject, Series.metric)
                            .where(tuple_(Series.scope, Series.subject, Series.metric).in_(chunk))):
                        self._ids[(scope, subject, metric)] = (sid, *wanted[(scope, subject, metric)])
        moved = [(k, v) for k, v in wanted.items() if self._ids[k][1:] != v]  # renamed or migrated
        for k, (name, host) in moved:
            sid = self._ids[k][0]
            s.execute(update(Series).where(Series.id == sid).values(name=name, host=host))
            self._ids[k] = (sid, name, host)
        return {k: self._ids[k][0] for k in wanted}

    # --- downsampling and retention ---------------------------------------------------------
    def maintain(self, now_ms: int, grace_ms: int) -> dict[int, int]:
        """Rolls up every bucket that closed at least grace_ms ago, then drops what retention
        no longer keeps. Safe to re-run: a bucket is rewritten whole. Returns buckets written per step."""
        written = {}
        with self._lock, self.store.session() as s:
            source_end = now_ms - grace_ms
            for step_s, source_step in zip(ROLLUP_STEPS_S, (None, *ROLLUP_STEPS_S)):
                step_ms = step_s * 1000
                if source_step is not None:
                    source_end = self._rolled.get(source_step) or 0
                closed = source_end - source_end % step_ms
                start = self._cursor(s, step_s, source_step)
                written[step_s] = 0
                if start is None or start >= closed:
                    continue
                s.execute(delete(Rollup).where(Rollup.step_s == step_s, Rollup.t >= start, Rollup.t < closed))
                if source_step is None:
                    bucket = _bucket(Sample.t, step_ms)
                    rows = select(Sample.series_id, literal(step_s), bucket, func.count(), func.sum(Sample.value),
                                  func.min(Sample.value), func.max(Sample.value)) \
                        .where(Sample.t >= start, Sample.t < closed).group_by(Sample.series_id, bucket)
                else:
                    bucket = _bucket(Rollup.t, step_ms)
                    rows = select(Rollup.series_id, literal(step_s), bucket, func.sum(Rollup.count),
                                  func.sum(Rollup.total), func.min(Rollup.low), func.max(Rollup.high)) \
                        .where(Rollup.step_s == source_step, Rollup.t >= start, Rollup.t < closed) \
                        .group_by(Rollup.series_id, bucket)
                s.execute(insert(Rollup).from_select(["series_id", "step_s", "t", "count", "total", "low", "high"],
                                                     rows))
                # counted, not taken from rowcount: psycopg reports -1 for INSERT ... SELECT
                written[step_s] = s.scalar(select(func.count()).select_from(Rollup).where(
                    Rollup.step_s == step_s, Rollup.t >= start, Rollup.t < closed))
                self._rolled[step_s] = closed
            s.execute(delete(Sample).where(Sample.t < now_ms - self.retention.raw_s * 1000))
            for step_s in ROLLUP_STEPS_S:
                s.execute(delete(Rollup).where(Rollup.step_s == step_s,
                                               Rollup.t < now_ms - self.retention.of(step_s) * 1000))
            s.commit()
        return written

    def _cursor(self, s, step_s: int, source_step: int | None) -> int | None:
        """Where rolling up resumes: after the last bucket written, else at the oldest source data."""
        if self._rolled.get(step_s) is None:
            last = s.scalar(select(func.max(Rollup.t)).where(Rollup.step_s == step_s))
            if last is not None:
                self._rolled[step_s] = last + step_s * 1000
            else:
                first = (s.scalar(select(func.min(Sample.t))) if source_step is None else
                         s.scalar(select(func.min(Rollup.t)).where(Rollup.step_s == source_step)))
                return None if first is None else first - first % (step_s * 1000)
        return self._rolled[step_s]

    # --- reading ----------------------------------------------------------------------------
    def find(self, scope: str, name: str | None = None, subject: str | None = None,
             host: str | None = None, metric: str | None = None) -> list[Series]:
        where = [Series.scope == scope]
        for column, value in ((Series.name, name), (Series.subject, subject), (Series.host, host),
                              (Series.metric, metric)):
            if value is not None:
                where.append(column == value)
        with self.store.session() as s:
            return list(s.scalars(select(Series).where(*where).order_by(Series.name, Series.metric)))

    def recent(self, keys: list[tuple[str, str, str]], limit: int) -> dict[tuple[str, str, str],
                                                                          list[tuple[float, float]]]:
        """The last `limit` raw samples of each series named (scope, subject, metric), oldest
        first, as (t seconds, value): what a detector that starts again after a restart, or on a
        standby that took over, learns from instead of learning for an hour again. The last
        ones whenever they were taken: the time the control plane was down, restarts and missed
        intervals take nothing from them.

        One index seek and a short backward scan per series, through the DB-API cursor as
        `write` does: at 1,000 VMs (9,000 series, 2.7 million rows) 3.4 s, as fast as one range
        scan per 500 series, which needs a span of time that gaps leave short; a window function
        (ROW_NUMBER per series) took 28 s."""
        out: dict[tuple[str, str, str], list[tuple[float, float]]] = {k: [] for k in keys}
        with self.store.session() as s:
            ids = _key_ids(s, keys)
            with _dbapi_cursor(s) as (cursor, mark):
                for sid, key in ids.items():
                    cursor.execute(f"SELECT t, value FROM {Sample.__tablename__} WHERE series_id = {mark} "
                                   f"ORDER BY t DESC LIMIT {mark}", (sid, limit))
                    out[key] = [(t / 1000.0, value) for t, value in reversed(cursor.fetchall())]
        return out

    def rollup_means(self, until: dict[tuple[str, str, str], float], since_ms: int, step_s: int) -> dict[
            tuple[str, str, str], list[tuple[float, float]]]:
        """The means of `step_s` rollups of each series named (scope, subject, metric) from
        `since_ms` up to its own `until` (seconds: where its replayed raw samples begin), oldest
        first, as (t seconds, mean): the days a restarted detector's daily slots learn from
        (`recall`). One index range scan per series, as `recent` reads."""
        out: dict[tuple[str, str, str], list[tuple[float, float]]] = {k: [] for k in until}
        with self.store.session() as s:
            ids = _key_ids(s, list(until))
            with _dbapi_cursor(s) as (cursor, mark):
                for sid, key in ids.items():
                    end = int(until[key] * 1000) - step_s * 1000  # a bucket reaching into the replay is left out
                    cursor.execute(f"SELECT t, total / count FROM {Rollup.__tablename__} WHERE series_id = {mark} "
                                   f"AND step_s = {mark} AND t >= {mark} AND t <= {mark} ORDER BY t",
                                   (sid, step_s, since_ms, end))
                    out[key] = [(t / 1000.0, mean) for t, mean in cursor.fetchall()]
        return out

    def means(self, scope: str, metric: str, subjects: list[str], since_ms: int) -> dict[str, float]:
        """Each subject's mean raw `metric` since `since_ms`, for those with samples there. The
        whole 5-minute buckets already rolled up are read from their rollups (a count and a total
        each, so the mean is exact) and only the ends from raw samples: an hour of 1,000 VMs is
        12,000 rollup rows and a few thousand samples instead of 360,000 samples."""
        step_ms = ROLLUP_STEPS_S[0] * 1000
        out: dict[str, float] = {}
        lo, hi = since_ms + (-since_ms) % step_ms, None    # the first whole bucket; where rolled-up ones end
        with self.store.session() as s:
            for chunk in _chunks(subjects, 500):
                ids = dict(s.execute(select(Series.id, Series.subject).where(
                    Series.scope == scope, Series.metric == metric, Series.subject.in_(chunk))).all())
                if not ids:
                    continue
                if hi is None:  # read once, and only once a series is there (none is, with telemetry off)
                    newest = s.scalar(select(func.max(Rollup.t)).where(Rollup.step_s == ROLLUP_STEPS_S[0]))
                    hi = max(lo, newest + step_ms if newest is not None else lo)
                raw = [select(Sample.series_id, func.count(), func.sum(Sample.value))
                       .where(Sample.series_id.in_(ids), *when).group_by(Sample.series_id)
                       for when in ((Sample.t >= since_ms, Sample.t < lo), (Sample.t >= hi,))]
                rolled = (select(Rollup.series_id, func.sum(Rollup.count), func.sum(Rollup.total))
                          .where(Rollup.series_id.in_(ids), Rollup.step_s == ROLLUP_STEPS_S[0], Rollup.t >= lo,
                                 Rollup.t < hi).group_by(Rollup.series_id))
                sums: dict[int, list[float]] = {}
                for sid, n, total in s.execute(union_all(*raw, rolled)):
                    acc = sums.setdefault(sid, [0, 0.0])
                    acc[0] += n
                    acc[1] += total
                out.update({ids[sid]: total / n for sid, (n, total) in sums.items() if n})
        return out

    def oldest(self, series: Series, since_ms: int) -> int | None:
        """The time (ms) of the series' oldest point at or after `since`, raw or rolled up."""
        with self.store.session() as s:
            times = [s.scalar(select(func.min(table.t)).where(table.series_id == series.id, table.t >= since_ms))
                     for table in (Sample, Rollup)]
        return min((t for t in times if t is not None), default=None)

    def resolution(self, since_ms: int, now_ms: int) -> int | None:
        """The finest resolution still kept as far back as `since` (None: raw). Raw wins
        whenever it covers the range, because rollups lag the newest bucket by design."""
        for native in (None, *ROLLUP_STEPS_S):
            if since_ms >= now_ms - self.retention.of(native) * 1000:
                return native
        return ROLLUP_STEPS_S[-1]

    def read(self, series: list[Series], since_ms: int, until_ms: int, native: int | None,
             step_s: int | None) -> dict[int, list[list[float]]]:
        """Points [t seconds, mean, min, max] per series id, in buckets of step seconds when
        one is given (a step finer than the stored resolution gets the stored resolution).

        From rollups, the newest buckets come from the finer data not rolled up yet (rollups
        run when a 5-minute bucket closes, hourly ones when an hour does): a query over two
        days still shows the last minutes, and their peak."""
        ids = [x.id for x in series]
        if not ids:
            return {}
        where = (Sample.series_id.in_(ids), Sample.t >= since_ms, Sample.t < until_ms)
        if native is None and step_s is None:
            q = select(Sample.series_id, Sample.t, Sample.value, Sample.value, Sample.value) \
                .where(*where).order_by(Sample.series_id, Sample.t)
        elif native is None:
            bucket = _bucket(Sample.t, step_s * 1000)
            q = select(Sample.series_id, bucket, func.avg(Sample.value), func.min(Sample.value),
                       func.max(Sample.value)).where(*where) \
                .group_by(Sample.series_id, bucket).order_by(Sample.series_id, bucket)
        else:
            with self.store.session() as s:
                parts = self._levels(s, ids, since_ms, until_ms, native)
            rows = union_all(*parts).subquery()
            bucket = _bucket(rows.c.t, max(step_s or native, native) * 1000)
            q = select(rows.c.series_id, bucket, func.sum(rows.c.total) / func.sum(rows.c.count),
                       func.min(rows.c.low), func.max(rows.c.high)) \
                .group_by(rows.c.series_id, bucket).order_by(rows.c.series_id, bucket)
        out: dict[int, list[list[float]]] = {i: [] for i in ids}
        with self.store.session() as s:
            for sid, t, mean, low, high in s.execute(q):
                out[sid].append([t / 1000.0, float(mean), float(low), float(high)])
        return out

    def _levels(self, s, ids: list[int], since_ms: int, until_ms: int, native: int) -> list:
        """(series_id, t, count, total, low, high) rows covering [since, until): each rollup
        level, coarsest first, up to where it has been rolled, then the raw samples after."""
        parts, start = [], since_ms
        for step_s in reversed(ROLLUP_STEPS_S[:ROLLUP_STEPS_S.index(native) + 1]):
            last = s.scalar(select(func.max(Rollup.t)).where(Rollup.step_s == step_s))
            end = min(until_ms, start if last is None else max(start, last + step_s * 1000))
            parts.append(select(Rollup.series_id, Rollup.t, Rollup.count, Rollup.total, Rollup.low, Rollup.high)
                         .where(Rollup.series_id.in_(ids), Rollup.step_s == step_s, Rollup.t >= start,
                                Rollup.t < end))
            start = end
        parts.append(select(Sample.series_id, Sample.t, literal_column("1"), Sample.value, Sample.value, Sample.value)
                     .where(Sample.series_id.in_(ids), Sample.t >= start, Sample.t < until_ms))
        return parts


def _key_ids(s, keys: list[tuple[str, str, str]]) -> dict[int, tuple[str, str, str]]:
    """The ids of the series named (scope, subject, metric) that exist, in chunks the databases take."""
    ids = {}
    for chunk in _chunks(keys, 500):
        for sid, scope, subject, metric in s.execute(
                select(Series.id, Series.scope, Series.subject, Series.metric)
                .where(tuple_(Series.scope, Series.subject, Series.metric).in_(chunk))):
            ids[sid] = (scope, subject, metric)
    return ids


@contextmanager
def _dbapi_cursor(s):
    """The session's own DB-API cursor and its placeholder: past SQLAlchemy's per-row work, for
    the hundreds of thousands of rows an interval writes or a restart reads."""
    cursor = s.connection().connection.dbapi_connection.cursor()
    try:
        yield cursor, "?" if s.bind.dialect.paramstyle == "qmark" else "%s"
    finally:
        cursor.close()


def _bucket(t, step_ms: int):
    # Inlined, not bound: PostgreSQL only matches a GROUP BY expression to the selected one
    # when they are textually the same, and two bind parameters are two different texts.
    return t - t % literal_column(str(int(step_ms)))


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]
