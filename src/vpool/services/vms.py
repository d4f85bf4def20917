"""VM life cycle: create (placed, linked clone, defined, started), power operations, delete, adopt.

Each operation is a Task. Create books the VM in the store before the task runs, so two
requests never take the same room, and a failure after libvirt defined anything rolls back.
"""

import time
import uuid as uuidlib
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from vpool.hypervisor import leases
from vpool.hypervisor.domain_xml import DomainSpec, domain_xml
from vpool.hypervisor.libvirt_driver import local_console_log_dir
from vpool.model.errors import Conflict, Invalid, NoCapacity, NotFound
from vpool.model.names import check_name
from vpool.model.resources import Resources
from vpool.model.states import VMOwnership, VMState
from vpool.placement import PlacementRequest, place
from vpool.services.pool import cluster_state, placement_lock
from vpool.store.tables import VM, Flavor, Host, Image

POWER_OPS = {
    "start": ("start", ("shutoff", "crashed")),
    "reboot": ("reboot", ("running",)),
    "suspend": ("suspend", ("running",)),
    "resume": ("resume", ("paused",)),
}


@dataclass
class CreateRequest:
    name: str
    cpus: int | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None
    flavor: str | None = None
    image: str | None = None
    host: str | None = None
    start: bool = True


class VMService:
    def __init__(self, cp):
        self.cp = cp
        self.in_flight: set[int] = set()  # VMs whose create task runs in this process

    def get(self, s, ref: str) -> VM:
        vm = s.scalar(select(VM).where(VM.name == ref))
        if vm is None and ref.isdigit():
            vm = s.get(VM, int(ref))
        if vm is None:
            raise NotFound(f"there is no VM {ref!r}")
        return vm

    # --- create -------------------------------------------------------------------------------
    def create(self, req: CreateRequest, requested_by: str = "admin"):
        check_name(req.name, "VM name")
        with self.cp.store.session() as s:
            flavor = None
            if req.flavor:
                flavor = s.scalar(select(Flavor).where(Flavor.name == req.flavor))
                if flavor is None:
                    raise NotFound(f"there is no flavor {req.flavor!r}")
            size = Resources(
                req.cpus if req.cpus is not None else (flavor.cpus if flavor else 1),
                req.memory_mib if req.memory_mib is not None else (flavor.memory_mib if flavor else 512),
                req.disk_gib if req.disk_gib is not None else (flavor.disk_gib if flavor else 1),
            ).check()
            image = self.cp.images.get(s, req.image) if req.image else None
            if image is not None and size.disk_gib * 2**30 < image.virtual_size_bytes:
                need = -(-image.virtual_size_bytes // 2**30)
                raise Invalid(f"image {image.name} needs a disk of at least {need} GiB, asked {size.disk_gib} GiB")
            pinned = self.cp.hosts.get(s, req.host) if req.host else None
            if s.scalar(select(VM.id).where(VM.name == req.name)):
                raise Conflict(f"a VM named {req.name!r} already exists")
        with placement_lock, self.cp.store.session() as s:
            decision = place(cluster_state(s, per_vm=False), PlacementRequest(
                name=req.name, cpus=size.cpus, memory_mib=size.memory_mib, disk_gib=size.disk_gib,
                host=pinned.name if pinned else None))
            if not decision.ok:
                raise NoCapacity(decision.message)
            host = s.scalar(select(Host).where(Host.name == decision.host))
            vm = VM(name=req.name, uuid=str(uuidlib.uuid4()), host_id=host.id, state=VMState.creating,
                    cpus=size.cpus, memory_mib=size.memory_mib, disk_gib=size.disk_gib,
                    image_id=image.id if image else None, flavor_id=flavor.id if flavor else None)
            s.add(vm)
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"a VM named {req.name!r} already exists") from None
            vm_id, host_id = vm.id, host.id
        self.in_flight.add(vm_id)
        task = self.cp.runner.new("vm.create", req.name, {
            "cpus": size.cpus, "memory_mib": size.memory_mib, "disk_gib": size.disk_gib,
            "image": req.image, "flavor": req.flavor, "host": decision.host, "start": req.start},
            requested_by)

        def body(ctx):
            self._build(ctx, vm_id, host_id, req.start)
            return {"vm": req.name, "host": decision.host}

        def rollback():
            self.discard(vm_id)

        def body_then_release(ctx):
            try:
                return body(ctx)
            finally:
                self.in_flight.discard(vm_id)

        return self.cp.runner.start(task, body_then_release, on_failure=rollback)

    def _build(self, ctx, vm_id: int, host_id: int, start: bool) -> None:
        with self.cp.store.session() as s:
            vm, host = s.get(VM, vm_id), s.get(Host, host_id)
            image = s.get(Image, vm.image_id) if vm.image_id else None
        drv = self.cp.connections.driver(host_id)
        kernel = initrd = cmdline = backing = None
        if image is not None:
            ctx.progress(10, f"copying image {image.name} to {host.name} (first use there)")
            copy = self.cp.images.ensure_copy(image.id, host_id)
            backing, kernel, initrd = copy.disk_path, copy.kernel_path, copy.initrd_path
            if image.cmdline:
                cmdline = image.cmdline.replace("{name}", vm.name)
        ctx.check_cancel()
        ctx.progress(40, "creating the disk (a linked clone of the image)")
        vol = f"vm-{vm.name}.qcow2"
        # Not stored until the end: if the process dies first, discard() finds the disk by its name.
        disk = drv.create_disk(host.storage_pool, vol, vm.disk_gib, backing, image.format if image else None)
        ctx.check_cancel()
        ctx.progress(60, f"defining the VM on {host.name}")
        console = None if drv.is_test else f"{local_console_log_dir()}/vpool-{vm.name}.console.log"
        drv.define(domain_xml(DomainSpec(
            name=vm.name, uuid=vm.uuid, cpus=vm.cpus, memory_mib=vm.memory_mib, virt_type=host.virt_type,
            disk_path=disk, network=host.network, kernel=kernel, initrd=initrd, cmdline=cmdline,
            console_log=console, arch=host.arch or "x86_64")))
        ctx.check_cancel()
        if start:
            ctx.progress(80, "starting")
            drv.start(vm.uuid)
        with self.cp.store.session() as s:
            s.execute(update(VM).where(VM.id == vm_id).values(state=drv.state(vm.uuid), disk_path=disk))
            s.commit()

    def discard(self, vm_id: int) -> None:
        """Undo a create that did not finish, or delete: the domain, its disk and the booking all go."""
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            if vm is None:
                return
            uuid, disk, host_id, name, pool = vm.uuid, vm.disk_path, vm.host_id, vm.name, vm.host.storage_pool
        drv = self.cp.connections.driver(host_id)
        if uuid and drv.has_domain(uuid):
            drv.undefine(uuid)
        disk = disk or drv.volume_path(pool, f"vm-{name}.qcow2")
        if disk:
            drv.delete_volume(disk)
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            if vm is not None:
                s.delete(vm)
                s.commit()

    def cleanup_orphans(self, host_id: int) -> list[str]:
        """VMs left in 'creating' by a process that died: no task will finish them, so undo them."""
        with self.cp.store.session() as s:
            orphans = [(v.id, v.name) for v in s.scalars(select(VM).where(
                VM.host_id == host_id, VM.state == VMState.creating)) if v.id not in self.in_flight]
        for vm_id, _name in orphans:
            self.discard(vm_id)
        return [n for _i, n in orphans]

    # --- power and delete -----------------------------------------------------------------------
    def _managed(self, ref: str) -> tuple[int, str, str, int]:
        with self.cp.store.session() as s:
            vm = self.get(s, ref)
            if vm.ownership != VMOwnership.managed:
                raise Conflict(f"VM {vm.name} is not managed by vpool; adopt it first (vpool vm adopt {vm.name})")
            if vm.state == VMState.creating:
                raise Conflict(f"VM {vm.name} is still being created")
            return vm.id, vm.name, vm.uuid, vm.host_id

    def _refresh(self, vm_id: int, host_id: int, uuid: str) -> str:
        state = self.cp.connections.driver(host_id).state(uuid)
        with self.cp.store.session() as s:
            s.get(VM, vm_id).state = state
            s.commit()
        return state

    def power(self, ref: str, op: str, requested_by: str = "admin"):
        method, allowed = POWER_OPS[op]
        vm_id, name, uuid, host_id = self._managed(ref)
        state = self.cp.connections.driver(host_id).state(uuid)
        if state not in allowed:
            raise Conflict(f"cannot {op} VM {name}: it is {state}")

        def body(ctx):
            drv = self.cp.connections.driver(host_id)
            ctx.progress(30, f"{op} {name}")
            getattr(drv, method)(uuid)
            return {"state": self._refresh(vm_id, host_id, uuid)}

        return self.cp.runner.submit(f"vm.{op}", name, {}, body, requested_by=requested_by)

    def stop(self, ref: str, force: bool = False, timeout_s: float = 60.0, requested_by: str = "admin"):
        if timeout_s < 0 or timeout_s > 3600:
            raise Invalid("timeout must be between 0 and 3600 seconds")
        vm_id, name, uuid, host_id = self._managed(ref)
        state = self.cp.connections.driver(host_id).state(uuid)
        if state in ("shutoff", "crashed"):
            raise Conflict(f"VM {name} is already {state}")

        def body(ctx):
            drv = self.cp.connections.driver(host_id)
            how = "forced power-off"
            if not force and drv.state(uuid) == "running":
                ctx.progress(10, f"asking {name} to shut down (ACPI)")
                drv.shutdown(uuid)
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and drv.state(uuid) not in ("shutoff", "missing"):
                    ctx.check_cancel()
                    waited = timeout_s - (deadline - time.monotonic())
                    ctx.progress(10 + int(80 * waited / max(timeout_s, 0.001)), "waiting for the guest to power off")
                    time.sleep(0.25)
                how = "ACPI shutdown"
            if drv.state(uuid) not in ("shutoff", "missing"):
                how = "forced power-off" if force else f"powered off after {timeout_s:.0f} s without an ACPI response"
                drv.destroy(uuid)
            return {"state": self._refresh(vm_id, host_id, uuid), "how": how}

        return self.cp.runner.submit("vm.stop", name, {"force": force, "timeout": timeout_s}, body,
                                     requested_by=requested_by)

    def delete(self, ref: str, requested_by: str = "admin"):
        vm_id, name, uuid, host_id = self._managed(ref)
        self.cp.connections.driver(host_id)  # refuse at once when the host is down

        def body(ctx):
            ctx.progress(20, f"removing {name}")
            self.discard(vm_id)
            return {"deleted": name}

        return self.cp.runner.submit("vm.delete", name, {}, body, requested_by=requested_by)

    def adopt(self, ref: str, requested_by: str = "admin"):
        with self.cp.store.session() as s:
            vm = self.get(s, ref)
            if vm.ownership == VMOwnership.managed:
                raise Conflict(f"VM {vm.name} is already managed by vpool")
            check_name(vm.name, "VM name")
            vm_id, uuid, host_id, name = vm.id, vm.uuid, vm.host_id, vm.name
        self.cp.connections.driver(host_id)

        def body(ctx):
            self.cp.connections.driver(host_id).set_managed(uuid)
            with self.cp.store.session() as s:
                s.get(VM, vm_id).ownership = VMOwnership.managed
                s.commit()
            return {"adopted": name}

        return self.cp.runner.submit("vm.adopt", name, {}, body, requested_by=requested_by)

    def address(self, vm: VM) -> str | None:
        drv = self.cp.connections.drivers.get(vm.host_id) if vm.host_id else None
        if drv is None or vm.state != VMState.running or not vm.uuid:
            return vm.ip
        addrs = drv.guest_addresses(vm.uuid)
        if addrs:
            return addrs[0]
        return leases.lookup(self.cp.settings.dhcp_lease_files, drv.mac_addresses(vm.uuid))


