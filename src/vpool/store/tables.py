"""The store's tables: desired and observed state of the pool, and the tasks that change it."""

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """SQLite forgets time zones; every time vpool stores is UTC, so it is given back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON}


class Setting(Base):
    """Pool-wide defaults (allocation ratios, reservations) that a host may override."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    uri: Mapped[str] = mapped_column(String(1024), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="up")
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    arch: Mapped[str] = mapped_column(String(32))
    hypervisor: Mapped[str] = mapped_column(String(32))
    hypervisor_version: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str] = mapped_column(String(255))
    host_uuid: Mapped[str] = mapped_column(String(64))
    virt_type: Mapped[str] = mapped_column(String(16))
    network: Mapped[str] = mapped_column(String(255))
    storage_pool: Mapped[str] = mapped_column(String(255))
    # The id of the storage behind storage_pool (LibvirtDriver.storage_identity): equal on hosts that
    # share it; None until the host has been reached once.
    storage: Mapped[str | None] = mapped_column(String(64), default=None)
    cpu_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    ram_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    disk_ratio: Mapped[float | None] = mapped_column(Float, default=None)
    reserved_cpus: Mapped[int | None] = mapped_column(Integer, default=None)
    reserved_memory_mib: Mapped[int | None] = mapped_column(Integer, default=None)
    reserved_disk_gib: Mapped[int | None] = mapped_column(Integer, default=None)
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """A base disk (and, for kernel-boot images, a kernel and initrd) kept by the control plane.

    Hosts get a copy in their storage pool the first time a VM needs it (an ImageCopy).
    """

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "disk" or "kernel"
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger)
    kernel_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    initrd_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    cmdline: Mapped[str | None] = mapped_column(String(1024), default=None)
    digest: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImageCopy(Base):
    __tablename__ = "image_copies"
    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    disk_path: Mapped[str] = mapped_column(String(1024))
    kernel_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    initrd_path: Mapped[str | None] = mapped_column(String(1024), default=None)


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)


class Group(Base):
    """A server group (Nova's word): its VMs share a host, or never do, as its policy says."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VM(Base):
    __tablename__ = "vms"
    # Covers the per-host sums placement reads on every create: an index-only scan.
    __table_args__ = (Index("ix_vms_allocation", "host_id", "cpus", "memory_mib", "disk_gib"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    uuid: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), default=None)
    ownership: Mapped[str] = mapped_column(String(16), default="managed", index=True)
    state: Mapped[str] = mapped_column(String(16), default="creating", index=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), default=None)
    flavor_id: Mapped[int | None] = mapped_column(ForeignKey("flavors.id"), default=None)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id"), default=None)
    disk_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    # The storage the disk is on when that is not its host's (a copy-storage migration into another
    # pool); None: its host's. Placement moves the VM only to hosts on it.
    storage: Mapped[str | None] = mapped_column(String(64), default=None)
    # False: balance and consolidation plans, and so DRS, leave it where it is (Ganeti's auto_balance,
    # vCenter's per-VM DRS override); an evacuation or an explicit migration still moves it.
    auto_balance: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    host: Mapped[Host | None] = relationship(lazy="joined")
    image: Mapped[Image | None] = relationship(lazy="joined")
    flavor: Mapped[Flavor | None] = relationship(lazy="joined")
    group: Mapped[Group | None] = relationship(lazy="joined")

    @property
    def disk_storage(self) -> str | None:
        """The storage its disk is on: what a host must see to run it without copying the disk."""
        return self.storage or (self.host.storage if self.host else None)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    target: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
    requested_by: Mapped[str] = mapped_column(String(64), default="admin")
    params: Mapped[dict] = mapped_column(default=dict)
    result: Mapped[dict | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiToken(Base):
    """Bearer tokens, stored as SHA-256 digests so a copy of the database grants nothing."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ControlPlaneLease(Base):
    """Which control plane runs on this database: one row at most (see services/lease.py)."""

    __tablename__ = "control_plane_lease"
    id: Mapped[int] = mapped_column(primary_key=True)  # always 1
    token: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_start: Mapped[int] = mapped_column(BigInteger)  # with the pid, names the process even after pid reuse
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)
