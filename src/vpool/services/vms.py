"""VM life cycle: create (placed, linked clone, defined, started), power operations, delete, adopt.

Each operation is a Task. Create books the VM in the store before the task runs, so two
requests never take the same room, and a failure after libvirt defined anything rolls back.
"""

import time
from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from vpool.hypervisor import leases
from vpool.services import provision
from vpool.services.tasks import TaskOrder
from vpool.model.errors import Conflict, HypervisorError, Invalid, NotFound
from vpool.model.names import check_name
from vpool.model.resources import Resources
from vpool.model.states import STOPPED, VMOwnership, VMState
from vpool.placement.report import explanation_dict
from vpool.store.lookup import by_ref
from vpool.store.tables import VM, Flavor, Group, Host, Image

POWER_OPS = {
    "start": ("start", STOPPED),
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
    group: str | None = None
    start: bool = True


class VMService:
    def __init__(self, cp):
        self.cp = cp
        self.in_flight: set[int] = set()  # VMs whose create task runs in this process
        self.disk_claimed: set[int] = set()  # ...and whose disk name was checked free (provision.claim_disk)

    def get(self, s, ref: str) -> VM:
        vm = by_ref(s, VM, ref)
        if vm is None:
            raise NotFound(f"there is no VM {ref!r}")
        return vm

    # --- create -------------------------------------------------------------------------------
    def create(self, req: CreateRequest, requested_by: str = "admin"):
        flavor, size, image, group_id = self._asked(req)
        image_format = image.format if image else None
        image_id = image.id if image else None
        booking = provision.book(
            self.cp, req.name, size.cpus, size.memory_mib, size.disk_gib, image_id, req.host,
            flavor.id if flavor else None, group_id, TaskOrder("vm.create", {
                "cpus": size.cpus, "memory_mib": size.memory_mib, "disk_gib": size.disk_gib, "image": req.image,
                "flavor": req.flavor, "group": req.group, "start": req.start}, requested_by))

        def body(ctx):
            try:
                self._build(ctx, booking, image_format, req.start)
            finally:
                provision.release(self.cp, booking)
            return {"vm": req.name, "host": booking.host}

        return self.cp.runner.start(booking.task, body, on_failure=lambda: self.discard(booking.vm_id))

    def preview(self, req: CreateRequest) -> dict:
        """Where `create` would put this VM now and why, host by host; nothing is booked. Bad
        input is refused as `create` refuses it, so a dry run that passes is a create that would."""
        _, size, _, group_id = self._asked(req)
        request, explanation = provision.preview(self.cp, req.name, size.cpus, size.memory_mib, size.disk_gib,
                                                 req.host, group_id)
        return explanation_dict(request, explanation)

    def _asked(self, req: CreateRequest):
        """The flavor, size, image and group a create asks for, each checked: (flavor, Resources,
        image, group id)."""
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
            group_id = self.cp.groups.get(s, req.group).id if req.group else None
        return flavor, size, image, group_id

    def _build(self, ctx, booking: provision.Booking, image_format: str | None, start: bool) -> None:
        drv = self.cp.connections.driver(booking.host_id)
        backing = None
        if booking.image_id is not None:
            ctx.progress(10, f"copying the image to {booking.host} (first use there)")
            backing = self.cp.images.ensure_copy(booking.image_id, booking.host_id).disk_path
        ctx.check_cancel()
        ctx.progress(40, "creating the disk (a linked clone of the image)")
        disk = drv.create_disk(booking.storage_pool, provision.claim_disk(self.cp, booking), booking.disk_gib,
                               backing, image_format)
        ctx.check_cancel()
        ctx.progress(60, f"defining the VM on {booking.host}")
        uuid = provision.define(self.cp, booking, disk)
        ctx.check_cancel()
        if start:
            ctx.progress(80, "starting")
            drv.start(uuid)
        provision.settle(self.cp, booking)

    def discard(self, vm_id: int) -> None:
        """Undo a create that did not finish, or delete: the domain, its disk and the booking all go."""
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            if vm is None:
                return
            uuid, disk, host_id, name, pool = vm.uuid, vm.disk_path, vm.host_id, vm.name, vm.host.storage_pool
            created = vm.state != VMState.creating
        drv = self.cp.connections.driver(host_id)
        if uuid and drv.has_domain(uuid):
            drv.undefine(uuid)
        if disk is None and vm_id in self.disk_claimed:  # made, not yet recorded; the name was free before
            disk = drv.volume_path(pool, f"vm-{name}.qcow2")
        overlays = drv.volume_paths(pool, prefix=f"vm-{name}@") if disk and created else []  # a finished VM's
        for path in [disk, *overlays] if disk else []:
            drv.delete_volume(path)
        self.disk_claimed.discard(vm_id)
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
    def managed(self, ref: str) -> tuple[int, str, str, int]:
        """(id, name, uuid, host id) of a VM vpool manages and has finished creating, else 409 saying why."""
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
        vm_id, name, uuid, host_id = self.managed(ref)
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
        vm_id, name, uuid, host_id = self.managed(ref)
        state = self.cp.connections.driver(host_id).state(uuid)
        if state in STOPPED:
            raise Conflict(f"VM {name} is already {state}")

        def body(ctx):
            drv = self.cp.connections.driver(host_id)
            how, note = "forced power-off", None
            asked = not force and drv.state(uuid) == "running"  # ACPI reaches a running guest only
            if asked:
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
                if asked:  # the guest ignored ACPI: worth seeing in the task list
                    how = note = f"powered off after {timeout_s:.0f} s without an ACPI response"
                drv.destroy(uuid)
            return {"state": self._refresh(vm_id, host_id, uuid), "how": how, **({"note": note} if note else {})}

        return self.cp.runner.submit("vm.stop", name, {"force": force, "timeout": timeout_s}, body,
                                     requested_by=requested_by)

    def delete(self, ref: str, requested_by: str = "admin"):
        vm_id, name, uuid, host_id = self.managed(ref)
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
            drv = self.cp.connections.driver(host_id)
            drv.set_managed(uuid)
            # its size as the host has it now, disks included: from here on placement counts it
            info = drv.domain_info(uuid)
            with self.cp.store.session() as s:
                vm = s.get(VM, vm_id)
                vm.ownership = VMOwnership.managed
                if info is not None:
                    vm.cpus, vm.memory_mib, vm.disk_gib = info.cpus, info.memory_mib, info.disk_gib
                s.commit()
            return {"adopted": name}

        return self.cp.runner.submit("vm.adopt", name, {}, body, requested_by=requested_by)

    def listing(self, limit: int, offset: int, state: str | None = None, host: str | None = None,
                ownership: str | None = None, name: str | None = None,
                group: str | None = None) -> tuple[list[dict], int]:
        """Filters combine; `name` matches a prefix. A state or ownership that does not exist is
        refused rather than answered with an empty page that reads as "none"."""
        where = []
        for value, kind, known in ((state, "state", VMState), (ownership, "ownership", VMOwnership)):
            if value and value not in set(known):
                raise Invalid(f"there is no VM {kind} {value!r}; one of {', '.join(known)}")
        if state:
            where.append(VM.state == state)
        if ownership:
            where.append(VM.ownership == ownership)
        if name:
            where.append(VM.name.startswith(name, autoescape=True))
        with self.cp.store.session() as s:
            if host:
                where.append(VM.host_id == self.cp.hosts.get(s, host).id)
            if group:
                where.append(VM.group_id == self.cp.groups.get(s, group).id)
            return list_page(s, where, limit, offset)

    def change(self, ref: str, auto_balance: bool | None) -> dict:
        """Settings of a VM beside its size: whether balance and consolidation plans (and so DRS)
        may move it, as vCenter's per-VM DRS override and Ganeti's auto_balance say."""
        if auto_balance is None:
            raise Invalid("name a setting to change: auto_balance (true or false)")
        with self.cp.store.session() as s:
            self.get(s, ref).auto_balance = auto_balance
            s.commit()
        return self.show(ref)

    def show(self, ref: str) -> dict:
        """One VM, with the address its guest has now and the hot-plug room its definition has."""
        with self.cp.store.session() as s:
            vm = self.get(s, ref)
            return describe(vm, self.address(vm)) | {"hotplug": self.room(vm)}

    def _driver(self, vm: VM):
        """The driver of the VM's host if it is connected; None too for a VM not defined yet (no UUID)."""
        return self.cp.connections.drivers.get(vm.host_id) if vm.host_id and vm.uuid else None

    def address(self, vm: VM) -> str | None:
        drv = self._driver(vm)
        if drv is None or vm.state != VMState.running:
            return None
        addrs = drv.guest_addresses(vm.uuid)
        if addrs:
            return addrs[0]
        return leases.lookup(self.cp.settings.dhcp_lease_files, drv.mac_addresses(vm.uuid))

    def room(self, vm: VM) -> dict | None:
        if (drv := self._driver(vm)) is None:
            return None
        try:
            return asdict(drv.hotplug_room(vm.uuid))
        except HypervisorError:
            return None  # no domain (yet, or any more)


_LIST_COLUMNS = (VM.id, VM.name, VM.uuid, VM.state, VM.ownership, Host.name.label("host"), VM.cpus, VM.memory_mib,
                 VM.disk_gib, Image.name.label("image"), Flavor.name.label("flavor"), Group.name.label("group"),
                 VM.auto_balance, VM.created_at, VM.updated_at)


def list_page(s, where: list, limit: int, offset: int) -> tuple[list[dict], int]:
    """Plain rows, no ORM objects: a page of a ten-thousand-VM pool stays a few milliseconds."""
    total = s.scalar(select(func.count()).select_from(VM).where(*where))
    rows = s.execute(select(*_LIST_COLUMNS).outerjoin(Host, VM.host_id == Host.id)
                     .outerjoin(Image, VM.image_id == Image.id).outerjoin(Flavor, VM.flavor_id == Flavor.id)
                     .outerjoin(Group, VM.group_id == Group.id)
                     .where(*where).order_by(VM.id).limit(limit).offset(offset))
    return [dict(r._mapping) for r in rows], total


def describe(vm: VM, ip: str | None = None) -> dict:
    return {
        "id": vm.id, "name": vm.name, "uuid": vm.uuid, "state": vm.state, "ownership": vm.ownership,
        "host": vm.host.name if vm.host else None, "cpus": vm.cpus, "memory_mib": vm.memory_mib,
        "disk_gib": vm.disk_gib, "disk_path": vm.disk_path,
        "storage": vm.disk_storage, "auto_balance": vm.auto_balance,
        "image": vm.image.name if vm.image else None,
        "flavor": vm.flavor.name if vm.flavor else None, "group": vm.group.name if vm.group else None, "ip": ip,
        "created_at": vm.created_at, "updated_at": vm.updated_at,
    }
