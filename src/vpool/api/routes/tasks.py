import asyncio

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select

from vpool.api.deps import control_plane
from vpool.api.routes.common import Page, task_dict
from vpool.model.errors import Conflict, NotFound
from vpool.model.states import TaskState
from vpool.store.tables import Task

router = APIRouter(tags=["tasks"])


def _get(cp, task_id: int) -> dict:
    with cp.store.session() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"there is no task {task_id}")
        return task_dict(task)


@router.get("/tasks")
def list_tasks(page: Page = Depends(), state: str | None = None, kind: str | None = None,
               target: str | None = None, cp=Depends(control_plane)):
    where = [col == value for col, value in ((Task.state, state), (Task.kind, kind), (Task.target, target)) if value]
    with cp.store.session() as s:
        total = s.scalar(select(func.count(Task.id)).where(*where))
        rows = s.scalars(select(Task).where(*where).order_by(Task.id.desc()).limit(page.limit).offset(page.offset))
        return page.wrap([task_dict(t) for t in rows], total)


@router.get("/tasks/{task_id}")
async def show_task(task_id: int, wait: float = Query(0, ge=0, le=60, description="seconds to wait for the end"),
                    cp=Depends(control_plane)):
    """With wait > 0 the answer comes when the task ends or the time is up (long polling)."""
    task = _get(cp, task_id)
    deadline = asyncio.get_running_loop().time() + wait
    while not TaskState(task["state"]).finished and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        task = _get(cp, task_id)
    return task


@router.post("/tasks/{task_id}/cancel", status_code=202)
def cancel_task(task_id: int, cp=Depends(control_plane)):
    task = _get(cp, task_id)
    if TaskState(task["state"]).finished:
        raise Conflict(f"task {task_id} has already {task['state']}")
    cp.runner.cancel(task_id)
    return _get(cp, task_id)
