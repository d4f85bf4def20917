"""One live migration over libvirt's peer-to-peer protocol, on connections of its own.

`migrateToURI3` blocks for the whole migration, and a host's shared connection serialises
every call (see libvirt_driver): run there, it would stall the host for everyone and leave no
way to watch or abort. So a migration opens three connections and gives each one thread:
the migrate call on its own, job statistics, abort and the post-copy switch on a second one to
the same source host, and a third to the destination to see where the VM ended up. Each has a
keepalive, so a host that stops answering ends the calls on it within about 20 s.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from vpool.hypervisor.libvirt_driver import KEEPALIVE_COUNT, KEEPALIVE_INTERVAL_S, STATE_NAMES, start_event_loop
from vpool.model.errors import HypervisorError

UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class MigrationSpec:
    uuid: str
    source_uri: str
    destination_uri: str
    bandwidth_mib_s: int | None = None
    postcopy: bool = True  # allow a later switch to post-copy (the switch itself is the caller's)
    auto_converge: bool = True
    copy_storage_path: str | None = None  # the disk's new path on the destination, copied there


def migrate_flags(spec: MigrationSpec) -> int:
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    if spec.copy_storage_path:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK  # the whole chain, flattened into the new disk
    else:
        # The disk is the same file on both hosts; libvirt 9.0 cannot tell that a local
        # filesystem is shared between hosts and refuses without this.
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if spec.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if spec.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def migrate_params(spec: MigrationSpec) -> dict:
    """The bandwidth cap holds in both phases: QEMU's post-copy has a limit of its own, unlimited
    unless set, which would let the cap lapse at the switch."""
    if not spec.bandwidth_mib_s:
        return {}
    return {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: spec.bandwidth_mib_s,
            libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: spec.bandwidth_mib_s}


def with_disk_at(xml: str, path: str) -> str:
    """The domain's definition with its first disk moved to `path` (copy-storage migration)."""
    root = ET.fromstring(xml)
    source = root.find("devices/disk[@device='disk']/source")
    if source is None:
        raise HypervisorError("the VM has no disk to copy")
    source.attrib.clear()
    source.set("file", path)
    disk = root.find("devices/disk[@device='disk']")
    for backing in disk.findall("backingStore"):  # the copy is flat: no backing chain
        disk.remove(backing)
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class JobProgress:
    """A running migration job as libvirt reports it; sizes in bytes, times in milliseconds."""

    active: bool
    elapsed_ms: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    iteration: int = 0
    dirty_rate_bps: int = 0
    expected_downtime_ms: int | None = None
    throttle_pct: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0

    @classmethod
    def from_stats(cls, stats: dict) -> JobProgress:
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return cls(active=False)
        return cls(
            active=True, elapsed_ms=stats.get("time_elapsed", 0), memory_total=stats.get("memory_total", 0),
            memory_processed=stats.get("memory_processed", 0), memory_remaining=stats.get("memory_remaining", 0),
            iteration=stats.get("memory_iteration", 0),
            dirty_rate_bps=stats.get("memory_dirty_rate", 0) * stats.get("memory_page_size", 4096),
            expected_downtime_ms=stats.get("downtime"), throttle_pct=stats.get("auto_converge_throttle", 0),
            disk_total=stats.get("disk_total", 0), disk_processed=stats.get("disk_processed", 0),
            disk_remaining=stats.get("disk_remaining", 0))


def _open(uri: str) -> libvirt.virConnect:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise HypervisorError(f"cannot connect to {uri}: {e.get_error_message()}") from e
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError:
        pass  # a driver without an RPC channel (libvirt's test driver) cannot stop answering
    return conn


