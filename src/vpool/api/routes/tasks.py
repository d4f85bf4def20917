import asyncio

from fastapi import APIRouter, Depends, Query

from vpool.api.deps import control_plane
from vpool.api.routes.common import Page
from vpool.model.states import TaskState

router = APIRouter(tags=["tasks"])


@router.get("/tasks")
def list_tasks(page: Page = Depends(), state: str | None = None, kind: str | None = None,
               target: str | None = None, cp=Depends(control_plane)):
    items, total = cp.runner.listing(page.limit, page.offset, state, kind, target)
    return page.wrap(items, total)


@router.get("/tasks/{task_id}")
async def show_task(task_id: int, wait: float = Query(0, ge=0, le=60, description="seconds to wait for the end"),
                    cp=Depends(control_plane)):
    """With wait > 0 the answer comes when the task ends or the time is up (long polling)."""
    task = cp.runner.get(task_id)
    deadline = asyncio.get_running_loop().time() + wait
    while not TaskState(task["state"]).finished and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        task = cp.runner.get(task_id)
    return task


@router.post("/tasks/{task_id}/cancel", status_code=202)
def cancel_task(task_id: int, cp=Depends(control_plane)):
    return cp.runner.request_cancel(task_id)
