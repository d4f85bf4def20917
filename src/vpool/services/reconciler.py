"""Keeps the store true to what the hypervisors report (the Kubernetes-controller idea).

Events update one domain within a moment; the periodic full sync catches anything an event
missed (a restart of libvirtd, a host that came back). Both are safe to re-run.
"""

from sqlalchemy import delete, or_, select, update

from vpool.hypervisor.libvirt_driver import DomainInfo
from vpool.model.states import VMOwnership, VMState
from vpool.store.db import Store
from vpool.store.tables import VM, utcnow

# States a running task owns: the hypervisors are mid-change, so what they report is no news.
TASK_OWNED = (VMState.creating, VMState.migrating)


class Reconciler:
    def __init__(self, store: Store, connections):
        self.store = store
        self.connections = connections

    def sync_host(self, host_id: int) -> None:
        """Plain rows and bulk statements: a host with thousands of VMs syncs in milliseconds."""
        drv = self.connections.drivers.get(host_id)
        if drv is None:
            return
        read_at = utcnow()
        domains = drv.domain_states()
        with self.store.session() as s:
            rows = s.execute(select(VM.id, VM.uuid, VM.state, VM.host_id, VM.ownership, VM.updated_at).where(
                or_(VM.host_id == host_id, VM.uuid.in_(list(domains))))).all()
            seen, changed, gone_unmanaged = set(), [], []
            for vm_id, uuid, state, vm_host, ownership, updated_at in rows:
                seen.add(uuid)
                if state in TASK_OWNED or updated_at >= read_at:
                    continue  # a task owns it, or wrote fresher news since the read
                observed = domains.get(uuid)
                if observed is not None:
                    if vm_host != host_id and not _moved_here(observed, state):
                        continue
                    if (observed, host_id) != (state, vm_host):
                        changed.append({"id": vm_id, "state": observed, "host_id": host_id, "updated_at": read_at})
                elif vm_host == host_id and uuid is not None:
                    if ownership == VMOwnership.unmanaged:
                        gone_unmanaged.append(vm_id)
                    elif state != VMState.missing:
                        changed.append({"id": vm_id, "state": VMState.missing, "host_id": host_id,
                                        "updated_at": read_at})
            if changed:
                s.execute(update(VM), changed)
            if gone_unmanaged:
                s.execute(delete(VM).where(VM.id.in_(gone_unmanaged)))
            for uuid in domains.keys() - seen:
                info = drv.domain_info(uuid)
                if info is not None:
                    s.add(_unmanaged(s, info, host_id))
            s.commit()

    def sync_domain(self, host_id: int, uuid: str) -> None:
        drv = self.connections.drivers.get(host_id)
        if drv is None:
            return
        read_at = utcnow()
        state = drv.state(uuid)
        with self.store.session() as s:
            vm = s.scalar(select(VM).where(VM.uuid == uuid))
            if vm is None:
                info = drv.domain_info(uuid) if state != "missing" else None
                if info is not None:
                    s.add(_unmanaged(s, info, host_id))
            elif vm.state in TASK_OWNED or vm.updated_at >= read_at:
                return  # being created or migrated, or a task wrote fresher news since the read
            elif state == "missing":
                if vm.host_id == host_id:
                    if vm.ownership == VMOwnership.unmanaged:
                        s.execute(delete(VM).where(VM.id == vm.id))
                    else:
                        vm.state = VMState.missing
            elif vm.host_id == host_id or _moved_here(state, vm.state):
                vm.state = state
                vm.host_id = host_id
            s.commit()


def _moved_here(observed: str, stored: str) -> bool:
    """A VM another host holds moves here only once it runs here, or once the other host lost
    it: an incoming migration's paused copy is not yet the VM (an aborted move leaves it home)."""
    return observed == VMState.running or stored == VMState.missing


def _unmanaged(s, info: DomainInfo, host_id: int) -> VM:
    """A domain vpool did not create is listed, never touched, until someone adopts it."""
    name = info.name[:63]
    if s.scalar(select(VM.id).where(VM.name == name)) is not None:
        name = f"{name[:54]}-{info.uuid[:8]}"  # the same name lives on another host
    return VM(name=name, uuid=info.uuid, host_id=host_id, ownership=VMOwnership.unmanaged,
              state=info.state, cpus=info.cpus, memory_mib=info.memory_mib, disk_gib=0,
              disk_path=info.disk_paths[0] if info.disk_paths else None)


