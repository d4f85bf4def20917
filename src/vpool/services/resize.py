"""Resize: a stopped VM's vCPUs and memory (Proxmox's `qm set`, vCenter's Edit Settings).

The new size is booked on the VM's host under the placement lock before the task runs, as a
create is, so no create takes the room meanwhile; if libvirt refuses, the old size comes back
in the store and in the definition. A running VM is refused: a guest learns of more vCPUs or
memory only by hot-plug, which its definition must have been made for.
"""

from vpool.model.errors import Conflict, Invalid, NoCapacity
from vpool.model.resources import Resources
from vpool.placement.place import shortfall
from vpool.services.pool import cluster_state
from vpool.store.tables import VM, Flavor, Host


class ResizeService:
    def __init__(self, cp, busy):
        self.cp = cp
        self.busy = busy

    def resize(self, ref: str, cpus: int | None, memory_mib: int | None, requested_by: str = "admin"):
        if cpus is None and memory_mib is None:
            raise Invalid("say what to change: cpus, memory or both")
        vm_id, name, uuid, host_id = self.cp.vms.managed(ref)
        drv = self.cp.connections.driver(host_id)
        state = drv.state(uuid)
        if state not in ("shutoff", "crashed"):  # what `vm start` starts; `vm stop` calls both stopped already
            raise Conflict(f"VM {name} is {state}: stop it first (vpool vm stop {name}); vpool resizes stopped VMs")
        release = self.busy.claim(name, "a resize")
        try:
            old, new, host, flavor_id = self._book(vm_id, cpus, memory_mib)
        except BaseException:
            release()
            raise

        def body(ctx):
            ctx.progress(30, f"{name}: {old.describe()} -> {new.describe()}")
            try:
                drv.resize(uuid, new.cpus, new.memory_mib)
            except Exception:
                self._put_back(vm_id, old, flavor_id)
                try:
                    drv.resize(uuid, old.cpus, old.memory_mib)  # a first call may have taken
                except Exception:
                    pass
                raise
            return {"vm": name, "host": host, "cpus": new.cpus, "memory_mib": new.memory_mib}

        return self.busy.run(self.cp, name, "a resize", "vm.resize", {"cpus": new.cpus, "memory_mib": new.memory_mib},
                             body, requested_by, release=release)

    def _book(self, vm_id: int, cpus: int | None, memory_mib: int | None) \
            -> tuple[Resources, Resources, str, int | None]:
        with self.cp.store.session() as s, self.cp.store.placement_lock(s):
            vm = s.get(VM, vm_id)
            old = Resources(vm.cpus, vm.memory_mib, vm.disk_gib)
            new = Resources(cpus if cpus is not None else vm.cpus,
                            memory_mib if memory_mib is not None else vm.memory_mib, vm.disk_gib).check()
            if new == old:
                raise Invalid(f"VM {vm.name} already has {old.describe()}")
            host = s.get(Host, vm.host_id).name
            state = cluster_state(s, per_vm=False)
            short = [max(new.cpus - old.cpus, 0), max(new.memory_mib - old.memory_mib, 0), 0] \
                - state.free[state.host_index[host]]
            if (short > 1e-9).any():
                raise NoCapacity(f"{host} is short {shortfall(short)} for {vm.name} at {new.describe()}; "
                                 f"migrate it to a host with room first, or ask for less")
            flavor = s.get(Flavor, vm.flavor_id) if vm.flavor_id else None
            if flavor is not None and (flavor.cpus, flavor.memory_mib) != (new.cpus, new.memory_mib):
                vm.flavor_id = None  # no longer that flavor's size; put back with the size on a failure
            vm.cpus, vm.memory_mib = new.cpus, new.memory_mib
            s.commit()
        return old, new, host, flavor.id if flavor else None

    def _put_back(self, vm_id: int, old: Resources, flavor_id: int | None) -> None:
        with self.cp.store.session() as s:
            vm = s.get(VM, vm_id)
            vm.cpus, vm.memory_mib, vm.flavor_id = old.cpus, old.memory_mib, flavor_id
            s.commit()
