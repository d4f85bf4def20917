"""Tables for data protection: backups in a repository, templates, schedules and DR drills.

Snapshots have no table: libvirt keeps their tree with the domain, and a second copy here
could only drift from it.
"""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vpool.store.tables import Base, utcnow


class Backup(Base):
    """One restore point of one VM. An incremental is usable only through its whole chain.

    A point is `valid` only once every file is in the repository with its checksum; until then
    it is `running`, and a backup that did not finish ends `failed`, never valid.
    """

    __tablename__ = "backups"
    id: Mapped[int] = mapped_column(primary_key=True)
    # The VM is kept by name and UUID, not by foreign key: backups must outlive the VM.
    vm_name: Mapped[str] = mapped_column(String(63), index=True)
    vm_uuid: Mapped[str] = mapped_column(String(64), index=True)
    chain: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "full" or "incremental"
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id"), default=None)
    checkpoint: Mapped[str | None] = mapped_column(String(63), default=None)
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)
    point_at: Mapped[datetime | None] = mapped_column(default=None)
    files: Mapped[list] = mapped_column(JSON, default=list)  # [{"disk", "key", "size", "sha256"}]
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    spec: Mapped[dict] = mapped_column(default=dict)  # what a restore needs to rebuild the VM
    error: Mapped[str | None] = mapped_column(Text, default=None)
    task_id: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Template(Base):
    """What a sealed VM was, so clones of the template get its size by default."""

    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), unique=True)
    source_vm: Mapped[str] = mapped_column(String(63))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Schedule(Base):
    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "backup"
    vm_name: Mapped[str] = mapped_column(String(63), index=True)
    cron: Mapped[str] = mapped_column(String(128))
    incremental: Mapped[bool] = mapped_column(Boolean, default=True)
    keep_daily: Mapped[int | None] = mapped_column(Integer, default=None)
    keep_weekly: Mapped[int | None] = mapped_column(Integer, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The last due time the scheduler has dealt with (ran or reported missed).
    handled_until: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScheduleRun(Base):
    """Every due time gets a row, so a run the control plane missed is on record, not lost."""

    __tablename__ = "schedule_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), index=True)
    due_at: Mapped[datetime] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(16))  # "started", "missed", "refused"
    task_id: Mapped[int | None] = mapped_column(Integer, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Drill(Base):
    __tablename__ = "drills"
    id: Mapped[int] = mapped_column(primary_key=True)
    selector: Mapped[str] = mapped_column(String(255))
    target_host: Mapped[str | None] = mapped_column(String(63), default=None)
    state: Mapped[str] = mapped_column(String(16), default="running")  # running, passed, failed
    rto_s: Mapped[float | None] = mapped_column(Float, default=None)
    rpo_s: Mapped[float | None] = mapped_column(Float, default=None)
    report: Mapped[dict | None] = mapped_column(default=None)
    task_id: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
