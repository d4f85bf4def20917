"""Backups through libvirt's backup API into a repository; verify, restore, retention.

A full backup copies the whole disk as the guest sees it; an incremental copies what changed
since the previous point's checkpoint (a persistent dirty bitmap in the qcow2). Either way
qemu writes a qcow2 file on the host, vpool streams it over libvirt into the repository,
checksumming as it goes, and only then marks the point valid. When the host is this machine the
file is renamed into the repository instead (read once, to hash it): the stream through
libvirtd was most of a full backup's time. Restoring stacks a chain's files (each incremental
over its parent) and flattens them into one new disk.
"""

import dataclasses
import subprocess
import tempfile
import uuid as uuidlib
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from vpool.hypervisor import protection_xml as px
from vpool.hypervisor.domain_xml import DirectBoot
from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.model.errors import Conflict, Invalid, NotFound
from vpool.model.retention import Point, keep_set
from vpool.model.states import VMOwnership, VMState
from vpool.services import provision
from vpool.services.repository import Repository
from vpool.services.tasks import TaskOrder
from vpool.store.backup_tables import Backup
from vpool.store.tables import Host, Image, utcnow

RESTARTED = "the control plane stopped while this backup ran; it is not a restore point"


def describe(b: Backup) -> dict:
    return {"id": b.id, "vm": b.vm_name, "vm_uuid": b.vm_uuid, "kind": b.kind, "state": b.state, "chain": b.chain,
            "parent": b.parent_id, "point_at": b.point_at, "size_bytes": b.size_bytes, "files": b.files,
            "checkpoint": b.checkpoint, "error": b.error, "task_id": b.task_id, "created_at": b.created_at,
            "finished_at": b.finished_at}


def _qemu_img(*args: str) -> None:
    r = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if r.returncode:
        raise Conflict(f"qemu-img {args[0]} failed while rebuilding the disk: {r.stderr.strip()}")


