"""Telemetry's tables: time series (raw and rolled up) and alarms with their history.

A series is named once (scope, subject, metric) and samples refer to it by id, so a raw
sample is three numbers. Times are integer epoch milliseconds: bucket arithmetic
(t - t % step) is then the same exact SQL on SQLite and PostgreSQL.
"""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from vpool.store.tables import Base, utcnow


class Series(Base):
    """subject is a VM's UUID (it outlives renames and migrations), a host's name, or '' for the pool."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("scope", "subject", "metric"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(63))  # the VM's or host's name when last seen
    host: Mapped[str] = mapped_column(String(63))  # the host it was last seen on ('' for the pool)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (Index("ix_samples_t", "t"),)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), primary_key=True)
    t: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class Rollup(Base):
    """One bucket of `step_s` seconds starting at t: enough to give mean, min and max, and to roll up again."""

    __tablename__ = "rollups"
    __table_args__ = (Index("ix_rollups_step_t", "step_s", "t"),)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), primary_key=True)
    step_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    t: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    total: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)


class AlarmRule(Base):
    """target None watches every VM (or host) of the scope, each on its own."""

    __tablename__ = "alarm_rules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # threshold | anomaly
    scope: Mapped[str] = mapped_column(String(8))
    target: Mapped[str | None] = mapped_column(String(63), default=None)
    metric: Mapped[str] = mapped_column(String(64))
    comparison: Mapped[str] = mapped_column(String(2))
    value: Mapped[float] = mapped_column(Float)
    for_s: Mapped[float] = mapped_column(Float, default=0.0)
    webhook: Mapped[str | None] = mapped_column(String(1024), default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlarmState(Base):
    __tablename__ = "alarm_states"
    rule_id: Mapped[int] = mapped_column(ForeignKey("alarm_rules.id", ondelete="CASCADE"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # ok | firing | resolved
    breach_since: Mapped[float | None] = mapped_column(Float, default=None)
    value: Mapped[float | None] = mapped_column(Float, default=None)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlarmEvent(Base):
    """History outlives its rule, so the rule's name is copied, not referenced."""

    __tablename__ = "alarm_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(63), index=True)
    subject: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    notified: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_error: Mapped[str | None] = mapped_column(Text, default=None)
