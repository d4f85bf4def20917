"""Making a VM out of a disk that already exists (a restore, a clone, a DR drill copy).

Every VM comes to be this way: booked (placed, a row in `creating` that holds the name and the
room), its disk made (VMService.create makes a linked clone of an image; a restore, a clone or a
DR drill brings its own), defined, settled. VMService.discard undoes any of them.
"""

import uuid as uuidlib
from dataclasses import dataclass, replace

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from vpool.hypervisor.domain_xml import DirectBoot, DomainSpec, domain_xml
from vpool.hypervisor.libvirt_driver import local_console_log_dir
from vpool.model.errors import Conflict, HypervisorError, NoCapacity
from vpool.model.names import check_name
from vpool.model.states import VMState
from vpool.placement import ClusterState, Explanation, PlacementRequest, explain, place
from vpool.services.measured_load import host_busy
from vpool.services.pool import cluster_state, group_constraints
from vpool.services.tasks import TaskOrder, queued
from vpool.store.tables import VM, Group, Host, Image, Task


NO_KERNEL = "vpool:no-kernel"  # keeps a VM that boots a host's kernel off hosts without that file


@dataclass(frozen=True)
class Booking:
    """The booked row and its host as placement left them: the steps after it (disk, define,
    settle) read them from here, not from the store again."""
    vm_id: int
    host_id: int
    host: str
    name: str
    uuid: str
    cpus: int
    memory_mib: int
    disk_gib: int
    image_id: int | None
    storage_pool: str
    virt_type: str
    network: str
    arch: str
    task: Task | None = None  # queued with the booking, when it was given an order
    boot: DirectBoot | None = None  # the kernel a copy of a VM boots that had it from its host


def check_free_name(s, name: str, hint: str = "") -> None:
    check_name(name, "VM name")
    if s.scalar(select(VM.id).where(VM.name == name)):
        raise Conflict(f"a VM named {name!r} already exists{hint}")


def book(cp, name: str, cpus: int, memory_mib: int, disk_gib: int, image_id: int | None,
         host: str | None, flavor_id: int | None = None, group_id: int | None = None,
         order: TaskOrder | None = None, boot: DirectBoot | None = None) -> Booking:
    """Places the VM and books it, and queues the task that `order` asks for (its params get the
    chosen host) in the same commit; the caller must discard the VM if what follows fails."""
    lacking = _lacking_kernel(cp, boot) if boot is not None else set()
    busy = host_busy(cp) if host is None else {}  # a VM given its host is only checked for room there
    with cp.store.session() as s, cp.store.placement_lock(s):
        state, request = _question(cp, s, name, cpus, memory_mib, disk_gib, host, group_id, busy, lacking, boot)
        decision = place(state, request)
        if not decision.ok:
            raise NoCapacity(decision.message + (f" (hosts without its kernel {boot.kernel} do not count: "
                                                 f"{', '.join(sorted(lacking))})" if lacking else ""))
        h = s.scalar(select(Host).where(Host.name == decision.host))
        vm = VM(name=name, uuid=str(uuidlib.uuid4()), host_id=h.id, state=VMState.creating, cpus=cpus,
                memory_mib=memory_mib, disk_gib=disk_gib, image_id=image_id, flavor_id=flavor_id, group_id=group_id)
        s.add(vm)
        task = queued(replace(order, params={**order.params, "host": h.name}), name) if order else None
        if task is not None:
            s.add(task)
        try:
            s.commit()
        except IntegrityError:
            raise Conflict(f"a VM named {name!r} already exists") from None
        booking = Booking(vm.id, h.id, h.name, name, vm.uuid, cpus, memory_mib, disk_gib, image_id, h.storage_pool,
                          h.virt_type, h.network, h.arch or "x86_64", task, boot)
    cp.vms.in_flight.add(booking.vm_id)  # so a host reconnect does not take it for an orphan
    return booking


def preview(cp, name: str, cpus: int, memory_mib: int, disk_gib: int, host: str | None,
            group_id: int | None = None) -> tuple[PlacementRequest, Explanation]:
    """Where `book` would put this VM now, and why (`vpool vm create --dry-run`): the same
    question asked of the same pool, with nothing booked."""
    busy = host_busy(cp) if host is None else {}
    with cp.store.session() as s:
        state, request = _question(cp, s, name, cpus, memory_mib, disk_gib, host, group_id, busy, set(), None)
    return request, explain(state, request)


