"""Live migration: start one, read a VM's history, read and set the pool's migration policy."""

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import Field

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import Page, accepted
from vpool.api.schemas import Body

router = APIRouter(tags=["migrations"])


class MigrateBody(Body):
    to: str | None = Field(None, description="Destination host (default: placement picks, never the VM's own).")
    copy_storage: bool = Field(False, description="Copy the disk to the destination (no shared storage): "
                                                  "into its storage_pool, flattened.")
    storage_pool: str | None = Field(None, description="With copy_storage: the destination's pool for the disk; "
                                     "by default its own, whose room it then counts in.")
    max_downtime_ms: int | None = Field(None, description="Switch-over budget (default: the policy's).")
    bandwidth_mib_s: int | None = Field(None, description="Cap on the migration stream (default: the policy's).")


@router.post("/vms/{ref}/migrate", status_code=202)
def migrate_vm(ref: str, body: MigrateBody | None = None, dry_run: bool = False, who: str = Depends(caller),
               cp=Depends(control_plane)):
    """With `dry_run=true`, nothing moves: 200 with the host placement would choose now and why,
    host by host (`host` null and `message` saying why when none will do)."""
    body = body or MigrateBody()
    if dry_run:
        return JSONResponse(cp.migrations.preview(ref, body.to, body.copy_storage, body.storage_pool))
    return accepted(cp.migrations.migrate(ref, body.to, body.copy_storage, body.max_downtime_ms,
                                          body.bandwidth_mib_s, body.storage_pool, requested_by=who))


@router.get("/vms/{ref}/migrations")
def vm_migrations(ref: str, cp=Depends(control_plane)):
    """Newest first: duration and downtime as libvirt measured the job, bytes sent, result."""
    items = cp.migrations.history(ref)
    return {"items": items, "total": len(items)}


@router.get("/migrations")
def list_migrations(page: Page = Depends(), state: str | None = Query(None), cp=Depends(control_plane)):
    return page.wrap(*cp.migrations.list(state, page.limit, page.offset))


@router.get("/migrations/policy")
def get_policy(cp=Depends(control_plane)):
    return asdict(cp.migrations.policy())


@router.patch("/migrations/policy")
def patch_policy(body: dict, cp=Depends(control_plane)):
    """Any of the policy's fields; the rest keep their values."""
    return cp.migrations.set_policy(body)
