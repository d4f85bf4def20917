from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import accepted

router = APIRouter(tags=["snapshots"])


class SnapshotCreate(BaseModel):
    name: str
    memory: bool = Field(False, description="Save the RAM too (running VMs): a revert resumes at that moment.")
    description: str | None = None


@router.get("/vms/{ref}/snapshots")
def list_snapshots(ref: str, cp=Depends(control_plane)):
    """Depth-first: each snapshot's `depth` and `parent` give the tree; `current` marks where the VM is."""
    return cp.snapshots.list_tree(ref)


@router.post("/vms/{ref}/snapshots", status_code=202)
def create_snapshot(ref: str, body: SnapshotCreate, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.snapshots.create(ref, body.name, body.memory, body.description, requested_by=who))


@router.post("/vms/{ref}/snapshots/{name}/revert", status_code=202)
def revert_snapshot(ref: str, name: str, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.snapshots.revert(ref, name, requested_by=who))


@router.delete("/vms/{ref}/snapshots/{name}", status_code=202)
def delete_snapshot(ref: str, name: str, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.snapshots.delete(ref, name, requested_by=who))
