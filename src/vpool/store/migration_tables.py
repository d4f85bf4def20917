"""Live migrations: the room each one books on its destination while it runs, then its history.

A row is the booking and the record at once: services.pool counts the size of every row still
`queued` or `running` against its destination, so a placement made meanwhile cannot give the
same room away, and a restart finds the bookings it must settle in the same table.
VMs and hosts are kept by name too (history outlives them), their ids only while they exist.
"""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vpool.store.tables import Base, utcnow

BOOKING = ("queued", "running")  # states in which a migration holds room on its destination


class Migration(Base):
    __tablename__ = "migrations"
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id", ondelete="SET NULL"), default=None, index=True)
    vm_name: Mapped[str] = mapped_column(String(63))
    vm_uuid: Mapped[str] = mapped_column(String(64), index=True)
    task_id: Mapped[int | None] = mapped_column(Integer, default=None)
    source_host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"), default=None)
    destination_host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"),
                                                            default=None, index=True)
    source: Mapped[str] = mapped_column(String(63))
    destination: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    copy_storage: Mapped[bool] = mapped_column(Boolean, default=False)
    max_downtime_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    bandwidth_mib_s: Mapped[int | None] = mapped_column(Integer, default=None)
    postcopy: Mapped[bool] = mapped_column(Boolean, default=False)  # switched to post-copy
    iterations: Mapped[int | None] = mapped_column(Integer, default=None)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)  # libvirt's job time
    downtime_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # The disk copy-storage left behind on a host that could not be reached to remove it (the
    # copy that did not become the VM's); removed when that host is back.
    leftover_host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"), default=None,
                                                         index=True)
    leftover_disk: Mapped[str | None] = mapped_column(String(1024), default=None)
    leftover_storage: Mapped[str | None] = mapped_column(String(64), default=None)  # the storage it is on
    # A copy-storage migration's disk on both hosts ({"source"|"destination": [host id, path,
    # storage]}) from the copy's creation until it is known which the VM runs on; a migration
    # that could not tell (a host out of reach, or vpool restarted) keeps them until the VM is found.
    undecided_disks: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), default=None)
    # The VM's snapshot and checkpoint metadata ({"snapshots": [...], "checkpoints": [...]}),
    # which libvirt does not carry: kept here until defined again where the VM is.
    carried: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), default=None)  # None is SQL NULL
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
