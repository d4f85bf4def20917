"""A VM's serial console over a WebSocket: binary frames both ways, the guest's bytes out and
keystrokes in. The first frame is a JSON text frame: {"console": NAME} once attached, or the
problem (status, title, detail, as problem+json) and then a close with code 4000 + status, so
a client can say why in the API's own sentence; {"ended": WHY} is the last frame of a session.

A WebSocket has no response to carry a 401, so the bearer token is checked here, after the
handshake, and a refusal is said the same way."""

import asyncio

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from vpool.api.deps import caller
from vpool.model.errors import VpoolError

router = APIRouter(tags=["vms"])
BACKLOG_BYTES = 1 << 20
_LOST = object()


class Outbox:
    """The guest's bytes on their way to the operator, then why the session ended. A client
    more than BACKLOG_BYTES behind loses output, as a serial line overruns, and is told how
    much: libvirt does not hold a console back, so the backlog would otherwise grow in the
    control plane's memory for as long as a guest floods its console at a slow client."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.queued = 0
        self.lost = 0

    def put(self, item: bytes | str) -> None:
        if isinstance(item, bytes):
            if self.queued > BACKLOG_BYTES:
                if not self.lost:
                    self.queue.put_nowait(_LOST)
                self.lost += len(item)
                return
            self.queued += len(item)
        self.queue.put_nowait(item)

    async def get(self) -> bytes | str:
        item = await self.queue.get()
        if item is _LOST:
            item, self.lost = f"\r\n[vpool: {self.lost} bytes of console output lost: this client read too " \
                              f"slowly]\r\n".encode(), 0
        elif isinstance(item, bytes):
            self.queued -= len(item)
        return item


@router.websocket("/vms/{ref}/console")
async def console(ws: WebSocket, ref: str, force: bool = False):
    cp = ws.app.state.cp
    await ws.accept()
    loop = asyncio.get_running_loop()
    out = Outbox()
    try:
        await caller(ws)
        pipe = await run_in_threadpool(cp.consoles.open, ref, force,
                                       lambda data: loop.call_soon_threadsafe(out.put, data),
                                       lambda why: loop.call_soon_threadsafe(out.put, why))
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
            out.put("")
        except VpoolError as e:
            out.put(e.detail)
        except (WebSocketDisconnect, RuntimeError):
            out.put("")

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
