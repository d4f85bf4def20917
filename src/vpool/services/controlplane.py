"""The control plane: the store, the host connections, the task runner and the services, wired once.

The API and the tests build one of these; nothing else holds global state.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

from vpool.config import Settings
from vpool.security.tokens import ensure_admin_token
from vpool.services.alarms import AlarmService
from vpool.services.backups import BackupService
from vpool.services.busy import Busy
from vpool.services.clones import CloneService
from vpool.services.connections import Connections
from vpool.services.collector import TelemetryService
from vpool.services.collector_process import CollectorProcess
from vpool.services.consoles import ConsoleService
from vpool.services.drills import DrillService
from vpool.services.flavors import FlavorService
from vpool.services.groups import GroupService
from vpool.services.hosts import HostService
from vpool.services.images import ImageService
from vpool.services.lease import Lease
from vpool.services.drs import DrsService
from vpool.services.maintenance import MaintenanceService
from vpool.services.migration import MigrationService
from vpool.services.plans import PlanService
from vpool.services.reconciler import Reconciler
from vpool.services.repository import default_repository
from vpool.services.resize import ResizeService
from vpool.services.schedules import ScheduleService
from vpool.services.snapshots import SnapshotService
from vpool.services.tasks import TaskRunner
from vpool.services.vms import VMService
from vpool.store.db import Store


class ControlPlane:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.settings.database_url)
        self.lease = Lease(self.store)
        self.runner = TaskRunner(self.store, self.settings.task_workers)
        self.connections = Connections(self.store, self._on_event, self._on_connect,
                                       self.settings.reconnect_interval_s)
        self.reconciler = Reconciler(self.store, self.connections)
        # Events get workers of their own: behind the task queue they would wait for every queued
        # create (minutes, in a burst on real guests) while the store showed stale states.
        self._events = ThreadPoolExecutor(max_workers=4, thread_name_prefix="events")
        self.hosts = HostService(self)
        self.vms = VMService(self)
        self.images = ImageService(self)
        self.flavors = FlavorService(self)
        self.groups = GroupService(self)
        self.plans = PlanService(self)
        self.alarms = AlarmService(self)
        self.telemetry = TelemetryService(self)
        busy = Busy()  # snapshots, backups, clones, resizes and migrations of one VM never run at once
        self.snapshots = SnapshotService(self, busy)
        self.backups = BackupService(self, busy, default_repository(self.settings.data_dir))
        self.clones = CloneService(self, busy)
        self.resizes = ResizeService(self, busy)
        self.consoles = ConsoleService(self)
        self.schedules = ScheduleService(self)
        self.drills = DrillService(self)
        self.migrations = MigrationService(self, busy)
        self.maintenance = MaintenanceService(self, self.migrations)  # evacuates by migrating
        self.drs = DrsService(self)  # applies balance plans by itself when an operator turns it on
        self.admin_token = ensure_admin_token(self.store, self.settings.token_file)
        self._stop = threading.Event()

    def start(self) -> None:
        """Raises Conflict, having changed nothing, while another control plane runs on the database."""
        took_over = self.lease.acquire()
        if took_over:
            print(f"vpool: {took_over}", flush=True)
        self.runner.recover()
        self.backups.recover()
        self.connections.check_all()
        self.migrations.recover()  # bookings a dead process left: find each VM, end the booking
        self.connections.start()
        threading.Thread(target=self._sync_loop, name="full-sync", daemon=True).start()
        self.telemetry.start(CollectorProcess(self.settings) if self.settings.telemetry_process else None)
        self.schedules.start(self._stop)
        self.drs.start(self._stop)

    def stop(self) -> None:
        self._stop.set()
        self.telemetry.stop()
        self.alarms.close()
        self.connections.stop()
        self._events.shutdown(wait=False, cancel_futures=True)
        self.runner.shutdown()
        self.lease.release()
        self.store.close()

    def _on_event(self, host_id: int, uuid: str) -> None:
        # Runs on libvirt's event thread: hand the work off so events never wait on the database.
        try:
            self._events.submit(self.reconciler.sync_domain, host_id, uuid)
        except RuntimeError:
            pass  # shutting down: the next start's full sync sees the change

    def _on_connect(self, host_id: int) -> None:
        self.hosts.learn_storage(host_id)
        self.hosts.restart_guest_network(host_id)
        self.vms.cleanup_orphans(host_id)
        self.migrations.sweep_leftovers(host_id)
        self.reconciler.sync_host(host_id)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.settings.sync_interval_s):
            for host_id in list(self.connections.drivers):
                try:
                    self.reconciler.sync_host(host_id)
                except Exception as e:  # one host failing a sync must not stop the others
                    print(f"vpool: sync of host {host_id} failed: {e}")
            try:  # the sync may have found a VM a migration lost track of
                self.migrations.put_back_carried()
                self.migrations.settle_undecided_disks()
            except Exception as e:
                print(f"vpool: settling what migrations that lost track of their VM left failed: {e}")
