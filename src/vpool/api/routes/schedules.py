from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from vpool.api.deps import control_plane
from vpool.api.routes.common import RowId

router = APIRouter(tags=["schedules"])


class ScheduleCreate(BaseModel):
    kind: str = "backup"
    vm: str
    cron: str = Field(description='Five fields in UTC, e.g. "0 2 * * *" for 02:00 every day.')
    incremental: bool = True
    keep_daily: int | None = Field(None, ge=0)
    keep_weekly: int | None = Field(None, ge=0)


@router.get("/schedules")
def list_schedules(cp=Depends(control_plane)):
    items = cp.schedules.listing()
    return {"items": items, "total": len(items)}


@router.post("/schedules", status_code=201)
def create_schedule(body: ScheduleCreate, cp=Depends(control_plane)):
    return cp.schedules.create(body.kind, body.vm, body.cron, body.incremental, body.keep_daily, body.keep_weekly)


@router.get("/schedules/{schedule_id}")
def show_schedule(schedule_id: RowId, cp=Depends(control_plane)):
    """With its runs, newest first; `missed` runs are due times the control plane was not there for."""
    return cp.schedules.show(schedule_id)


@router.delete("/schedules/{schedule_id}", status_code=204)
def delete_schedule(schedule_id: RowId, cp=Depends(control_plane)):
    cp.schedules.delete(schedule_id)
    return Response(status_code=204)