class LiveMigration:
    """Started by `start`, watched with `progress`, ended by libvirt or by `abort`; `close_when_done` always."""

    def __init__(self, spec: MigrationSpec):
        start_event_loop()  # keepalives and the job-completed event need libvirt's loop
        self.spec = spec
        self.error: str | None = None
        self.completed: dict | None = None  # libvirt's statistics of the finished job
        self._conns: list[libvirt.virConnect] = []
        self._thread: threading.Thread | None = None
        try:
            self._migrate_conn = self._track(_open(spec.source_uri))
            self._control_conn = self._track(_open(spec.source_uri))
            self._dest_conn = self._track(_open(spec.destination_uri))
            self._dom = self._migrate_conn.lookupByUUIDString(spec.uuid)
            self._control = self._control_conn.lookupByUUIDString(spec.uuid)
        except BaseException:
            self.close()
            raise
        self._control_conn.domainEventRegisterAny(
            self._control, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_completed, None)

    def _track(self, conn: libvirt.virConnect) -> libvirt.virConnect:
        self._conns.append(conn)
        return conn

    def _on_completed(self, _conn, _dom, params, _opaque) -> None:
        self.completed = dict(params)

    def start(self, max_downtime_ms: int | None = None, resume: bool = False) -> None:
        """Start the migrate call; with `resume`, restart a broken post-copy's stream instead."""
        params = migrate_params(self.spec)
        if self.spec.copy_storage_path:
            xml = with_disk_at(self._dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), self.spec.copy_storage_path)
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = xml
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = xml
        if max_downtime_ms:
            # Set before the job starts: libvirt applies it to QEMU's migration parameters,
            # which the job reads at its start, so even a sub-second migration honours it.
            self._control.migrateSetMaxDowntime(max_downtime_ms)
        flags = migrate_flags(self.spec) | (libvirt.VIR_MIGRATE_POSTCOPY_RESUME if resume else 0)

        def run() -> None:
            try:
                self._dom.migrateToURI3(self.spec.destination_uri, params, flags)
            except libvirt.libvirtError as e:
                self.error = e.get_error_message()

        self._thread = threading.Thread(target=run, name=f"migrate-{self.spec.uuid[:8]}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """True once the migrate call has returned (succeeded or not)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def progress(self) -> JobProgress | None:
        """None when the source cannot be asked (the VM left it, or it stopped answering)."""
        try:
            return JobProgress.from_stats(self._control.jobStats())
        except libvirt.libvirtError:
            return None

    def abort(self) -> None:
        try:
            self._control.abortJob()
        except libvirt.libvirtError:
            pass  # no job left to abort: it ended meanwhile, which the migrate call reports

    def pause_postcopy(self) -> None:
        """Stop a post-copy stream but keep both halves, paused, to be resumed later: after the
        switch the VM's memory is on both hosts, so a post-copy is never aborted outright."""
        try:
            self._control.abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
        except libvirt.libvirtError:
            pass  # it ended meanwhile, which the migrate call reports

    def source_state(self) -> tuple[int, int]:
        return tuple(self._control.state())

    def start_postcopy(self) -> bool:
        try:
            self._control.migrateStartPostCopy()
            return True
        except libvirt.libvirtError:
            return False

    def final_stats(self) -> dict:
        """The finished job's numbers: from the event when it came, else from the destination
        (which has none after a post-copy migration)."""
        if self.completed is not None:
            return self.completed
        try:
            return self._dest_conn.lookupByUUIDString(self.spec.uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return {}

    def states(self) -> tuple[str, str]:
        """(source, destination) state of the VM: a libvirt state, 'missing' or 'unreachable'."""
        return _state(self._control_conn, self.spec.uuid), _state(self._dest_conn, self.spec.uuid)

    def close_when_done(self) -> None:
        """Closes the connections once the migrate call has returned: closing one with a call in
        flight can crash libvirt 9.0's client. A call stuck in libvirt is waited for on a thread."""
        if self._thread is None or self.wait(0):
            self.close()
            return
        def close_after_the_call():
            self._thread.join()
            self.close()

        threading.Thread(target=close_after_the_call, name=f"migrated-{self.spec.uuid[:8]}", daemon=True).start()

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        self._conns = []


def _state(conn: libvirt.virConnect, uuid: str) -> str:
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as e:
        return "missing" if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN else UNREACHABLE
    try:
        return STATE_NAMES.get(dom.state()[0], "unknown")
    except libvirt.libvirtError as e:
        return "missing" if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN else UNREACHABLE


def resume_postcopy(spec: MigrationSpec, stall_s: float) -> str | None:
    """Restarts a post-copy migration whose stream broke, from where it stopped.

    Once the destination runs the guest, some pages exist only on the source and others only on
    the destination, so QEMU pauses each half (postcopy-paused) instead of failing, and libvirt
    restarts the stream with the same call plus VIR_MIGRATE_POSTCOPY_RESUME. Blocks until the
    migration completes; returns None then, else why not (the destination is out of reach, or
    the source's half is not one a broken post-copy paused).

    The resumed stream is watched as a first one is, from a connection of its own: the resume
    call once waited in libvirt for ever on a stream that moved nothing. One that moves nothing
    for `stall_s` is paused again (both halves kept) and the call given `stall_s` more to end,
    so the caller can try again while its own bound lasts."""
    try:
        lm = LiveMigration(spec)
    except HypervisorError as e:
        return e.detail
    except libvirt.libvirtError as e:
        return e.get_error_message()
    try:
        try:
            if lm.source_state() != (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
                return "the source's half is not paused by a broken post-copy"
        except libvirt.libvirtError as e:
            return e.get_error_message()
        lm.start(resume=True)
        seen, moved_at = None, time.monotonic()
        while not lm.wait(1.0):
            progress = lm.progress()
            mark = progress and (progress.memory_processed, progress.disk_processed)
            if mark != seen:
                seen, moved_at = mark, time.monotonic()
            elif time.monotonic() - moved_at > stall_s:
                lm.pause_postcopy()
                if lm.wait(stall_s):
                    return f"the resumed stream moved nothing for {stall_s:g} s; paused again ({lm.error})"
                return (f"the resumed stream moved nothing for {stall_s:g} s, and libvirt had not ended the call "
                        f"{stall_s:g} s after pausing it")
        return lm.error
    finally:
        lm.close_when_done()


def source_job_abort(uri: str, uuid: str) -> str:
    """After a restart: abort a migration job a dead control plane left running, and say the
    VM's state there. Its own connection, closed at once."""
    try:
        conn = _open(uri)
    except HypervisorError:
        return UNREACHABLE
    try:
        try:
            dom = conn.lookupByUUIDString(uuid)
            if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                dom.abortJob()
        except libvirt.libvirtError:
            pass
        return _state(conn, uuid)
    finally:
        conn.close()
