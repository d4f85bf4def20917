from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import accepted

router = APIRouter(tags=["templates and clones"])


class TemplateCreate(BaseModel):
    name: str | None = Field(None, description="Image name (default tpl-VM).")


class CloneCreate(BaseModel):
    name: str
    mode: str | None = Field(None, description="linked (templates only, their default) or full (the default for VMs).")
    host: str | None = None
    start: bool = True


@router.post("/vms/{ref}/template", status_code=202)
def make_template(ref: str, body: TemplateCreate | None = None, who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.clones.template(ref, (body or TemplateCreate()).name, requested_by=who))


@router.post("/vms/{ref}/clone", status_code=202)
def clone(ref: str, body: CloneCreate, who: str = Depends(caller), cp=Depends(control_plane)):
    """`ref` is a VM or a template image."""
    return accepted(cp.clones.clone(ref, body.name, body.mode, body.host, body.start, requested_by=who))
