from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import RowId, accepted
from vpool.services.backups import parse_point

router = APIRouter(tags=["backups"])


class BackupCreate(BaseModel):
    vm: str
    incremental: bool = Field(False, description="Only what changed since the VM's last valid backup.")


class BackupRestore(BaseModel):
    vm: str = Field(description="The backed-up VM's name (it may have been deleted since).")
    as_name: str | None = Field(None, alias="as", description="Restore under this name instead.")
    host: str | None = None
    point: str | None = Field(None, description="Newest restorable point at or before this time (ISO 8601, UTC "
                                                "unless a zone is given).")
    start: bool = True


class BackupPrune(BaseModel):
    vm: str
    keep_daily: int = Field(0, ge=0)
    keep_weekly: int = Field(0, ge=0)


@router.get("/backups")
def list_backups(vm: str | None = None, cp=Depends(control_plane)):
    items = cp.backups.listing(vm)
    return {"items": items, "total": len(items)}


@router.get("/backups/{backup_id}")
def show_backup(backup_id: RowId, cp=Depends(control_plane)):
    return cp.backups.get(backup_id)


@router.post("/backups", status_code=202)
def create_backup(body: BackupCreate, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.backups.create(body.vm, body.incremental, requested_by=who))


@router.post("/backups/verify", status_code=202)
def verify_backups(vm: str | None = None, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.backups.verify(vm, requested_by=who))


@router.post("/backups/restore", status_code=202)
def restore_backup(body: BackupRestore, who: str = Depends(caller), cp=Depends(control_plane)):
    point: datetime | None = parse_point(body.point) if body.point else None
    return accepted(cp.backups.restore(body.vm, body.as_name, body.host, point, body.start, requested_by=who))


@router.post("/backups/prune", status_code=202)
def prune_backups(body: BackupPrune, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.backups.prune(body.vm, body.keep_daily, body.keep_weekly, requested_by=who))
