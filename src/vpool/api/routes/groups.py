from fastapi import APIRouter, Depends

from vpool.api.deps import control_plane
from vpool.api.schemas import GroupCreate

router = APIRouter(tags=["groups"])


@router.get("/groups")
def list_groups(cp=Depends(control_plane)):
    groups = cp.groups.listing()
    return {"items": groups, "total": len(groups), "limit": len(groups), "offset": 0}


@router.post("/groups", status_code=201)
def create_group(body: GroupCreate, cp=Depends(control_plane)):
    """A server group; VMs join it with `group` on create."""
    return cp.groups.create(body.name, body.policy)


@router.delete("/groups/{name}", status_code=204)
def delete_group(name: str, cp=Depends(control_plane)):
    cp.groups.delete(name)
