from fastapi import APIRouter, Depends

from vpool.api.deps import control_plane
from vpool.api.schemas import GroupChange, GroupCreate

router = APIRouter(tags=["groups"])


@router.get("/groups")
def list_groups(cp=Depends(control_plane)):
    """Each group with its VMs, their hosts, and whether its rule holds where they are."""
    groups = cp.groups.listing()
    return {"items": groups, "total": len(groups), "limit": len(groups), "offset": 0}


@router.post("/groups", status_code=201)
def create_group(body: GroupCreate, cp=Depends(control_plane)):
    """A server group; VMs join it with `group` on create, or later with PATCH."""
    return cp.groups.create(body.name, body.policy)


@router.get("/groups/{name}")
def show_group(name: str, cp=Depends(control_plane)):
    return cp.groups.show(name)


@router.patch("/groups/{name}")
def change_group(name: str, body: GroupChange, cp=Depends(control_plane)):
    """VMs leave, then join where they are: all of it or nothing, 409 naming a VM the rule
    forbids on its host."""
    return cp.groups.change(name, body.add, body.remove)


@router.delete("/groups/{name}", status_code=204)
def delete_group(name: str, cp=Depends(control_plane)):
    cp.groups.delete(name)