_LIST_COLUMNS = (VM.id, VM.name, VM.uuid, VM.state, VM.ownership, Host.name.label("host"), VM.cpus, VM.memory_mib,
                 VM.disk_gib, Image.name.label("image"), Flavor.name.label("flavor"), VM.ip, VM.created_at,
                 VM.updated_at)


def list_page(s, where: list, limit: int, offset: int) -> tuple[list[dict], int]:
    """Plain rows, no ORM objects: a page of a ten-thousand-VM pool stays a few milliseconds."""
    total = s.scalar(select(func.count()).select_from(VM).where(*where))
    rows = s.execute(select(*_LIST_COLUMNS).outerjoin(Host, VM.host_id == Host.id)
                     .outerjoin(Image, VM.image_id == Image.id).outerjoin(Flavor, VM.flavor_id == Flavor.id)
                     .where(*where).order_by(VM.id).limit(limit).offset(offset))
    return [dict(r._mapping) for r in rows], total


def describe(vm: VM, ip: str | None = None) -> dict:
    return {
        "id": vm.id, "name": vm.name, "uuid": vm.uuid, "state": vm.state, "ownership": vm.ownership,
        "host": vm.host.name if vm.host else None, "cpus": vm.cpus, "memory_mib": vm.memory_mib,
        "disk_gib": vm.disk_gib, "image": vm.image.name if vm.image else None,
        "flavor": vm.flavor.name if vm.flavor else None, "ip": ip if ip is not None else vm.ip,
        "created_at": vm.created_at, "updated_at": vm.updated_at,
    }