class BackupService:
    def __init__(self, cp, busy, repo: Repository):
        self.cp = cp
        self.busy = busy
        self.repo = repo

    def recover(self) -> list[int]:
        """Backups that were running when the process died never became restore points."""
        with self.cp.store.session() as s:
            rows = list(s.scalars(select(Backup).where(Backup.state == "running")))
            for b in rows:
                for f in b.files:
                    self.repo.delete(f["key"])
                b.state, b.error, b.finished_at = "failed", RESTARTED, utcnow()
            s.commit()
            return [b.id for b in rows]

    # --- create -------------------------------------------------------------------------------
    def create(self, ref: str, incremental: bool = False, requested_by: str = "admin"):
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            if vm.ownership != VMOwnership.managed:
                raise Conflict(f"VM {vm.name} is not managed by vpool; adopt it first (vpool vm adopt {vm.name})")
            if vm.state in (VMState.creating, VMState.missing):
                raise Conflict(f"VM {vm.name} is {vm.state}; there is nothing to back up")
            host = s.get(Host, vm.host_id)
            spec = {"cpus": vm.cpus, "memory_mib": vm.memory_mib, "disk_gib": vm.disk_gib, "host": host.name,
                    "image": vm.image.name if vm.image else None}
            vm_name, vm_uuid, host_id, pool = vm.name, vm.uuid, vm.host_id, host.storage_pool
        self.cp.connections.driver(host_id)

        def body(ctx):
            boot = None if spec["image"] else self.cp.connections.driver(host_id).direct_boot(vm_uuid)
            return self._backup(ctx, vm_name, vm_uuid, host_id, pool, incremental,
                                {**spec, "boot": dataclasses.asdict(boot) if boot else None})

        return self.busy.run(self.cp, vm_name, "a backup", "backup.create", {"incremental": incremental}, body,
                             requested_by)

    def _backup(self, ctx, vm_name, vm_uuid, host_id, pool, incremental, spec) -> dict:
        ops = ProtectionOps(self.cp.connections.driver(host_id))
        started_here = not ops.is_active(vm_uuid)
        if started_here:
            ctx.progress(2, "starting the VM paused: libvirt 9.0 backs up running VMs only")
            ops.start_paused(vm_uuid)
        try:
            parent, note = self._choose_parent(ops, vm_uuid, incremental)
            with self.cp.store.session() as s:
                row = Backup(vm_name=vm_name, vm_uuid=vm_uuid, kind="incremental" if parent else "full",
                             chain=parent.chain if parent else uuidlib.uuid4().hex, parent_id=parent.id if parent else None,
                             state="running", spec=spec, task_id=ctx.task_id)
                s.add(row)
                s.commit()
                backup_id = row.id
            try:
                return self._copy(ctx, ops, backup_id, vm_name, vm_uuid, pool, parent, note)
            except BaseException as e:
                self._fail(ops, backup_id, vm_uuid, pool, e)
                raise
        finally:
            if started_here:
                ops.drv.destroy(vm_uuid)

    def _choose_parent(self, ops: ProtectionOps, vm_uuid: str, incremental: bool) -> tuple[Backup | None, str]:
        """The newest valid point whose checkpoint libvirt still has; stray checkpoints go."""
        checkpoints = ops.checkpoints(vm_uuid)
        with self.cp.store.session() as s:
            valid = list(s.scalars(select(Backup).where(Backup.vm_uuid == vm_uuid, Backup.state == "valid")
                                   .order_by(Backup.id)))
        referenced = {b.checkpoint for b in valid}
        for name in reversed(checkpoints):
            if name.startswith(px.CHECKPOINT_PREFIX) and name not in referenced:
                ops.delete_checkpoint(vm_uuid, name)  # left by a backup that did not finish, or pruned
        if not incremental:
            return None, ""
        last = valid[-1] if valid else None
        if last is not None and last.checkpoint in checkpoints:
            return last, ""
        why = ("there is no earlier backup" if last is None else
               "the disk has no checkpoint of the last backup (a snapshot revert and a disk grow drop them)")
        return None, f"an incremental backup was asked, but {why}: made a full one"

    def _copy(self, ctx, ops, backup_id, vm_name, vm_uuid, pool, parent, note) -> dict:
        disks = ops.disks(vm_uuid)
        stage_dir = ops.pool_path(pool)
        targets = {d: f"{stage_dir}/bk-{vm_name}-{backup_id}-{d}.qcow2" for d in disks}
        checkpoint = f"{px.CHECKPOINT_PREFIX}bk{backup_id}"
        point_at = utcnow()
        ctx.progress(5, f"{'incremental' if parent else 'full'} backup of {vm_name}: qemu copies the disk")
        ops.begin_backup(vm_uuid, px.backup_xml(targets, parent.checkpoint if parent else None),
                         px.checkpoint_xml(checkpoint, list(disks)))
        with self.cp.store.session() as s:
            s.get(Backup, backup_id).checkpoint = checkpoint
            s.commit()
        ops.wait_job(vm_uuid, lambda done, total: ctx.progress(5 + 45 * done // max(total, 1), "qemu copies the disk"),
                     ctx.cancelled)
        ops.refresh_pool(pool)
        files, total = [], 0
        for disk, path in targets.items():
            ctx.check_cancel()
            key = f"{vm_name}/{parent.chain if parent else self._chain(backup_id)}/{backup_id:06d}-{disk}.qcow2"

            def stored(got: int, size: int, disk: str = disk) -> None:
                ctx.progress(50 + 45 * got // max(size, 1), f"storing {disk} in the repository")

            local = ops.local_file(path)
            if local:
                written = self.repo.adopt(key, local, stored)
            else:
                with self.repo.writer(key) as (sink, written):
                    ops.download(path, sink, stored)
            files.append({"disk": disk, "key": key, "size": written.size, "sha256": written.sha256})
            total += written.size
            with self.cp.store.session() as s:  # recorded at once, so a failure later cleans it up
                s.get(Backup, backup_id).files = list(files)
                s.commit()
            if local:
                ops.refresh_pool(pool)  # the staged file moved into the repository
            else:
                ops.drv.delete_volume(path)
        with self.cp.store.session() as s:
            row = s.get(Backup, backup_id)
            row.state, row.point_at, row.size_bytes, row.finished_at = "valid", point_at, total, utcnow()
            s.commit()
            result = {"backup": backup_id, "vm": vm_name, "kind": row.kind, "chain": row.chain,
                      "size_bytes": total, "point_at": point_at.isoformat()}
        if note:
            result["note"] = note
        return result

    def _chain(self, backup_id: int) -> str:
        with self.cp.store.session() as s:
            return s.get(Backup, backup_id).chain

    def _fail(self, ops: ProtectionOps, backup_id: int, vm_uuid: str, pool: str, error: BaseException) -> None:
        """Undo everything a backup that did not finish left: job, staging files, checkpoint, objects."""
        ops.abort_job(vm_uuid)
        with self.cp.store.session() as s:
            row = s.get(Backup, backup_id)
            for f in row.files:
                self.repo.delete(f["key"])
            row.files, row.state, row.finished_at = [], "failed", utcnow()
            row.error = getattr(error, "detail", None) or str(error) or type(error).__name__
            checkpoint = row.checkpoint
            s.commit()
        try:
            ops.refresh_pool(pool)
            for disk in ops.disks(vm_uuid):
                staging = ops.drv.volume_path(pool, f"bk-{row.vm_name}-{backup_id}-{disk}.qcow2")
                if staging:
                    ops.drv.delete_volume(staging)
            if checkpoint and checkpoint in ops.checkpoints(vm_uuid):
                ops.delete_checkpoint(vm_uuid, checkpoint)
        except Exception as e:  # the point is marked failed either way; the next backup drops strays
            print(f"vpool: cleaning up after backup {backup_id} failed: {e}")

    # --- list and verify ----------------------------------------------------------------------
    def listing(self, vm: str | None = None) -> list[dict]:
        with self.cp.store.session() as s:
            q = select(Backup).order_by(Backup.id)
            if vm:
                q = q.where(Backup.vm_name == vm)
            return [describe(b) for b in s.scalars(q)]

    def get(self, backup_id: int) -> dict:
        with self.cp.store.session() as s:
            b = s.get(Backup, backup_id)
            if b is None:
                raise NotFound(f"there is no backup {backup_id}")
            return describe(b)

    def verify(self, vm: str | None = None, requested_by: str = "admin"):
        with self.cp.store.session() as s:
            q = select(Backup.id).where(Backup.state.in_(("valid", "corrupt")))
            if vm:
                if not s.scalar(select(Backup.id).where(Backup.vm_name == vm)):
                    raise NotFound(f"there are no backups of VM {vm!r}")
                q = q.where(Backup.vm_name == vm)
            ids = list(s.scalars(q.order_by(Backup.id)))

        def body(ctx):
            bad = []
            for i, backup_id in enumerate(ids):
                ctx.check_cancel()
                ctx.progress(100 * i // max(len(ids), 1), f"reading backup {backup_id}")
                problems = self._check_files(backup_id)
                with self.cp.store.session() as s:
                    row = s.get(Backup, backup_id)
                    row.state = "corrupt" if problems else "valid"
                    row.error = "; ".join(problems) or None
                    s.commit()
                if problems:
                    bad.append({"backup": backup_id, "problems": problems})
            return {"checked": len(ids), "ok": len(ids) - len(bad), "corrupt": bad}

        return self.cp.runner.submit("backup.verify", vm, {}, body, requested_by=requested_by)

    def _check_files(self, backup_id: int) -> list[str]:
        with self.cp.store.session() as s:
            files = s.get(Backup, backup_id).files
        problems = []
        for f in files:
            if not self.repo.exists(f["key"]):
                problems.append(f"{f['key']} is missing from the repository")
            elif self.repo.digest(f["key"]) != f["sha256"]:
                problems.append(f"{f['key']} does not match its checksum")
        return problems

    # --- restore ------------------------------------------------------------------------------
    def chain_at(self, vm_name: str, point: datetime | None = None) -> list[Backup]:
        """The newest restorable point at or before `point`, as its chain, full first."""
        with self.cp.store.session() as s:
            rows = {b.id: b for b in s.scalars(select(Backup).where(Backup.vm_name == vm_name))}
        if not rows:
            raise NotFound(f"there are no backups of VM {vm_name!r}")
        candidates = sorted((b for b in rows.values() if b.state == "valid" and (point is None or b.point_at <= point)),
                            key=lambda b: (b.point_at, b.id), reverse=True)
        for top in candidates:
            chain = [top]
            while chain[-1].parent_id is not None:
                chain.append(rows.get(chain[-1].parent_id))
                if chain[-1] is None or chain[-1].state != "valid":
                    break
            else:
                return list(reversed(chain))
        when = f" at or before {point.isoformat()}" if point else ""
        raise NotFound(f"VM {vm_name} has no restorable backup{when} (a point is restorable when it and every "
                       "point it builds on are valid)")

    def materialize(self, ctx, chain: list[Backup], work: Path) -> Path:
        """Fetches and checks a chain's files, stacks them and flattens them into one qcow2."""
        previous = None
        for i, b in enumerate(chain):
            ctx.check_cancel()
            ctx.progress(5 + 40 * i // len(chain), f"fetching backup {b.id} ({b.kind}) from the repository")
            f = b.files[0]  # vpool VMs have one disk
            local = work / f"{b.id}.qcow2"
            if self.repo.fetch(f["key"], local) != f["sha256"]:
                with self.cp.store.session() as s:
                    row = s.get(Backup, b.id)
                    row.state, row.error = "corrupt", f"{f['key']} does not match its checksum"
                    s.commit()
                raise Conflict(f"backup {b.id} of {b.vm_name} is corrupt ({f['key']} does not match its checksum); "
                               "it is now marked corrupt. Restore an earlier --point")
            if previous is not None:
                _qemu_img("rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(previous), str(local))
            previous = local
        ctx.progress(50, "flattening the chain into one disk")
        flat = work / "restored.qcow2"
        _qemu_img("convert", "-f", "qcow2", "-O", "qcow2", "-o", "compat=1.1", str(previous), str(flat))
        return flat

    def restore(self, vm: str, as_name: str | None = None, host: str | None = None, point: datetime | None = None,
                start: bool = True, requested_by: str = "admin"):
        name = as_name or vm
        chain = self.chain_at(vm, point)
        spec = chain[-1].spec
        with self.cp.store.session() as s:
            provision.check_free_name(s, name, "" if as_name else
                                      f"; restore under another name with --as NEW, or delete {name} first")
        image_id, boot = self.boots_from(spec)
        booking = provision.book(self.cp, name, spec["cpus"], spec["memory_mib"], spec["disk_gib"], image_id,
                                 host or self._home(spec), order=TaskOrder("backup.restore", {
                                     "from": vm, "point": point.isoformat() if point else None,
                                     "backup": chain[-1].id}, requested_by), boot=boot)

        def body(ctx):
            try:
                self.restore_into(ctx, chain, booking, start=start)
            finally:
                provision.release(self.cp, booking)
            return {"vm": name, "host": booking.host, "backup": chain[-1].id,
                    "point_at": chain[-1].point_at.isoformat(), "chain": [b.id for b in chain]}

        return self.cp.runner.start(booking.task, body, on_failure=lambda: self.cp.vms.discard(booking.vm_id))

    def boots_from(self, spec: dict) -> tuple[int | None, DirectBoot | None]:
        """The image a restored VM boots from (kernel and initrd for kernel-boot images), or the
        kernel its host handed the backed-up VM (one adopted from elsewhere)."""
        if not spec.get("image"):
            return None, DirectBoot(**spec["boot"]) if spec.get("boot") else None
        with self.cp.store.session() as s:
            image = s.scalar(select(Image).where(Image.name == spec["image"]))
        if image is None:
            raise Conflict(f"the backed-up VM booted from image {spec['image']}, which no longer exists")
        return image.id, None

    def _home(self, spec: dict) -> str | None:
        """The host the VM was backed up on, when it is still in the pool and up; else placement picks."""
        with self.cp.store.session() as s:
            h = s.scalar(select(Host).where(Host.name == spec.get("host")))
            return h.name if h is not None and h.id in self.cp.connections.drivers and not h.maintenance else None

    def restore_into(self, ctx, chain: list[Backup], booking: provision.Booking, start: bool = True,
                     network: str | None = None, before_start=None) -> str:
        """Builds the booked VM's disk from the chain and defines it; returns the domain UUID."""
        volume = provision.claim_disk(self.cp, booking)
        self.cp.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cp.settings.data_dir, prefix="restore-") as work:
            flat = self.materialize(ctx, chain, Path(work))
            ctx.progress(70, f"copying the disk to {booking.host}")
            drv = self.cp.connections.driver(booking.host_id)
            disk = drv.upload_volume(booking.storage_pool, volume, flat)
        ctx.progress(90, f"defining {booking.name}")
        uuid = provision.define(self.cp, booking, disk, network)
        if before_start:
            before_start(uuid)
        elif start:
            drv.start(uuid)
        provision.settle(self.cp, booking)
        return uuid

    # --- retention ----------------------------------------------------------------------------
    def prune(self, vm: str, keep_daily: int, keep_weekly: int, requested_by: str = "admin"):
        keep_set([], keep_daily, keep_weekly)  # refuses a policy that keeps nothing before anything is queued
        with self.cp.store.session() as s:
            if not s.scalar(select(Backup.id).where(Backup.vm_name == vm)):
                raise NotFound(f"there are no backups of VM {vm!r}")

        def body(ctx):
            return self.apply_retention(vm, keep_daily, keep_weekly)

        return self.cp.runner.submit("backup.prune", vm, {"keep_daily": keep_daily, "keep_weekly": keep_weekly},
                                     body, requested_by=requested_by)

    def apply_retention(self, vm: str, keep_daily: int, keep_weekly: int) -> dict:
        with self.cp.store.session() as s:
            rows = list(s.scalars(select(Backup).where(Backup.vm_name == vm, Backup.state != "running")))
            points = [Point(b.id, b.point_at, b.parent_id) for b in rows if b.state == "valid"]
            keep = keep_set(points, keep_daily, keep_weekly)
            gone = sorted((b for b in rows if b.id not in keep), key=lambda b: b.id, reverse=True)
            for b in gone:
                for f in b.files:
                    self.repo.delete(f["key"])
                s.delete(b)
                s.flush()
            s.commit()
        return {"vm": vm, "kept": sorted(keep), "deleted": sorted(b.id for b in gone)}


def parse_point(text: str) -> datetime:
    """'2026-11-26T02:00', '2026-11-26 02:00:00+01:00'; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"--point {text!r} is not a time; write it like 2026-11-26T02:00 (UTC) "
                      "or with a zone, 2026-11-26T02:00+01:00") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
