"""The pool as the placement engine sees it, built from the store in one pass."""

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from vpool.model.capacity import DEFAULTS, check_setting, effective
from vpool.model.states import ACTIVE, VMOwnership
from vpool.placement import ClusterState, HostRecord, VMRecord
from vpool.store.migration_tables import BOOKING, Migration
from vpool.store.tables import VM, Group, Host, Setting

# The group policies a VM can be created under, and the request field that carries each.
POLICY_FIELD = {"affinity": "affinity", "anti-affinity": "anti_affinity", "soft-anti-affinity": "soft_anti_affinity"}

# Queries built once: a create reads the pool under the placement lock, where building them took
# a millisecond of each. Per host: its ungrouped VMs folded into one (count, CPU, RAM, disk), then
# the disks of its VMs on its own storage and how many a migration left on other storage.
_UNGROUPED = VM.group_id.is_(None)
_HOST_LOADS = (select(VM.host_id,
                      *(func.sum(case((_UNGROUPED, x), else_=0)) for x in (1, VM.cpus, VM.memory_mib, VM.disk_gib)),
                      func.sum(case((VM.storage.is_(None), VM.disk_gib), else_=0)), func.count(VM.storage))
               .where(VM.host_id.is_not(None)).group_by(VM.host_id))
_ONE_BY_ONE = select(VM.name, VM.host_id, VM.cpus, VM.memory_mib, VM.disk_gib, VM.group_id, VM.storage, VM.state,
                     VM.ownership, VM.auto_balance)
# Per host, for the host views: all its VMs (CPU, RAM, disk, count), then the same two disk columns.
_HOST_TOTALS = (select(VM.host_id, func.sum(VM.cpus), func.sum(VM.memory_mib), func.sum(VM.disk_gib), func.count(),
                       func.sum(case((VM.storage.is_(None), VM.disk_gib), else_=0)), func.count(VM.storage))
                .where(VM.host_id.is_not(None)).group_by(VM.host_id))
_INCOMING = (select(Migration.destination_host_id, func.sum(Migration.cpus), func.sum(Migration.memory_mib),
                    func.sum(case((Migration.copy_storage, Migration.disk_gib), else_=0)))  # a disk left where
             .where(Migration.state.in_(BOOKING), Migration.destination_host_id.is_not(None))  # it is takes no room
             .group_by(Migration.destination_host_id))


def pool_defaults(s: Session) -> dict:
    stored = {k: v for k, v in s.execute(select(Setting.key, Setting.value))}
    return {k: type(v)(stored[k]) if k in stored else v for k, v in DEFAULTS.items()}


def set_pool_defaults(s: Session, values: dict) -> dict:
    """values as a JSON merge patch gives them: None puts vpool's own default back."""
    for key, value in values.items():
        check_setting(key, value)
        if value is None:
            if (row := s.get(Setting, key)) is not None:
                s.delete(row)
            continue
        row = s.get(Setting, key) or Setting(key=key)
        row.value = str(value)
        s.add(row)
    s.commit()
    return pool_defaults(s)


def host_policy(host: Host, defaults: dict) -> dict:
    return effective({k: getattr(host, k) for k in DEFAULTS}, defaults)


def allocations(s: Session) -> dict[int, dict]:
    """Per host: what its VMs take, plus the room migrations on their way there have booked. Disk
    is the storage's: on a host whose storage others share, every VM disk on it, whichever host
    runs the VM (summed per host, three hosts on one shared storage offered three times its room)."""
    out, on_host, elsewhere = {}, {}, 0
    for h, c, m, d, n, on_host[h], moved in s.execute(_HOST_TOTALS):
        out[h] = {"cpus": c or 0, "memory_mib": m or 0, "disk_gib": d or 0, "vms": n}
        elsewhere += moved
    host_storage = dict(s.execute(select(Host.id, Host.storage)).all())
    on_storage, booked = _disk_on_storage(s, host_storage, on_host, elsewhere > 0), incoming(s)
    for h in host_storage:
        line = out.setdefault(h, {"cpus": 0, "memory_mib": 0, "disk_gib": 0, "vms": 0})
        if host_storage[h]:
            line["disk_gib"] = on_storage.get(host_storage[h], 0)
        for k, v in booked.get(h, {}).items():
            line[k] += v
    return out


def _disk_on_storage(s: Session, host_storage: dict[int, str | None], on_host: dict[int, int],
                    elsewhere: bool) -> dict[str, int]:
    """Storage id -> GiB of the VM disks on it: a disk is on its host's storage (`on_host`: host id
    -> GiB of its VMs' disks there), unless a copy-storage migration left it on another
    (VM.storage); `elsewhere` says whether any did, to spare a scan on each create when none did.
    A storage that is no host's own (a copy into another pool of its host, `--storage-pool`) has
    no room of its own in the pool: its disks count on the storage of the host they are on."""
    out: dict[str, int] = {}
    for hid, d in on_host.items():
        if host_storage.get(hid):
            out[host_storage[hid]] = out.get(host_storage[hid], 0) + (d or 0)
    if elsewhere:
        pooled = set(host_storage.values())
        for storage, hid, d in s.execute(select(VM.storage, VM.host_id, func.sum(VM.disk_gib))
                                         .where(VM.storage.is_not(None)).group_by(VM.storage, VM.host_id)):
            storage = storage if storage in pooled else host_storage.get(hid)
            if storage:
                out[storage] = out.get(storage, 0) + (d or 0)
    return out