def _question(cp, s, name, cpus, memory_mib, disk_gib, host, group_id, busy, lacking, boot):
    """The pool as placement sees it and the request for this VM, the name checked free: what
    `book` decides on and `preview` explains."""
    check_free_name(s, name)
    pinned = cp.hosts.get(s, host).name if host else None
    if pinned in lacking:
        raise Conflict(f"{name} boots kernel {boot.kernel}, which its host handed it, and {pinned} has no such "
                       "file; put it on a host that has it (leave the host out and vpool picks one)")
    group = s.get(Group, group_id) if group_id else None
    state = cluster_state(s, per_vm=False, cpu_busy=busy)
    if lacking:
        state = ClusterState.from_records([replace(h, tags=h.tags | {NO_KERNEL}) if h.name in lacking else h
                                           for h in state.hosts], state.vms, state.group_policies)
    return state, PlacementRequest(name=name, cpus=cpus, memory_mib=memory_mib, disk_gib=disk_gib, host=pinned,
                                   forbid_tags=frozenset({NO_KERNEL}), **group_constraints(group))


def _lacking_kernel(cp, boot: DirectBoot) -> set[str]:
    """The hosts that cannot boot `boot`: its kernel or initrd is a volume in some host's storage
    but not in theirs. A file in no storage pool (a host's /boot) cannot be looked for through
    libvirt, so then no host is ruled out and the start says what is missing."""
    files = [f for f in (boot.kernel, boot.initrd) if f]
    with cp.store.session() as s:
        names = dict(s.execute(select(Host.id, Host.name)).all())
    seen = {names[hid]: _has_all(drv, files) for hid, drv in list(cp.connections.drivers.items()) if hid in names}
    return {host for host, has in seen.items() if not has} if any(seen.values()) else set()


def _has_all(drv, files: list[str]) -> bool:
    try:
        return all(drv.volume_exists(f) for f in files)
    except HypervisorError:
        return False  # a host that cannot say is no place to boot it


def release(cp, booking: Booking) -> None:
    cp.vms.in_flight.discard(booking.vm_id)


def claim_disk(cp, booking: Booking) -> str:
    """The new VM's disk volume name, checked free on the host before anything is written there.
    A file of that name already there (a leftover, or another system's VM's) is refused, never
    overwritten; and only a VM whose name was checked free may have its disk found by name when
    its create is undone (VMService.discard): the undo never removes what was there before."""
    drv = cp.connections.driver(booking.host_id)
    name = f"vm-{booking.name}.qcow2"
    # on shared storage: another host's new file counts, and one another host deleted does not
    if (taken := drv.volume_path(booking.storage_pool, name)) is not None:
        raise Conflict(
            f"{taken} is already in storage pool {booking.storage_pool} on {booking.host}, and no VM "
            f"vpool manages owns it (a leftover, or another system's): vpool neither overwrites nor removes it. "
            f"Use another VM name, or delete the file if nothing needs it (virsh -c {drv.uri} vol-delete {taken})")
    cp.vms.disk_claimed.add(booking.vm_id)
    return name


def define(cp, booking: Booking, disk_path: str, network: str | None = None) -> str:
    """Defines the domain on the booked host with the given disk; returns its UUID.

    network overrides the host's guest network (a DR drill keeps its VMs on an isolated one)."""
    with cp.store.session() as s:
        s.execute(update(VM).where(VM.id == booking.vm_id).values(disk_path=disk_path))
        image = s.get(Image, booking.image_id) if booking.image_id else None
        s.commit()
    drv = cp.connections.driver(booking.host_id)
    boot = booking.boot
    if boot is None and image is not None and image.kind == "kernel":
        copy = cp.images.ensure_copy(image.id, booking.host_id)
        boot = DirectBoot(copy.kernel_path, copy.initrd_path,
                          image.cmdline.replace("{name}", booking.name) if image.cmdline else None)
    console = None if drv.is_test else f"{local_console_log_dir()}/vpool-{booking.name}.console.log"
    drv.define(domain_xml(DomainSpec(
        name=booking.name, uuid=booking.uuid, cpus=booking.cpus, memory_mib=booking.memory_mib,
        virt_type=booking.virt_type, disk_path=disk_path, network=network or booking.network,
        kernel=boot and boot.kernel, initrd=boot and boot.initrd, cmdline=boot and boot.cmdline,
        console_log=console, arch=booking.arch)))
    return booking.uuid


def settle(cp, booking: Booking) -> str:
    """Records the domain's state, which also ends `creating`."""
    state = cp.connections.driver(booking.host_id).state(booking.uuid)
    with cp.store.session() as s:
        s.execute(update(VM).where(VM.id == booking.vm_id).values(state=state))
        s.commit()
    cp.vms.disk_claimed.discard(booking.vm_id)  # its disk is on record since define
    return state
