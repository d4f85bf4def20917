"""Read-only plans on the live pool; the same JSON `vpool plan … --htools FILE --json` prints offline."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from vpool.api.deps import control_plane

router = APIRouter(tags=["plans"])


@router.get("/plans/export-htools", response_class=PlainTextResponse)
def export_htools(cp=Depends(control_plane)):
    """The pool in Ganeti's htools text format, so `hbal -t FILE` can check it."""
    return cp.plans.export_htools()


@router.get("/plans/{kind}")
def plan(kind: str, request: Request, cp=Depends(control_plane)):
    """kind: balance, consolidate, ha or capacity; query parameters are the plan's policy."""
    return cp.plans.plan(kind, dict(request.query_params))
