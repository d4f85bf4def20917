"""libvirt's snapshot, checkpoint, backup, volume-copy and console calls for one host.

Kept beside LibvirtDriver rather than in it: data protection is a separate concern, and this
wraps the same connection. Like LibvirtDriver, every call holds the connection's lock (libvirt
9.0 crashes when keepalive closes a connection with two calls in flight); the waits poll with
the lock taken per call, so a long backup does not stall the host's other work.
Methods raise HypervisorError with libvirt's own words.
"""

import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import libvirt

from vpool.hypervisor import domain_xml as dx
from vpool.hypervisor import protection_xml as px
from vpool.hypervisor.libvirt_driver import LibvirtDriver, _err
from vpool.hypervisor.localhost import is_local
from vpool.model.errors import HypervisorError

Progress = Callable[[int, int], None]


class JobFailed(HypervisorError):
    pass


def _locked(fn):
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        with self.drv._lock:
            return fn(self, *args, **kwargs)
    return call


POLLING = ("wait_job", "commit_active", "watch_console")


class ProtectionOps:
    def __init__(self, drv: LibvirtDriver):
        self.drv = drv
        self.conn = drv.conn

    def _dom(self, uuid: str) -> libvirt.virDomain:
        return self.drv._dom(uuid)

    def disks(self, uuid: str) -> dict[str, str]:
        return px.domain_disks(self._dom(uuid).XMLDesc(0))

    def active_disk(self, uuid: str) -> str:
        """The one file the VM writes to now: the top of its chain, an external snapshot's
        overlay while there is one, not the disk it was created with."""
        disks = self.disks(uuid)
        if len(disks) != 1:
            raise HypervisorError(f"vpool copies VMs with one disk, and this one has {len(disks)}")
        return next(iter(disks.values()))

    def is_active(self, uuid: str) -> bool:
        return bool(self._dom(uuid).isActive())

    # --- snapshots ----------------------------------------------------------------------------
    def snapshots(self, uuid: str) -> list[px.SnapshotInfo]:
        dom = self._dom(uuid)
        try:
            out = [px.parse_snapshot(snap.getXMLDesc(0), bool(snap.isCurrent(0))) for snap in dom.listAllSnapshots(0)]
        except libvirt.libvirtError as e:
            raise _err("cannot list snapshots", e) from e
        return sorted(out, key=lambda s: (s.created, s.name))

    def create_snapshot(self, uuid: str, xml: str, disk_only: bool) -> None:
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                 if disk_only else 0)
        try:
            self._dom(uuid).snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as e:
            raise _err("libvirt could not take the snapshot", e) from e

    def revert_snapshot(self, uuid: str, name: str, flags: int) -> None:
        dom = self._dom(uuid)
        try:
            dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), flags)
        except libvirt.libvirtError as e:
            raise _err(f"libvirt could not revert to snapshot {name}", e) from e

    def delete_snapshot(self, uuid: str, name: str, metadata_only: bool = False) -> None:
        dom = self._dom(uuid)
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
        try:
            dom.snapshotLookupByName(name, 0).delete(flags)
        except libvirt.libvirtError as e:
            raise _err(f"libvirt could not delete snapshot {name}", e) from e

    def snapshot_definitions(self, uuid: str) -> list[dict]:
        """Each snapshot's metadata ({name, xml, current}), parents first. libvirt 9.0 refuses to
        migrate a domain with snapshots (``forget_snapshots`` first), though internal ones live
        in the disk image and go wherever it goes; ``redefine`` puts the metadata back."""
        try:
            return [{"name": s.getName(), "xml": s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE),
                     "current": bool(s.isCurrent(0))}
                    for s in self._dom(uuid).listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)]
        except libvirt.libvirtError as e:
            raise _err("cannot read the snapshots", e) from e

    def checkpoint_definitions(self, uuid: str) -> list[dict]:
        """Each backup checkpoint's metadata ({name, xml}), parents first. A migration moves the
        dirty bitmaps with the disk but not this, so without it the next backup is a full one."""
        try:
            return [{"name": c.getName(), "xml": c.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SECURE)}
                    for c in self._dom(uuid).listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)]
        except libvirt.libvirtError as e:
            raise _err("cannot read the checkpoints", e) from e

    def forget_snapshots(self, uuid: str, definitions: list[dict]) -> None:
        """Removes their metadata only, children first so none is re-parented; all or nothing."""
        dom = self._dom(uuid)
        for meta in reversed(definitions):
            try:
                dom.snapshotLookupByName(meta["name"], 0).delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
            except libvirt.libvirtError as e:
                self.redefine(uuid, {"snapshots": definitions})
                raise _err(f"cannot set snapshot {meta['name']} aside", e) from e

    def redefine(self, uuid: str, carried: dict) -> None:
        """Defines again the snapshots and checkpoints of ``carried`` the domain lacks (so it can
        be re-run, and put back on a source that kept some)."""
        try:
            dom = self._dom(uuid)
            have = {s.getName() for s in dom.listAllSnapshots(0)}
            for meta in carried.get("snapshots", ()):
                if meta["name"] not in have:
                    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
                    if meta["current"]:
                        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
                    dom.snapshotCreateXML(meta["xml"], flags)
            have = {c.getName() for c in dom.listAllCheckpoints(0)}
            for meta in carried.get("checkpoints", ()):
                if meta["name"] not in have:
                    dom.checkpointCreateXML(meta["xml"], libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)
        except libvirt.libvirtError as e:
            raise _err("cannot define the snapshots and checkpoints again", e) from e

    def commit_active(self, uuid: str, disk: str, progress: Callable[[str], None] | None = None) -> None:
        """Merge the active overlay of a running VM's disk into its backing file and pivot onto it.

        Shallow: without it libvirt merges into the deepest file of the chain, which for a
        linked clone is the image every other clone of it shares."""
        lock = self.drv._lock
        with lock:
            dom = self._dom(uuid)
        try:
            with lock:
                dom.blockCommit(disk, None, None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
                               | libvirt.VIR_DOMAIN_BLOCK_COMMIT_SHALLOW)
            while True:
                with lock:
                    info = dom.blockJobInfo(disk, 0)
                if info and info["end"] and info["cur"] == info["end"]:
                    break
                if not info:
                    raise HypervisorError(f"the merge of {disk}'s overlay stopped before it finished")
                if progress:
                    progress(f"merging the overlay of {disk}: {info['cur'] * 100 // max(info['end'], 1)}%")
                time.sleep(0.1)
            with lock:
                dom.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
        except libvirt.libvirtError as e:
            raise _err(f"cannot merge the overlay of {disk}", e) from e

    # --- checkpoints and backups --------------------------------------------------------------
    def checkpoints(self, uuid: str) -> list[str]:
        try:
            # Parents before children, so reversed() deletes leaves first.
            return [c.getName() for c in self._dom(uuid).listAllCheckpoints(
                libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)]
        except libvirt.libvirtError as e:
            raise _err("cannot list checkpoints", e) from e

    def delete_checkpoint(self, uuid: str, name: str) -> None:
        """Its dirty bitmap is merged into the parent checkpoint's, so later ones stay usable.
        libvirt 9.0 does this for running (or paused) domains only."""
        try:
            self._dom(uuid).checkpointLookupByName(name, 0).delete(0)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
                raise _err(f"cannot delete checkpoint {name}", e) from e

    def drop_checkpoints(self, uuid: str, announce: Callable[[list[str]], None] = lambda names: None) -> list[str]:
        """Delete every checkpoint, leaves first, and say which: what a disk that goes back in time
        or changes size needs, since each describes the disk as it was. The next backup is a full
        one. A stopped VM is started paused for it and stopped again."""
        names = self.checkpoints(uuid)
        if not names:
            return []
        announce(names)
        started = not self.is_active(uuid)
        if started:
            self.start_paused(uuid)  # libvirt 9.0 deletes checkpoints of running domains only
        try:
            for name in reversed(names):
                self.delete_checkpoint(uuid, name)
        finally:
            if started:
                self.drv.destroy(uuid)
        return names

    def start_paused(self, uuid: str) -> None:
        try:
            self._dom(uuid).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as e:
            raise _err("cannot start the VM paused", e) from e

    def begin_backup(self, uuid: str, backup_xml: str, checkpoint_xml: str | None) -> None:
        try:
            self._dom(uuid).backupBegin(backup_xml, checkpoint_xml, 0)
        except libvirt.libvirtError as e:
            raise _err("libvirt refused to start the backup", e) from e

    def wait_job(self, uuid: str, on_progress: Progress, should_abort: Callable[[], bool]) -> dict:
        """Follows the domain's block job (a backup) to its end; returns libvirt's completed stats."""
        lock = self.drv._lock
        with lock:
            dom = self._dom(uuid)
        try:
            while True:
                with lock:
                    stats = dom.jobStats(0)
                if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                    break
                if should_abort():
                    with lock:
                        dom.abortJob()
                    raise JobFailed("the backup job was aborted")
                on_progress(stats.get("disk_processed", 0), stats.get("disk_total", 0))
                time.sleep(0.05)
            with lock:
                done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError as e:
            raise _err("lost track of the backup job", e) from e
        if not done.get("success", True) or done.get("type") == libvirt.VIR_DOMAIN_JOB_FAILED:
            raise JobFailed(f"the backup job failed: {done.get('errmsg', 'libvirt gave no reason')}")
        return done

    def abort_job(self, uuid: str) -> None:
        try:
            self._dom(uuid).abortJob()
        except libvirt.libvirtError:
            pass  # nothing running is what we wanted

    # --- volumes ------------------------------------------------------------------------------
    def pool_path(self, pool_name: str) -> str:
        try:
            return px.pool_target_path(self.conn.storagePoolLookupByName(pool_name).XMLDesc(0))
        except libvirt.libvirtError as e:
            raise _err(f"cannot read storage pool {pool_name}", e) from e

    def refresh_pool(self, pool_name: str) -> None:
        try:
            self.conn.storagePoolLookupByName(pool_name).refresh(0)
        except libvirt.libvirtError as e:
            raise _err(f"cannot refresh storage pool {pool_name}", e) from e

    def local_file(self, path: str) -> Path | None:
        """The volume as a file this process can open, when the host is this machine (the same
        file: libvirt's allocation matches the one we see), else None and callers stream it."""
        if not is_local(self.drv.uri):
            return None
        try:
            seen = os.stat(path).st_blocks * 512
            allocation = self.conn.storageVolLookupByPath(path).info()[2]
        except (OSError, libvirt.libvirtError):
            return None
        return Path(path) if seen == allocation else None

    def flat_copy(self, pool_name: str, source_path: str, new_name: str) -> str:
        """A standalone qcow2 copy of a disk with its whole backing chain folded in (qemu-img
        convert, run by libvirt on the host, so it works for remote hosts too)."""
        try:
            pool = self.conn.storagePoolLookupByName(pool_name)
            src = self.conn.storageVolLookupByPath(source_path)
            capacity = src.info()[1]
            return pool.createXMLFrom(dx.volume_xml(new_name, capacity, "qcow2"), src, 0).path()
        except libvirt.libvirtError as e:
            raise _err(f"cannot copy {source_path} to {new_name}", e) from e

    def download(self, path: str, out: BinaryIO, progress: Progress | None = None) -> int:
        """Streams a volume's bytes (the file as it is, e.g. qcow2) to out; works over any URI."""
        try:
            vol = self.conn.storageVolLookupByPath(path)
            total = vol.info()[2] or vol.info()[1]
            stream = self.conn.newStream(0)
            vol.download(stream, 0, 0, 0)
            got = 0

            def sink(_stream, data, _opaque):
                nonlocal got
                out.write(data)
                got += len(data)
                if progress:
                    progress(got, total)
                return len(data)

            stream.recvAll(sink, None)
            stream.finish()
            return got
        except libvirt.libvirtError as e:
            raise _err(f"cannot download {path}", e) from e

    # --- networks and consoles (DR drills) ----------------------------------------------------
    def remove_network(self, name: str) -> None:
        try:
            net = self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            return
        try:
            if net.isActive():
                net.destroy()
            net.undefine()
        except libvirt.libvirtError as e:
            raise _err(f"cannot remove network {name}", e) from e

    def watch_console(self, uuid: str, marker: bytes, found: threading.Event) -> Callable[[], None]:
        """Reads the serial console on a thread and sets found once marker appears.

        Returns a function that stops watching. Attach before the guest runs (start it paused)
        so the line cannot pass before anyone listens."""
        try:
            with self.drv._lock:
                stream = self.conn.newStream(0)
                self._dom(uuid).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as e:
            raise _err("cannot open the serial console", e) from e
        stopped = threading.Event()

        def read() -> None:
            seen = b""
            while not stopped.is_set():
                try:
                    data = stream.recv(4096)
                except libvirt.libvirtError:
                    return
                if not data or not isinstance(data, bytes):
                    return
                seen = (seen + data)[-4096:]
                if marker in seen:
                    found.set()
                    return

        threading.Thread(target=read, name=f"console-{uuid[:8]}", daemon=True).start()

        def stop() -> None:
            stopped.set()
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass

        return stop


for _name, _fn in list(vars(ProtectionOps).items()):
    if callable(_fn) and not _name.startswith("__") and _name not in POLLING:
        setattr(ProtectionOps, _name, _locked(_fn))
