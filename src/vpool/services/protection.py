"""Wires the data-protection services (snapshots, backups, clones, schedules, DR drills) onto a
control plane, once, and starts the scheduler.

ControlPlane itself does not know them yet; create_app calls attach(cp). Safe to call twice.
"""

from vpool.services.backups import BackupService
from vpool.services.busy import Busy
from vpool.services.clones import CloneService
from vpool.services.drills import DrillService
from vpool.services.repository import default_repository
from vpool.services.schedules import ScheduleService
from vpool.services.snapshots import SnapshotService


def attach(cp, run_schedules: bool = True) -> None:
    if getattr(cp, "backups", None) is not None:
        return
    busy = Busy()
    cp.snapshots = SnapshotService(cp, busy)
    cp.backups = BackupService(cp, busy, default_repository(cp.settings.data_dir))
    cp.backups.recover()
    cp.clones = CloneService(cp, busy)
    cp.schedules = ScheduleService(cp)
    cp.drills = DrillService(cp)
    if run_schedules:
        cp.schedules.start(cp._stop)
