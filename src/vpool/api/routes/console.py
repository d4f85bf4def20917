"""A VM's serial console over a WebSocket: binary frames both ways, the guest's bytes out and
keystrokes in. The first frame is a JSON text frame: {"console": NAME} once attached, or the
problem (status, title, detail, as problem+json) and then a close with code 4000 + status, so
a client can say why in the API's own sentence; {"ended": WHY} is the last frame of a session.

A WebSocket has no response to carry a 401, so the bearer token is checked here, after the
handshake, and a refusal is said the same way."""

import asyncio

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from vpool.model.errors import VpoolError
from vpool.security.tokens import bearer_digest, known_name, look_up

router = APIRouter(tags=["vms"])


@router.websocket("/vms/{ref}/console")
async def console(ws: WebSocket, ref: str, force: bool = False):
    cp = ws.app.state.cp
    await ws.accept()
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[bytes | str] = asyncio.Queue()
    try:
        d = bearer_digest(ws.headers.get("authorization"))
        known_name(ws.app.state.token_cache, d) or await run_in_threadpool(look_up, cp.store, d,
                                                                            ws.app.state.token_cache)
        pipe = await run_in_threadpool(cp.consoles.open, ref, force,
                                       lambda data: loop.call_soon_threadsafe(out.put_nowait, data),
                                       lambda why: loop.call_soon_threadsafe(out.put_nowait, why))
    except VpoolError as e:
        await ws.send_json({"type": "about:blank", "status": e.status, "title": e.title, "detail": e.detail})
        await ws.close(code=4000 + e.status)
        return
    await ws.send_json({"console": pipe.name})

    async def operator_to_guest() -> None:
        """Keystrokes in; "" in `out` when the operator leaves, a sentence when the guest stops reading."""
        try:
            while (message := await ws.receive())["type"] != "websocket.disconnect":
                await run_in_threadpool(pipe.write, message.get("bytes") or (message.get("text") or "").encode())
            out.put_nowait("")
        except VpoolError as e:
            out.put_nowait(e.detail)
        except (WebSocketDisconnect, RuntimeError):
            out.put_nowait("")

    keystrokes = asyncio.create_task(operator_to_guest())
    try:
        while isinstance(item := await out.get(), bytes):
            await ws.send_bytes(item)
        if item:  # the guest, the host or a write ended it: say so; an operator who left hears nothing
            await ws.send_json({"ended": item})
            await ws.close()
    except (WebSocketDisconnect, RuntimeError):
        pass  # the operator went while output was on its way
    finally:
        keystrokes.cancel()
        await run_in_threadpool(pipe.close)
