from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import RowId, accepted

router = APIRouter(tags=["disaster recovery"])


class DrillCreate(BaseModel):
    vms: str = Field(description="Comma-separated VM names or patterns (web*), or all.")
    target_host: str | None = None


@router.post("/dr/drills", status_code=202)
def start_drill(body: DrillCreate, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.drills.drill(body.vms, body.target_host, requested_by=who))


@router.get("/dr/drills")
def list_drills(cp=Depends(control_plane)):
    items = cp.drills.listing()
    return {"items": items, "total": len(items)}


@router.get("/dr/drills/{drill_id}")
def show_drill(drill_id: RowId, cp=Depends(control_plane)):
    return cp.drills.show(drill_id)
