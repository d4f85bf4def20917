import asyncio

from fastapi import APIRouter, Depends, Query

from vpool.api.deps import control_plane
from vpool.api.routes.common import Page, RowId, fast_json
from vpool.model.states import TaskState

router = APIRouter(tags=["tasks"])


@router.get("/tasks")
def list_tasks(page: Page = Depends(), state: str | None = None, kind: str | None = None,
               target: str | None = None, cp=Depends(control_plane)):
    items, total = cp.runner.listing(page.limit, page.offset, state, kind, target)
    return page.wrap(items, total)


@router.get("/tasks/{task_id}")
async def show_task(task_id: RowId, wait: float = Query(0, ge=0, le=60, description="seconds to wait for the end"),
                    cp=Depends(control_plane)):
    """With wait > 0 the answer comes when the task ends or the time is up (long polling). While
    the task runs on this control plane's runner the wait looks at the runner, not the store, and
    reads the row once it has ended: clients that follow hundreds of tasks at once would otherwise
    read the store ten times a second each."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while cp.runner.running(task_id) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    task = cp.runner.get(task_id)
    while not TaskState(task["state"]).finished and loop.time() < deadline:
        await asyncio.sleep(0.1)  # not started here yet: its row is all there is to watch
        task = cp.runner.get(task_id)
    return fast_json(task)


@router.post("/tasks/{task_id}/cancel", status_code=202)
def cancel_task(task_id: RowId, cp=Depends(control_plane)):
    return cp.runner.request_cancel(task_id)
