from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import Page, accepted
from vpool.api.schemas import Body, HostAdd, HostPatch, Policy

router = APIRouter(tags=["hosts"])


@router.get("/hosts")
def list_hosts(page: Page = Depends(), state: str | None = None, cp=Depends(control_plane)):
    hosts = cp.hosts.listing(state)
    return page.wrap(hosts[page.offset:page.offset + page.limit], len(hosts))


@router.post("/hosts", status_code=202)
def add_host(body: HostAdd, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.hosts.add(body.uri, body.name, body.virt_type, body.network, requested_by=who))


@router.get("/hosts/{ref}")
def show_host(ref: str, cp=Depends(control_plane)):
    return cp.hosts.show(ref)


@router.patch("/hosts/{ref}")
def patch_host(ref: str, body: HostPatch, cp=Depends(control_plane)):
    values = body.model_dump(exclude_unset=True)
    return cp.hosts.set(ref, values.pop("maintenance", None), **values)


class MaintenanceBody(Body):
    mode: Literal["on", "off"]


@router.post("/hosts/{ref}/maintenance", status_code=202)
def maintenance(ref: str, body: MaintenanceBody, dry_run: bool = False, who: str = Depends(caller),
                cp=Depends(control_plane)):
    """on: no new VMs, and every VM leaves by live migration (the task names any that cannot); off: back in service.
    With `dry_run=true` and on, nothing changes: 200 with where each VM would go (`moved`) and why any
    would stay (`not_moved`)."""
    if dry_run:
        return JSONResponse(cp.maintenance.preview(ref, body.mode == "on"))
    return accepted(cp.maintenance.set(ref, body.mode == "on", requested_by=who))


@router.delete("/hosts/{ref}", status_code=204)
def remove_host(ref: str, cp=Depends(control_plane)):
    cp.hosts.remove(ref)


@router.get("/pool/defaults")
def get_defaults(cp=Depends(control_plane)):
    return cp.hosts.defaults()


@router.patch("/pool/defaults")
def patch_defaults(body: Policy, cp=Depends(control_plane)):
    return cp.hosts.defaults(body.model_dump(exclude_unset=True))


@router.get("/pool")
def pool_summary(cp=Depends(control_plane)):
    return cp.hosts.summary()
