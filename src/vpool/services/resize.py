"""Resize: a VM's vCPUs, memory and disk (Proxmox's `qm set` and `qm resize`, vCenter's Edit Settings).

The new size is booked on the VM's host (its storage, for the disk) under the placement lock
before the task runs, as a create is, so no create takes the room meanwhile; if libvirt
refuses, the old size comes back in the store and in the definition.

A running VM grows its vCPUs and memory into the hot-plug room its definition left it
(model.hotplug) and shrinks them only when stopped. A disk grows while the VM runs too (qemu
tells the guest at once), but never shrinks: its end holds the guest's data. It does not grow
while the VM has snapshots (vCenter refuses the same): a revert would bring back the smaller
disk under a guest that has moved into the larger one. Backup checkpoints describe the disk at
its old size, so they go and the next backup is a full one."""

from dataclasses import astuple
from typing import Literal

from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.model.errors import Conflict, Invalid, NoCapacity
from vpool.model.resources import Resources
from vpool.model.hotplug import Room, refusal
from vpool.model.states import ACTIVE, STOPPED
from vpool.placement.place import shortfall
from vpool.placement.request import count
from vpool.services.pool import cluster_state
from vpool.store.tables import VM, Flavor, Host, utcnow


class ResizeService:
    def __init__(self, cp, busy):
        self.cp = cp
        self.busy = busy

    def resize(self, ref: str, cpus: int | None, memory_mib: int | None, disk_gib: int | None = None,
               requested_by: str = "admin"):
        if cpus is None and memory_mib is None and disk_gib is None:
            raise Invalid("say what to change: cpus, memory, disk or several")
        vm_id, name, uuid, host_id = self.cp.vms.managed(ref)
        drv = self.cp.connections.driver(host_id)
        ops = ProtectionOps(drv)
        state = drv.state(uuid)
        if state == "missing":
            raise Conflict(f"VM {name} has no domain on its host any more, so there is nothing to resize")
        live = (cpus is not None or memory_mib is not None) and state not in STOPPED
        if live and state not in ACTIVE:
            raise Conflict(f"VM {name} is {state}: vpool changes the vCPUs and memory of a VM that runs or is "
                           f"stopped (vpool vm stop {name})")
        if not live and (cpus is not None or memory_mib is not None) and (why := drv.resize_refusal(uuid)):
            raise Conflict(f"VM {name} keeps its size: {why}")
        release = self.busy.claim(name, "a resize")  # before looking for snapshots: none is taken meanwhile
        try:
            if disk_gib is not None and (snaps := ops.snapshots(uuid)):
                names, them = ", ".join(s.name for s in snaps), "it" if len(snaps) == 1 else "them"
                raise Conflict(f"VM {name} has {count(len(snaps), 'snapshot')} ({names}), and a revert would bring "
                               f"back the smaller disk; delete {them} before growing its disk")
            old, new, host, flavor_id = self._book(vm_id, cpus, memory_mib, disk_gib,
                                                   drv.hotplug_room(uuid) if live else None)
        except BaseException:
            release()
            raise

        def body(ctx):
            result = {"vm": name, "host": host, "cpus": new.cpus, "memory_mib": new.memory_mib,
                      "disk_gib": new.disk_gib}
            size_changes = (new.cpus, new.memory_mib) != (old.cpus, old.memory_mib)
            notes = []
            try:
                if size_changes:
                    ctx.progress(30, f"{name}: {old.cpus} vCPU / {old.memory_mib} MiB -> "
                                     f"{new.cpus} vCPU / {new.memory_mib} MiB" + (", live" if live else ""))
                    drv.resize(uuid, new.cpus, new.memory_mib, live)
                    if live:  # newer than what a device event's sync read half-way through (reconciler)
                        self._record(vm_id, new)
                        notes.append(f"the guest has {count(new.cpus, 'vCPU')} and {new.memory_mib} MiB now; a guest "
                                     "without udev's hot-plug rules onlines them itself (/sys/devices/system)")
                if new.disk_gib != old.disk_gib:  # last: a grown disk cannot be taken back
                    notes.append(self._grow(ctx, ops, name, uuid, old.disk_gib, new.disk_gib))
            except Exception:
                if live:  # what was plugged stays in the guest: the VM counts at what it now runs with
                    now = drv.size(uuid)
                    kept = Resources(*now, old.disk_gib) if now else old
                    self._record(vm_id, kept, flavor_id if kept == old else None)
                    raise
                self._record(vm_id, old, flavor_id)
                if size_changes:
                    try:
                        drv.resize(uuid, old.cpus, old.memory_mib, live)  # a first call may have taken
                    except Exception:
                        pass
                raise
            if notes:
                result["note"] = "; ".join(notes)  # the task's closing message
            return result

        return self.busy.run(self.cp, name, "a resize", "vm.resize",
                             {"cpus": new.cpus, "memory_mib": new.memory_mib, "disk_gib": new.disk_gib},
                             body, requested_by, release=release)

    @staticmethod
    def _grow(ctx, ops: ProtectionOps, name: str, uuid: str, old_gib: int, new_gib: int) -> str:
        dropped = ops.drop_checkpoints(uuid, lambda names: ctx.progress(
            50, f"dropping {count(len(names), 'backup checkpoint')}: they describe the disk at {old_gib} GiB"))
        running = ops.is_active(uuid)
        ctx.progress(70, f"{name}: disk {old_gib} GiB -> {new_gib} GiB" + (", live" if running else ""))
        ops.drv.grow_disk(uuid, ops.active_disk(uuid), new_gib)
        note = (f"the guest sees {new_gib} GiB {'now' if running else 'when it next boots'}; "
                "its partitions and filesystems grow from inside it (growpart, resize2fs)")
        if dropped:
            note += (f"; dropped {count(len(dropped), 'backup checkpoint')} of the smaller disk, "
                     f"so the next backup of {name} is a full one")
        return note

    def _book(self, vm_id: int, cpus: int | None, memory_mib: int | None, disk_gib: int | None,
              live_room: Room | None) -> tuple[Resources, Resources, str, int | None]:
        with self.cp.store.session() as s, self.cp.store.placement_lock(s):
            vm = s.get(VM, vm_id)
            old = Resources(vm.cpus, vm.memory_mib, vm.disk_gib)
            new = Resources(cpus if cpus is not None else vm.cpus,
                            memory_mib if memory_mib is not None else vm.memory_mib,
                            disk_gib if disk_gib is not None else vm.disk_gib).check()
            if new == old:
                raise Invalid(f"VM {vm.name} already has {old.describe()}")
            if new.disk_gib < old.disk_gib:
                raise Invalid(f"VM {vm.name}'s disk is {old.disk_gib} GiB, and vpool grows disks but never shrinks "
                              "them: the guest's filesystem runs to the disk's end")
            if live_room is not None and (why := refusal(vm.name, (old.cpus, new.cpus),
                                                         (old.memory_mib, new.memory_mib), live_room)):
                raise Conflict(why)
            host = s.get(Host, vm.host_id).name
            state = cluster_state(s, per_vm=False)
            short = [max(n - o, 0) for n, o in zip(astuple(new), astuple(old))] - state.free[state.host_index[host]]
            if (short > 1e-9).any():
                # A host with room helps vCPUs and memory; a disk grows on the storage it is on.
                cure = "migrate it to a host with room first" if (short[:2] > 1e-9).any() else \
                    f"free room on the storage of {host} first"
                raise NoCapacity(f"{host} is short {shortfall(short)} for {vm.name} at {new.describe()}; "
                                 f"{cure}, or ask for less")
            flavor = s.get(Flavor, vm.flavor_id) if vm.flavor_id else None
            if flavor is not None and (flavor.cpus, flavor.memory_mib, flavor.disk_gib) != astuple(new):
                vm.flavor_id = None  # no longer that flavor's size; put back with the size on a failure
            vm.cpus, vm.memory_mib, vm.disk_gib = astuple(new)
            s.commit()
        return old, new, host, flavor.id if flavor else None

    def _record(self, vm_id: int, size: Resources, flavor_id: int | None | Literal["kept"] = "kept") -> None:
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            vm.cpus, vm.memory_mib, vm.disk_gib, vm.updated_at = *astuple(size), utcnow()
            if flavor_id != "kept":
                vm.flavor_id = flavor_id
            s.commit()
