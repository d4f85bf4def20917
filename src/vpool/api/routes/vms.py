from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import Page, accepted, fast_json
from vpool.api.schemas import VMCreate, VMPatch, VMResize, VMStop
from vpool.model.names import parse_size_gib, parse_size_mib
from vpool.model.errors import NotFound
from vpool.services.vms import POWER_OPS, CreateRequest

router = APIRouter(tags=["vms"])


@router.get("/vms")
def list_vms(page: Page = Depends(), state: str | None = None, host: str | None = None,
             ownership: str | None = None, name: str | None = None, group: str | None = None,
             cp=Depends(control_plane)):
    """Filters combine; `name` matches a prefix."""
    items, total = cp.vms.listing(page.limit, page.offset, state, host, ownership, name, group)
    return fast_json(page.wrap(items, total))


@router.post("/vms", status_code=202)
def create_vm(body: VMCreate, dry_run: bool = False, who: str = Depends(caller), cp=Depends(control_plane)):
    """With `dry_run=true`, nothing is made: 200 with the host placement would choose now and
    why, host by host (`host` null and `message` saying why when none will do)."""
    req = CreateRequest(
        name=body.name, cpus=body.cpus, flavor=body.flavor, image=body.image, host=body.host, group=body.group,
        start=body.start,
        memory_mib=parse_size_mib(body.memory, "memory") if body.memory is not None else None,
        disk_gib=parse_size_gib(body.disk, "disk") if body.disk is not None else None)
    if dry_run:
        return JSONResponse(cp.vms.preview(req))
    return accepted(cp.vms.create(req, requested_by=who))


@router.get("/vms/{ref}")
def show_vm(ref: str, cp=Depends(control_plane)):
    return cp.vms.show(ref)


@router.patch("/vms/{ref}")
def change_vm(ref: str, body: VMPatch, cp=Depends(control_plane)):
    """Settings beside the VM's size (POST /vms/{ref}/resize changes that)."""
    return cp.vms.change(ref, body.auto_balance)


@router.post("/vms/{ref}/stop", status_code=202)
def stop_vm(ref: str, body: VMStop | None = None, who: str = Depends(caller), cp=Depends(control_plane)):
    body = body or VMStop()
    return accepted(cp.vms.stop(ref, body.force, body.timeout, requested_by=who))


@router.post("/vms/{ref}/resize", status_code=202)
def resize_vm(ref: str, body: VMResize, who: str = Depends(caller), cp=Depends(control_plane)):
    """vCPUs, memory and disk; a running VM only grows: vCPUs and memory by hot-plug, the disk live."""
    memory = parse_size_mib(body.memory, "memory") if body.memory is not None else None
    disk = parse_size_gib(body.disk, "disk") if body.disk is not None else None
    return accepted(cp.resizes.resize(ref, body.cpus, memory, disk, requested_by=who))


@router.post("/vms/{ref}/{op}", status_code=202)
def power_vm(ref: str, op: str, who: str = Depends(caller), cp=Depends(control_plane)):
    if op == "adopt":
        return accepted(cp.vms.adopt(ref, requested_by=who))
    if op not in POWER_OPS:
        raise NotFound(f"there is no VM operation {op!r}; use start, stop, reboot, suspend, resume or adopt")
    return accepted(cp.vms.power(ref, op, requested_by=who))


@router.delete("/vms/{ref}", status_code=202)
def delete_vm(ref: str, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.vms.delete(ref, requested_by=who))