def incoming(s: Session) -> dict[int, dict]:
    """Room booked on each destination by live migrations that have not ended: the VM still
    counts on its source until it has arrived, so both hosts hold its size meanwhile."""
    return {h: {"cpus": c or 0, "memory_mib": m or 0, "disk_gib": d or 0} for h, c, m, d in s.execute(_INCOMING)}


def group_constraints(group: Group | None) -> dict:
    """The PlacementRequest fields that make a VM of `group` follow the group's policy."""
    if group is None:
        return {}
    return {POLICY_FIELD[group.policy]: frozenset({group.name})}


def cluster_state(s: Session, per_vm: bool = True, cpu_busy: dict[str, float] | None = None) -> ClusterState:
    """per_vm=False folds each host's VMs into one record: enough for capacity decisions and
    O(hosts) instead of O(VMs), which keeps a create fast in a pool of ten thousand VMs. VMs in
    a server group stay one by one either way (group rules count them). Plans that move VMs
    need them all one by one.

    A disk on a storage is the storage's to hold, not its host's (as Ganeti counts shared-storage
    disks on no node): each host on that storage keeps back what every disk on it takes, and the
    VMs carry no disk of their own, so a VM moved between hosts of one storage moves no disk.

    cpu_busy: each host's measured share of CPUs busy (measured_load.host_busy), by name, for
    placing a VM; read by the caller before its placement lock."""
    defaults = pool_defaults(s)
    hosts = list(s.scalars(select(Host).order_by(Host.id)))
    names, host_storage = {h.id: h.name for h in hosts}, {h.id: h.storage for h in hosts}
    folded, on_host, elsewhere = {}, {}, 0
    for hid, n, c, m, d, on_host[hid], moved in s.execute(_HOST_LOADS):
        elsewhere += moved
        if n:
            folded[hid] = (c, m, 0 if host_storage.get(hid) else d)  # disk only on a host with no storage id
    on_storage = _disk_on_storage(s, host_storage, on_host, elsewhere > 0)
    booked = incoming(s)  # a migration's booking is no VM (no plan may move it): room the destination keeps
    host_records = []
    for h in hosts:
        p = host_policy(h, defaults)
        b = booked.get(h.id, {"cpus": 0, "memory_mib": 0, "disk_gib": 0})
        host_records.append(HostRecord(
            name=h.name, cpus=h.cpus, memory_mib=h.memory_mib, disk_gib=h.disk_gib,
            cpu_ratio=p["cpu_ratio"], ram_ratio=p["ram_ratio"], disk_ratio=p["disk_ratio"],
            reserved_cpus=p["reserved_cpus"] + b["cpus"],
            reserved_memory_mib=p["reserved_memory_mib"] + b["memory_mib"],
            reserved_disk_gib=p["reserved_disk_gib"] + b["disk_gib"] + on_storage.get(h.storage, 0),
            up=h.state == "up", maintenance=h.maintenance, storage=h.storage or "",
            cpu_busy=(cpu_busy or {}).get(h.name)))
    groups = {gid: (name, policy) for gid, name, policy in s.execute(select(Group.id, Group.name, Group.policy))}
    # a plan moves only what vpool can live-migrate: its own VMs with a running (or paused) guest,
    # unless kept out of plans; the others keep their room where they are, and a stopped one's
    # memory is out of the score
    rows = [(n, hid, c, m, 0 if st or host_storage.get(hid) else d, g, st, state in ACTIVE,
             state in ACTIVE and own == VMOwnership.managed, auto)
            for n, hid, c, m, d, g, st, state, own, auto in
            s.execute(_ONE_BY_ONE if per_vm else _ONE_BY_ONE.where(VM.group_id.is_not(None)))]
    if not per_vm:
        rows += [(f"vms@{names[h]}", h, c, m, d, None, None, True, False, False) for h, (c, m, d) in folded.items()
                 if h in names]
    vm_records = [VMRecord(name=n, host=names.get(hid), cpus=c, memory_mib=m, disk_gib=d,
                           groups=frozenset({groups[g][0]}) if g else frozenset(), storage=st, running=running,
                           auto_balance=movable and auto, migratable=movable)
                  for n, hid, c, m, d, g, st, running, movable, auto in rows]
    return ClusterState.from_records(host_records, vm_records, dict(groups.values()))
