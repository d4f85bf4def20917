"""What every route needs: the control plane and who is asking.

Both are coroutines: FastAPI runs a plain function dependency on a worker thread, two thread
hops per request for what is, for every token already seen, a lookup in memory."""

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from vpool.security.tokens import bearer_digest, known_name, look_up


async def control_plane(request: Request):
    return request.app.state.cp


async def caller(request: HTTPConnection) -> str:
    """The token's name; an HTTPConnection, so a WebSocket route can ask the same."""
    cache = request.app.state.token_cache
    d = bearer_digest(request.headers.get("authorization"))
    return known_name(cache, d) or await run_in_threadpool(look_up, request.app.state.cp.store, d, cache)
