"""Server groups: VMs that must (affinity) or must not (anti-affinity) share a host, or would
rather not (soft-anti-affinity). Placement enforces them on create, migration and evacuation."""

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from vpool.model.errors import Conflict, Invalid, NotFound
from vpool.model.names import check_name
from vpool.services.pool import POLICY_FIELD
from vpool.store.tables import VM, Group


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
            return {"id": group.id, "name": name, "policy": policy, "vms": []}

    def listing(self) -> list[dict]:
        with self.cp.store.session() as s:
            members: dict[int, list[str]] = {}
            for gid, vm in s.execute(select(VM.group_id, VM.name).where(VM.group_id.is_not(None)).order_by(VM.name)):
                members.setdefault(gid, []).append(vm)
            return [{"id": g.id, "name": g.name, "policy": g.policy, "vms": members.get(g.id, [])}
                    for g in s.scalars(select(Group).order_by(Group.name))]

    def delete(self, name: str) -> None:
        with self.cp.store.session() as s:
            group = self.get(s, name)
            if s.scalar(select(func.count()).select_from(VM).where(VM.group_id == group.id)):
                raise Conflict(f"group {name} still has VMs; delete them or wait until they are gone")
            s.delete(group)
            s.commit()
