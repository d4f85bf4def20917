"""Flavors: named VM sizes."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vpool.model.errors import Conflict, NotFound
from vpool.model.names import check_name
from vpool.model.resources import Resources
from vpool.store.tables import VM, Flavor


def describe(f: Flavor) -> dict:
    return {"id": f.id, "name": f.name, "cpus": f.cpus, "memory_mib": f.memory_mib, "disk_gib": f.disk_gib}


class FlavorService:
    def __init__(self, cp):
        self.cp = cp

    def create(self, name: str, size: Resources) -> dict:
        check_name(name, "flavor name")
        size.check()
        with self.cp.store.session() as s:
            flavor = Flavor(name=name, cpus=size.cpus, memory_mib=size.memory_mib, disk_gib=size.disk_gib)
            s.add(flavor)
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"a flavor named {name!r} already exists") from None
            return describe(flavor)

    def list(self) -> list[dict]:
        with self.cp.store.session() as s:
            return [describe(f) for f in s.scalars(select(Flavor).order_by(Flavor.name))]

    def delete(self, name: str) -> None:
        with self.cp.store.session() as s:
            flavor = s.scalar(select(Flavor).where(Flavor.name == name))
            if flavor is None:
                raise NotFound(f"there is no flavor {name!r}")
            user = s.scalar(select(VM.name).where(VM.flavor_id == flavor.id))
            if user:
                raise Conflict(f"flavor {name} is used by VM {user}")
            s.delete(flavor)
            s.commit()
