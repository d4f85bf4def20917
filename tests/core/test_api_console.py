"""The serial console's WebSocket refuses in the API's own sentences (a real guest's console is
in test_guest.py: libvirt's test driver has no consoles)."""

import asyncio

import pytest

from vpool.api.routes.console import BACKLOG_BYTES, Outbox


@pytest.fixture
def pool(api, tmp_path):
    api.add_sim_host(tmp_path, "h1", cpus=4, memory_mib=8192)
    api.task(api.post("/vms", json={"name": "on", "cpus": 1, "memory": "512M", "disk": "1G"}))
    api.task(api.post("/vms", json={"name": "off", "cpus": 1, "memory": "512M", "disk": "1G", "start": False}))
    return api


def refusal(api, path: str, headers: dict) -> tuple[dict, int]:
    with api.client.websocket_connect(path, headers=headers) as ws:
        first = ws.receive_json()
        closed = ws.receive()
    return first, closed["code"]


@pytest.mark.parametrize("path, token, status, words", [
    ("/vms/on/console", None, 401, "needs a bearer token"),
    ("/vms/on/console", "Bearer nope", 401, "not valid"),
    ("/vms/nosuch/console", "admin", 404, "there is no VM 'nosuch'"),
    ("/vms/off/console", "admin", 409, "VM off is shutoff, and a serial console needs it running"),
    ("/vms/on/console", "admin", 502, "cannot open the serial console of on: "),  # test:/// has none
])
def test_a_console_that_cannot_open_says_why(pool, path, token, status, words):
    headers = pool.headers if token == "admin" else {"Authorization": token} if token else {}
    first, code = refusal(pool, path, headers)
    assert (first["status"], code) == (status, 4000 + status) and words in first["detail"], first


def test_a_client_that_falls_behind_loses_output_and_is_told_how_much():
    async def drain():
        box = Outbox()
        for _ in range(5):
            box.put(chunk)  # the fourth and fifth find the backlog full
        box.put("ended")
        return [await box.get() for _ in range(5)]

    chunk = b"x" * (BACKLOG_BYTES // 2)
    got = asyncio.run(drain())
    assert got[:3] == [chunk] * 3 and got[4] == "ended"
    assert f"[vpool: {BACKLOG_BYTES} bytes of console output lost".encode() in got[3], got[3]
