"""Read-only plans on the live pool; the same JSON `vpool plan … --htools FILE --json` prints offline."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from vpool.api.deps import control_plane
from vpool.model.errors import Invalid
from vpool.placement.report import htools_text, plan_report
from vpool.services.pool import cluster_state

router = APIRouter(tags=["plans"])


@router.get("/plans/export-htools", response_class=PlainTextResponse)
def export_htools(cp=Depends(control_plane)):
    """The pool in Ganeti's htools text format, so `hbal -t FILE` can check it."""
    with cp.store.session() as s:
        return htools_text(cluster_state(s))


@router.get("/plans/{kind}")
def plan(kind: str, request: Request, cp=Depends(control_plane)):
    """kind: balance, consolidate, ha or capacity; query parameters are the plan's policy."""
    with cp.store.session() as s:
        state = cluster_state(s)
    try:
        return plan_report(kind, state, dict(request.query_params))
    except ValueError as e:
        raise Invalid(str(e)) from None
