"""The serial console's WebSocket refuses in the API's own sentences (a real guest's console is
in test_guest.py: libvirt's test driver has no consoles)."""

import pytest


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
