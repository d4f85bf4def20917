"""Server groups: VMs that must (affinity) or must not (anti-affinity) share a host, or would
rather not (soft-anti-affinity). Placement enforces them on create, migration and evacuation;
VMs that already run join a group where they are, if the rule holds there."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vpool.model.errors import Conflict, Invalid, NotFound
from vpool.model.names import check_name
from vpool.model.states import VMOwnership
from vpool.placement.groups import breach, joining_breach
from vpool.services.pool import POLICY_FIELD
from vpool.services.reconciler import TASK_OWNED
from vpool.store.lookup import by_ref
from vpool.store.tables import VM, Group, Host


class GroupService:
    def __init__(self, cp):
        self.cp = cp

    def get(self, s, name: str) -> Group:
        group = s.scalar(select(Group).where(Group.name == name))
        if group is None:
            raise NotFound(f"there is no group {name!r}")
        return group

    def create(self, name: str, policy: str) -> dict:
        check_name(name, "group name")
        if policy not in POLICY_FIELD:
            raise Invalid(f"policy {policy!r} is not one of {', '.join(POLICY_FIELD)}")
        with self.cp.store.session() as s:
            group = Group(name=name, policy=policy)
            s.add(group)
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"a group named {name!r} already exists") from None
            return self._describe(group, [])

    def listing(self) -> list[dict]:
        with self.cp.store.session() as s:
            members = self._members(s)
            return [self._describe(g, members.get(g.id, [])) for g in s.scalars(select(Group).order_by(Group.name))]

    def show(self, name: str) -> dict:
        with self.cp.store.session() as s:
            group = self.get(s, name)
            return self._describe(group, self._members(s, group.id).get(group.id, []))

    def change(self, name: str, add: list[str], remove: list[str]) -> dict:
        """VMs leave, then VMs join on the hosts they are on; all of it or nothing: a VM the rule
        forbids where it is, or that a task is moving, is refused with the reason."""
        if not add and not remove:
            raise Invalid("name the VMs to add to the group or to remove from it")
        with self.cp.store.session() as s, self.cp.store.placement_lock(s):
            group = self.get(s, name)
            for ref in dict.fromkeys(remove):
                vm = self._vm(s, ref)
                if vm.group_id != group.id:
                    raise Conflict(f"{vm.name} is not in group {name}")
                vm.group_id = None
            s.flush()
            placed = {}
            for vm, host, state in self._members(s, group.id).get(group.id, []):
                self._check_settled(state, f"group {name}'s VM {vm}")
                placed[vm] = host
            for ref in dict.fromkeys(add):
                self._join(s, group, self._vm(s, ref), placed)
            s.commit()
        return self.show(name)

    def _join(self, s, group: Group, vm: VM, placed: dict[str, str | None]) -> None:
        if vm.group_id == group.id:
            return
        if vm.group_id is not None:
            raise Conflict(f"{vm.name} is in group {vm.group.name}, and a VM is in one group at a time; "
                           f"take it out of {vm.group.name} first")
        if vm.ownership != VMOwnership.managed:
            raise Conflict(f"{vm.name} is not managed by vpool; adopt it first")
        self._check_settled(vm.state, vm.name)
        if vm.host is None:
            raise Conflict(f"{vm.name} has no host, so the group's rule cannot be checked for it")
        why = joining_breach(group.policy, vm.name, vm.host.name,
                             {m: h for m, h in placed.items() if h is not None})
        if why:
            raise Conflict(f"{vm.name} cannot join {group.policy} group {group.name}: {why}")
        placed[vm.name] = vm.host.name
        vm.group_id = group.id

    def delete(self, name: str) -> None:
        with self.cp.store.session() as s:
            group = self.get(s, name)
            members = [vm for vm, _host, _state in self._members(s, group.id).get(group.id, [])]
            if members:
                raise Conflict(f"group {name} still has VMs ({', '.join(members)}); take them out of it "
                               f"(vpool group remove {name} VM...) or delete them first")
            s.delete(group)
            s.commit()

    @staticmethod
    def _vm(s, ref: str) -> VM:
        vm = by_ref(s, VM, ref)
        if vm is None:
            raise NotFound(f"there is no VM {ref!r}")
        return vm

    @staticmethod
    def _check_settled(state: str, who: str) -> None:
        if state in TASK_OWNED:
            raise Conflict(f"{who} is being {'created' if state == 'creating' else 'migrated'}, so where it "
                           f"will be is not settled; try again once its task has ended")

    @staticmethod
    def _members(s, group_id: int | None = None) -> dict[int, list[tuple[str, str | None, str]]]:
        """(VM, host, state) of each group's VMs, by group id."""
        query = (select(VM.group_id, VM.name, Host.name, VM.state).outerjoin(Host, VM.host_id == Host.id)
                 .where(VM.group_id.is_not(None) if group_id is None else VM.group_id == group_id)
                 .order_by(VM.name))
        members: dict[int, list] = {}
        for gid, vm, host, state in s.execute(query):
            members.setdefault(gid, []).append((vm, host, state))
        return members

    @staticmethod
    def _describe(group: Group, members: list[tuple[str, str | None, str]]) -> dict:
        why = breach(group.policy, {vm: host for vm, host, _state in members if host is not None})
        return {"id": group.id, "name": group.name, "policy": group.policy,
                "vms": [vm for vm, _host, _state in members],
                "members": [{"vm": vm, "host": host, "state": state} for vm, host, state in members],
                "holds": why is None, "breach": why}
