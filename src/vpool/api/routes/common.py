"""Pagination, ids in paths and the 202-with-a-task answer shared by the resource routes."""

from typing import Annotated

import orjson
from fastapi import Path, Query
from fastapi.responses import Response

from vpool.services.tasks import describe
from vpool.store.lookup import MAX_ROW_ID
from vpool.store.tables import Task


RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the id vpool gave it")]


class Page:
    def __init__(self, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_ROW_ID)):
        self.limit, self.offset = limit, offset

    def wrap(self, items: list, total: int) -> dict:
        return {"items": items, "total": total, "limit": self.limit, "offset": self.offset}


def accepted(task: Task) -> Response:
    return fast_json(describe(task), 202, {"Location": f"/tasks/{task.id}"})


def fast_json(data, status_code: int = 200, headers: dict | None = None) -> Response:
    """For large answers and frequent ones (task polls, 202s): orjson encodes dicts of plain
    values and datetimes directly, skipping FastAPI's generic encoder, which costs more than the
    query on a page of a hundred VMs."""
    return Response(orjson.dumps(data), status_code, headers, media_type="application/json")
