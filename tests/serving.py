"""A control plane's API served by uvicorn on a free loopback port, for tests of real HTTP clients
(the CLI, Prometheus, `vpool lab up` registering its hosts)."""

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from vpool.api.app import create_app


@contextmanager
def served(cp):
    """Yields the base URL; the server is stopped afterwards (the control plane is the caller's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(cp), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def cli_env(cp, monkeypatch):
    """The API served, and the CLI pointed at it with the admin token."""
    with served(cp) as url:
        monkeypatch.setenv("VPOOL_URL", url)
        monkeypatch.setenv("VPOOL_TOKEN", cp.admin_token)
        yield url
