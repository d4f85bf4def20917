"""Templates and clones.

`vm template VM` seals a shut-off VM's disk, its backing image folded in, into a read-only
base image registered as an Image (the VM itself is left as it was). `vm clone SRC NEW` makes:
- from a VM, a full clone: a standalone copy of its disk (crash-consistent, through a backup
  job, when SRC runs); a linked clone of a VM is refused, because SRC's disk keeps changing
  under anything linked to it: seal a template first and clone that;
- from a template, a linked clone (a thin overlay on the template, the default) or a full one.
A clone may land on another host (--host); its disk is then streamed there over libvirt.
"""

import os
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vpool.hypervisor import protection_xml as px
from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.model.errors import Conflict, Invalid, NotFound
from vpool.model.names import check_name
from vpool.model.states import ACTIVE, VMOwnership, VMState
from vpool.services import provision
from vpool.services.images import inspect_image
from vpool.services.tasks import TaskOrder
from vpool.services.vms import CreateRequest
from vpool.store.backup_tables import Template
from vpool.store.tables import VM, Host, Image


class CloneService:
    def __init__(self, cp, busy):
        self.cp = cp
        self.busy = busy

    # --- templates ----------------------------------------------------------------------------
    def template(self, ref: str, name: str | None = None, requested_by: str = "admin"):
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, ref)
            name = check_name(name or f"tpl-{vm.name}", "image name")
            if s.scalar(select(Image.id).where(Image.name == name)):
                raise Conflict(f"an image named {name!r} already exists; choose another with --name")
            if vm.ownership != VMOwnership.managed or vm.state == VMState.creating:
                raise Conflict(f"VM {vm.name} is not a managed, finished VM")
            source_image = vm.image
            host = s.get(Host, vm.host_id)
            vm_name, uuid, host_id, pool = vm.name, vm.uuid, vm.host_id, host.storage_pool
            size = (vm.cpus, vm.memory_mib, vm.disk_gib)
        drv = self.cp.connections.driver(host_id)
        if source_image is None and (boot := drv.direct_boot(uuid)):
            raise Conflict(f"VM {vm_name} boots kernel {boot.kernel} from its host, not from its disk: a template of "
                           "the disk alone would not boot. Clone the VM instead (vpool vm clone)")
        state = drv.state(uuid)
        if state != "shutoff":
            raise Conflict(f"VM {vm_name} is {state}; stop it first so the template is a consistent, sealed disk "
                           f"(vpool vm stop {vm_name})")

        def body(ctx):
            ops = ProtectionOps(drv)
            ctx.progress(10, "folding the disk and its backing image into one file on the host")
            flat = ops.flat_copy(pool, ops.active_disk(uuid), f"tpl-{name}.qcow2")
            dest_dir = self.cp.settings.images_dir
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / f"{name}.qcow2"
            try:
                ctx.progress(40, "copying it to the control plane")
                with open(dest, "wb") as out:
                    ops.download(flat, out, lambda got, total: ctx.progress(40 + 50 * got // max(total, 1)))
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            finally:
                drv.delete_volume(flat)
            os.chmod(dest, 0o444)  # a base image: linked clones depend on it never changing
            info = inspect_image(dest)
            with self.cp.store.session() as s:
                kernel = source_image is not None and source_image.kind == "kernel"
                image = Image(name=name, kind="kernel" if kernel else "disk", format="qcow2", path=str(dest),
                              size_bytes=info["size"], virtual_size_bytes=info["virtual_size"],
                              kernel_path=source_image.kernel_path if kernel else None,
                              initrd_path=source_image.initrd_path if kernel else None,
                              cmdline=source_image.cmdline if kernel else None)
                s.add(image)
                try:
                    s.flush()
                except IntegrityError:
                    dest.unlink(missing_ok=True)
                    raise Conflict(f"an image named {name!r} was created meanwhile") from None
                s.add(Template(image_id=image.id, source_vm=vm_name, cpus=size[0], memory_mib=size[1],
                               disk_gib=size[2]))
                s.commit()
                return {"template": name, "kind": image.kind, "size_bytes": image.size_bytes, "from": vm_name}

        return self.busy.run(self.cp, vm_name, "sealing a template", "vm.template", {"name": name}, body,
                             requested_by)

    # --- clones -------------------------------------------------------------------------------
    def clone(self, src: str, new: str, mode: str | None = None, host: str | None = None, start: bool = True,
              requested_by: str = "admin"):
        if mode not in (None, "linked", "full"):
            raise Invalid(f"clone mode {mode!r} is not linked or full")
        check_name(new, "VM name")
        with self.cp.store.session() as s:
            provision.check_free_name(s, new)
            vm = s.scalar(select(VM).where(VM.name == src))
            if vm is not None:
                if mode == "linked":
                    raise Conflict(f"{src} is a VM, and its disk keeps changing under anything linked to it. Make a "
                                   f"template first (vpool vm template {src}) and clone the template linked, "
                                   "or make a full clone")
                return self._clone_vm(vm.id, new, host, start, requested_by)
            image = s.scalar(select(Image).where(Image.name == src))
            template = s.scalar(select(Template).where(Template.image_id == image.id)) if image else None
            if template is None:
                raise NotFound(f"there is no VM or template named {src!r}")
            size = (template.cpus, template.memory_mib, template.disk_gib)
        if mode == "full":
            return self._full_from_template(image.id, src, new, size, host, start, requested_by)
        return self.cp.vms.create(CreateRequest(name=new, cpus=size[0], memory_mib=size[1], disk_gib=size[2],
                                                image=src, host=host, start=start), requested_by=requested_by)

    def _clone_vm(self, vm_id: int, new: str, host: str | None, start: bool, requested_by: str):
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            if vm.ownership != VMOwnership.managed or vm.state in (VMState.creating, VMState.missing):
                raise Conflict(f"VM {vm.name} is not a managed VM vpool can read the disk of")
            src_host = s.get(Host, vm.host_id)
            src = (vm.name, vm.uuid, vm.host_id, src_host.storage_pool)
            size = (vm.cpus, vm.memory_mib, vm.disk_gib, vm.image_id)
        src_name, uuid, src_host_id, src_pool = src
        drv = self.cp.connections.driver(src_host_id)
        boot = None if size[3] else drv.direct_boot(uuid)  # an adopted VM's kernel from its host
        release = self.busy.claim(src_name, f"a clone to {new}")
        try:
            booking = provision.book(self.cp, new, size[0], size[1], size[2], size[3], host or src_host.name,
                                     order=TaskOrder("vm.clone", {"from": src_name, "mode": "full"}, requested_by),
                                     boot=boot)
        except BaseException:
            release()
            raise

        def body(ctx):
            try:
                ops = ProtectionOps(self.cp.connections.driver(src_host_id))
                same_host = booking.host_id == src_host_id
                volume = provision.claim_disk(self.cp, booking)
                name = volume if same_host else f"clone-{new}.qcow2"
                if ops.drv.state(uuid) in ACTIVE:
                    ctx.progress(10, f"copying the running disk of {src_name} (a point-in-time backup job)")
                    copy = self._copy_running(ctx, ops, uuid, src_pool, name)
                else:
                    ctx.progress(10, f"copying the disk of {src_name}")
                    copy = ops.flat_copy(src_pool, ops.active_disk(uuid), name)
                release()
                if not same_host:
                    copy = self._move(ctx, ops, copy, booking, volume)
                ctx.progress(80, f"defining {new} on {booking.host}")
                uuid_new = provision.define(self.cp, booking, copy)
                if start:
                    self.cp.connections.driver(booking.host_id).start(uuid_new)
                return {"vm": new, "from": src_name, "mode": "full", "host": booking.host,
                        "state": provision.settle(self.cp, booking)}
            finally:
                release()
                provision.release(self.cp, booking)

        return self.cp.runner.start(booking.task, body, on_failure=lambda: self._undo(booking))

    def _copy_running(self, ctx, ops: ProtectionOps, uuid: str, pool: str, name: str) -> str:
        disks = ops.disks(uuid)
        if len(disks) != 1:
            raise Conflict("vpool clones VMs with one disk")
        target = f"{ops.pool_path(pool)}/{name}"
        ops.begin_backup(uuid, px.backup_xml({next(iter(disks)): target}), None)
        try:
            ops.wait_job(uuid, lambda done, total: ctx.progress(10 + 50 * done // max(total, 1)), ctx.cancelled)
        finally:
            ops.refresh_pool(pool)
        return target

    def _move(self, ctx, ops: ProtectionOps, path: str, booking: provision.Booking, volume: str) -> str:
        """Streams a disk from the source host to the booked one, through the control plane."""
        self.cp.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=self.cp.settings.data_dir, prefix="clone-") as work:
                local = Path(work) / "disk.qcow2"
                ctx.progress(60, f"moving the disk to {booking.host}")
                with open(local, "wb") as out:
                    ops.download(path, out)
                return self.cp.connections.driver(booking.host_id).upload_volume(booking.storage_pool, volume, local)
        finally:
            ops.drv.delete_volume(path)

    def _undo(self, booking: provision.Booking) -> None:
        self.cp.vms.discard(booking.vm_id)

    def _full_from_template(self, image_id: int, src: str, new: str, size, host, start, requested_by):
        booking = provision.book(self.cp, new, size[0], size[1], size[2], image_id, host,
                                 order=TaskOrder("vm.clone", {"from": src, "mode": "full"}, requested_by))

        def body(ctx):
            try:
                ctx.progress(10, f"copying template {src} to {booking.host} (first use there)")
                copy = self.cp.images.ensure_copy(image_id, booking.host_id)
                ctx.progress(40, "making a standalone copy of the template")
                disk = ProtectionOps(self.cp.connections.driver(booking.host_id)).flat_copy(
                    booking.storage_pool, copy.disk_path, provision.claim_disk(self.cp, booking))
                uuid = provision.define(self.cp, booking, disk)
                if start:
                    self.cp.connections.driver(booking.host_id).start(uuid)
                return {"vm": new, "from": src, "mode": "full", "host": booking.host,
                        "state": provision.settle(self.cp, booking)}
            finally:
                provision.release(self.cp, booking)

        return self.cp.runner.start(booking.task, body, on_failure=lambda: self._undo(booking))
