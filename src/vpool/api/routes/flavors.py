from fastapi import APIRouter, Depends

from vpool.api.deps import control_plane
from vpool.api.schemas import FlavorCreate
from vpool.model.names import parse_size_gib, parse_size_mib
from vpool.model.resources import Resources

router = APIRouter(tags=["flavors"])


@router.get("/flavors")
def list_flavors(cp=Depends(control_plane)):
    flavors = cp.flavors.list()
    return {"items": flavors, "total": len(flavors), "limit": len(flavors), "offset": 0}


@router.post("/flavors", status_code=201)
def create_flavor(body: FlavorCreate, cp=Depends(control_plane)):
    size = Resources(body.cpus, parse_size_mib(body.memory, "memory"), parse_size_gib(body.disk, "disk"))
    return cp.flavors.create(body.name, size)


@router.delete("/flavors/{name}", status_code=204)
def delete_flavor(name: str, cp=Depends(control_plane)):
    cp.flavors.delete(name)

