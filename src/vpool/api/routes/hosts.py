from typing import Literal

from fastapi import APIRouter, Depends

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import Page, accepted
from vpool.api.schemas import Body, HostAdd, HostPatch, Policy
from vpool.services.pool import pool_defaults, set_pool_defaults

router = APIRouter(tags=["hosts"])


@router.get("/hosts")
def list_hosts(page: Page = Depends(), state: str | None = None, cp=Depends(control_plane)):
    with cp.store.session() as s:
        hosts = [h for h in cp.hosts.list(s) if state is None or h["state"] == state]
        return page.wrap(hosts[page.offset:page.offset + page.limit], len(hosts))


@router.post("/hosts", status_code=202)
def add_host(body: HostAdd, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.hosts.add(body.uri, body.name, body.virt_type, body.network, requested_by=who))


@router.get("/hosts/{ref}")
def show_host(ref: str, cp=Depends(control_plane)):
    with cp.store.session() as s:
        return cp.hosts.describe(s, cp.hosts.get(s, ref))


@router.patch("/hosts/{ref}")
def patch_host(ref: str, body: HostPatch, cp=Depends(control_plane)):
    values = body.model_dump(exclude_unset=True)
    return cp.hosts.set(ref, values.pop("maintenance", None), **values)


class MaintenanceBody(Body):
    mode: Literal["on", "off"]


@router.post("/hosts/{ref}/maintenance", status_code=202)
def maintenance(ref: str, body: MaintenanceBody, who: str = Depends(caller), cp=Depends(control_plane)):
    """on: no new VMs, and every VM leaves by live migration (the task names any that cannot); off: back in service."""
    return accepted(cp.maintenance.set(ref, body.mode == "on", requested_by=who))


@router.delete("/hosts/{ref}", status_code=204)
def remove_host(ref: str, cp=Depends(control_plane)):
    cp.hosts.remove(ref)


@router.get("/pool/defaults")
def get_defaults(cp=Depends(control_plane)):
    with cp.store.session() as s:
        return pool_defaults(s)


@router.patch("/pool/defaults")
def patch_defaults(body: Policy, cp=Depends(control_plane)):
    with cp.store.session() as s:
        return set_pool_defaults(s, body.model_dump(exclude_unset=True))


@router.get("/pool")
def pool_summary(cp=Depends(control_plane)):
    with cp.store.session() as s:
        hosts = cp.hosts.list(s)
        up = sum(1 for h in hosts if h["state"] == "up")
        total = {r: {k: sum(h["capacity"][r][k] for h in hosts) for k in ("usable", "allocated", "free")}
                 for r in ("cpus", "memory_mib", "disk_gib")}
        return {"hosts": len(hosts), "hosts_up": up, "vms": sum(h["vms"] for h in hosts), "capacity": total}
