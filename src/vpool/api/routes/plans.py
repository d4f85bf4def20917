"""Plans on the live pool (the same JSON `vpool plan … --htools FILE --json` prints offline), and
the task that applies a balance or consolidation plan."""

import json

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import PlainTextResponse

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import accepted

router = APIRouter(tags=["plans"])


@router.get("/plans/export-htools", response_class=PlainTextResponse)
def export_htools(cp=Depends(control_plane)):
    """The pool in Ganeti's htools text format, so `hbal -t FILE` can check it."""
    return cp.plans.export_htools()


@router.get("/plans/drs")
def drs_status(cp=Depends(control_plane)):
    """DRS automation: its policy and what its last run did."""
    return cp.drs.status()


@router.patch("/plans/drs")
def drs_policy(body: dict, cp=Depends(control_plane)):
    """Any of the policy's fields (automation off|automatic, interval_s, max_moves, min_gain,
    migration_cost, load_window_s); the rest keep their values."""
    return cp.drs.set_policy(body)


@router.post("/plans/drs/run")
def drs_run(cp=Depends(control_plane)):
    """One DRS run now, whatever the automation: the plan.apply task it started, if any."""
    task_id = cp.drs.run_once()
    return cp.drs.status() | {"task": task_id}


@router.get("/plans/{kind}")
def plan(kind: str, request: Request, cp=Depends(control_plane)):
    """kind: balance, consolidate, ha or capacity; query parameters are the plan's policy."""
    return cp.plans.plan(kind, dict(request.query_params))


@router.post("/plans/{kind}/apply", status_code=202)
def apply_plan(kind: str, params: dict[str, str | int | float | bool] = Body(default={}),
               who: str = Depends(caller), cp=Depends(control_plane)):
    """Makes the plan afresh and runs its moves as live migrations, stage by stage (balance or
    consolidate); the body holds the plan's policy, as the query of GET /plans/{kind} does."""
    return accepted(cp.plans.apply(kind, {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()},
                                   requested_by=who))
