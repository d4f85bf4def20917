"""Maintenance mode: a host that takes no new VMs and gives away the ones it has.

`on` flags the host at once (placement then skips it, so nothing new lands there while it
empties) and evacuates it in a Task: one live migration per VM, each placed by the placement
engine and run under the usual per-host limits. A VM that cannot move (no room anywhere, not
running, the host went down) stays where it is and the task names it with the reason; running
`on` again retries what is left. `off` puts the host back in service.
"""

from sqlalchemy import select

from vpool.model.errors import Conflict, Invalid, VpoolError
from vpool.model.states import VMOwnership
from vpool.store.tables import VM

UNMANAGED = "not managed by vpool, so vpool does not move it"


class MaintenanceService:
    def __init__(self, cp, migrations):
        self.cp = cp
        self.migrations = migrations

    def set(self, ref: str, on: bool, requested_by: str = "admin"):
        with self.cp.store.session() as s:
            host = self.cp.hosts.get(s, ref)
            host.maintenance = on
            s.commit()
            host_id, name = host.id, host.name
        if not on:
            return self.cp.runner.submit("host.maintenance", name, {"mode": "off"},
                                         lambda ctx: {"host": name, "maintenance": False},
                                         requested_by=requested_by)
        return self.cp.runner.submit("host.maintenance", name, {"mode": "on"},
                                     lambda ctx: self._evacuate(ctx, host_id, name, requested_by),
                                     requested_by=requested_by)

    def preview(self, ref: str, on: bool) -> dict:
        """Where `on` would move each VM now, one after another as the evacuation books them, and
        why any would stay; nothing changes (the check before vCenter's maintenance mode)."""
        if not on:
            raise Invalid("a dry run shows where maintenance on would move the VMs; off moves none")
        with self.cp.store.session() as s:
            host = self.cp.hosts.get(s, ref)
            host_id, name = host.id, host.name
        vms = self._vms(host_id)
        moves, not_moved = self.migrations.rehearse([vm for vm, ownership in vms if ownership == VMOwnership.managed])
        not_moved |= {vm: UNMANAGED for vm, ownership in vms if ownership != VMOwnership.managed}
        return {"host": name, "vms": len(vms), "moved": moves, "not_moved": not_moved}

    def _vms(self, host_id: int) -> list[tuple[str, VMOwnership]]:
        with self.cp.store.session() as s:
            return [(v.name, v.ownership) for v in s.scalars(select(VM).where(VM.host_id == host_id).order_by(VM.name))]

    def _evacuate(self, ctx, host_id: int, name: str, requested_by: str) -> dict:
        vms = self._vms(host_id)
        not_moved: dict[str, str] = {}
        started: dict[str, int] = {}
        for vm, ownership in vms:
            if ownership != VMOwnership.managed:
                not_moved[vm] = UNMANAGED
                continue
            try:
                started[vm] = self.migrations.migrate(vm, requested_by=requested_by).id
            except VpoolError as e:
                not_moved[vm] = e.detail
        moved = self.migrations.follow(ctx, started, not_moved)
        report = {"host": name, "maintenance": True, "moved": moved, "not_moved": not_moved}
        if not_moved:
            reasons = "; ".join(f"{vm}: {why}" for vm, why in not_moved.items())
            raise Conflict(f"{len(moved)} of {len(vms)} VMs left {name}; not moved: {reasons}. {name} stays in "
                           "maintenance (no new VMs); run maintenance on again to retry")
        return report
