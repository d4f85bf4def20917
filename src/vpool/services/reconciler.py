"""Keeps the store true to what the hypervisors report (the Kubernetes-controller idea).

Events update one domain within a moment; the periodic full sync catches anything an event
missed (a restart of libvirtd, a host that came back). Both are safe to re-run.
"""

from datetime import datetime

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
                if uuid is None or state in TASK_OWNED or updated_at >= read_at:
                    continue  # never defined, a task owns it, or a task wrote fresher news since the read
                news = _news(host_id, domains.get(uuid), state, vm_host, ownership)
                if news == GONE:
                    gone_unmanaged.append(vm_id)
                elif news is not None:
                    changed.append({"id": vm_id, "state": news, "host_id": host_id, "updated_at": read_at})
            if changed:
                s.execute(update(VM), changed)
            if gone_unmanaged:
                s.execute(delete(VM).where(VM.id.in_(gone_unmanaged)))
            for uuid in domains.keys() - seen:
                info = drv.domain_info(uuid)
                if info is not None:
                    s.add(_unmanaged(s, info, host_id))
            s.commit()

    def sync_sizes(self, host_id: int, read_at: datetime, sizes: dict[str, tuple[int, int]]) -> int:
        """Writes the sizes (vCPUs, memory MiB) a host's running domains reported at read_at where
        the store has another: the telemetry collector reads them every interval anyway, and
        libvirt raises no event when vCPUs are plugged behind vpool's back. Returns the rows
        changed; a row a task wrote since the read is the task's."""
        if not sizes:
            return 0
        with self.store.session() as s:
            rows = s.execute(select(VM.id, VM.uuid, VM.cpus, VM.memory_mib, VM.updated_at).where(
                VM.host_id == host_id, VM.state == VMState.running)).all()
            changed = 0
            for vm_id, uuid, cpus, memory_mib, updated_at in rows:
                size = sizes.get(uuid)
                if size is None or size == (cpus, memory_mib) or updated_at >= read_at:
                    continue
                changed += s.execute(update(VM).where(VM.id == vm_id, VM.updated_at < read_at).values(
                    cpus=size[0], memory_mib=size[1], updated_at=read_at)).rowcount
            s.commit()
        return changed

    def sync_domain(self, host_id: int, uuid: str) -> None:
        drv = self.connections.drivers.get(host_id)
        if drv is None:
            return
        read_at = utcnow()
        state = drv.state(uuid)
        # a running VM is counted at the size it runs with, whatever changed it behind vpool's back:
        # `virsh setvcpus --config` while it was off, memory plugged with virsh while it runs
        size = drv.size(uuid) if state == VMState.running else None
        with self.store.session() as s:
            row = s.execute(select(VM.id, VM.state, VM.host_id, VM.ownership, VM.updated_at, VM.cpus, VM.memory_mib)
                            .where(VM.uuid == uuid)).first()
            if row is None:
                info = drv.domain_info(uuid) if state != "missing" else None
                if info is None:
                    return
                s.add(_unmanaged(s, info, host_id))
            else:
                vm_id, stored, vm_host, ownership, updated_at, cpus, memory_mib = row
                if stored in TASK_OWNED or updated_at >= read_at:
                    return  # being created or migrated, or a task wrote fresher news since the read
                news = _news(host_id, None if state == "missing" else state, stored, vm_host, ownership)
                if news == GONE:
                    s.execute(delete(VM).where(VM.id == vm_id))
                else:
                    here = news is not None or vm_host == host_id  # the VM is this domain, not a copy of it
                    values = {"state": news, "host_id": host_id} if news is not None else {}
                    if here and size and size != (cpus, memory_mib):
                        values |= {"cpus": size[0], "memory_mib": size[1]}
                    if not values:
                        return
                    s.execute(update(VM).where(VM.id == vm_id).values(updated_at=read_at, **values))
            s.commit()


GONE = "gone"  # an unmanaged VM whose domain went: its row goes too


def _news(host_id: int, observed: str | None, stored: str, vm_host: int | None, ownership: str) -> str | None:
    """What a host's report (observed: the domain's state there, None if it has no such domain)
    means for a VM row: the state to write (the VM is then on this host), GONE, or None for no
    change. Callers skip the rows a task owns (TASK_OWNED): those are the task's to settle."""
    if observed is not None:
        if vm_host != host_id and not _moved_here(observed, stored):
            return None
        return observed if (observed, host_id) != (stored, vm_host) else None
    if vm_host != host_id:
        return None  # another host's VM: this one not having it is no news
    if ownership == VMOwnership.unmanaged:
        return GONE
    return VMState.missing if stored != VMState.missing else None


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
              state=info.state, cpus=info.cpus, memory_mib=info.memory_mib, disk_gib=info.disk_gib,
              disk_path=info.disk_paths[0] if info.disk_paths else None)


