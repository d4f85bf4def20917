"""Keeps the store true to what the hypervisors report (the Kubernetes-controller idea).

Events update one domain within a moment; the periodic full sync catches anything an event
missed (a restart of libvirtd, a host that came back). Both are safe to re-run.
"""

from sqlalchemy import delete, select

from vpool.hypervisor.libvirt_driver import DomainInfo
from vpool.model.states import VMOwnership, VMState
from vpool.store.db import Store
from vpool.store.tables import VM, utcnow


class Reconciler:
    def __init__(self, store: Store, connections):
        self.store = store
        self.connections = connections

    def sync_host(self, host_id: int) -> None:
        drv = self.connections.drivers.get(host_id)
        if drv is None:
            return
        read_at = utcnow()
        domains = drv.domain_states()
        with self.store.session() as s:
            known = {vm.uuid: vm for vm in s.scalars(select(VM).where(VM.uuid.in_(list(domains))))} if domains else {}
            for uuid, state in domains.items():
                vm = known.get(uuid)
                if vm is None:
                    info = drv.domain_info(uuid)
                    if info is not None:
                        s.add(_unmanaged(s, info, host_id))
                elif vm.state != VMState.creating and vm.updated_at < read_at:
                    _observe(vm, state, host_id)  # unless a task wrote fresher news since the read
            gone = s.scalars(select(VM).where(VM.host_id == host_id, VM.uuid.is_not(None),
                                              VM.uuid.not_in(list(domains)) if domains else VM.uuid.is_not(None),
                                              VM.state != VMState.creating, VM.updated_at < read_at))
            for vm in gone:
                if vm.ownership == VMOwnership.unmanaged:
                    s.delete(vm)
                elif vm.state != VMState.missing:
                    vm.state = VMState.missing
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
            elif vm.state == VMState.creating or vm.updated_at >= read_at:
                return  # being created, or a task wrote fresher news since the read
            elif state == "missing":
                if vm.host_id == host_id:
                    if vm.ownership == VMOwnership.unmanaged:
                        s.execute(delete(VM).where(VM.id == vm.id))
                    else:
                        vm.state = VMState.missing
            else:
                vm.state = state
                vm.host_id = host_id
            s.commit()


def _unmanaged(s, info: DomainInfo, host_id: int) -> VM:
    """A domain vpool did not create is listed, never touched, until someone adopts it."""
    name = info.name[:63]
    if s.scalar(select(VM.id).where(VM.name == name)) is not None:
        name = f"{name[:54]}-{info.uuid[:8]}"  # the same name lives on another host
    return VM(name=name, uuid=info.uuid, host_id=host_id, ownership=VMOwnership.unmanaged,
              state=info.state, cpus=info.cpus, memory_mib=info.memory_mib, disk_gib=0,
              disk_path=info.disk_paths[0] if info.disk_paths else None)


def _observe(vm: VM, state: str, host_id: int) -> None:
    if vm.state != state:
        vm.state = state
    if vm.host_id != host_id:
        vm.host_id = host_id
