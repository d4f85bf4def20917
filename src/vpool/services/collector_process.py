"""The collection loop in a process of its own, and the API's handle on it.

At thousands of VMs an interval is hundreds of thousands of rates, detector updates and
samples; on the API's interpreter lock that work took the API below its targets (at 10,000
VMs, 32.5 creates/s and a list p99 of 126 ms, against 54.2/s and 41 ms without it). In its
own process it costs the API only a share of the machine and of the database.

The child opens its own libvirt connection per host (a connection cannot cross processes),
keeps its state in memory as the thread did, and shows it to the parent over a Unix socket in
a directory only this user can enter: `GET /latest[?host=]` (what `vpool top` shows) and
`GET /metrics` (the pool's Prometheus exposition, rendered here, off the API's lock). The
parent restarts a child that dies; a child whose parent is gone exits.

A `test:///` host is a simulation inside the process that opened it; the child cannot see
its VMs, so it reports such hosts stale and says why.
"""

import argparse
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

from vpool.config import Settings
from vpool.hypervisor.libvirt_driver import LibvirtDriver, start_event_loop
from vpool.lab.procs import end_child
from vpool.model.errors import HypervisorError, Unavailable
from vpool.services.alarms import AlarmService
from vpool.services.collector import TelemetryService
from vpool.services.hosts import HostService
from vpool.services.reconciler import Reconciler
from vpool.store.db import Store

SETTINGS_PASSED = ("data_dir", "database_url", "telemetry_interval_s", "telemetry_raw_retention_s",
                   "telemetry_5m_retention_s", "telemetry_1h_retention_s")
RESTART_DELAY_S = 2.0
ASK_TIMEOUT_S = 30.0


class CollectorProcess:
    """The parent's side: starts the child, restarts it when it dies, asks it what it saw."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._dir = Path(tempfile.mkdtemp(prefix="vpool-collector-"))  # 0700: only this user gets in
        self.socket = self._dir / "view.sock"
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                                    base_url="http://collector", timeout=ASK_TIMEOUT_S)

    def start(self) -> None:
        self._spawn()
        threading.Thread(target=self._supervise, name="collector-process", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            end_child(self._proc)
        self._client.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self) -> None:
        passed = {k: getattr(self.settings, k) for k in SETTINGS_PASSED} | {"data_dir": str(self.settings.data_dir)}
        self.socket.unlink(missing_ok=True)
        self._proc = subprocess.Popen([sys.executable, "-m", "vpool.services.collector_process",
                                       "--socket", str(self.socket), "--settings", json.dumps(passed)],
                                      stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            code = self._proc.wait()
            if self._stop.wait(RESTART_DELAY_S):
                return
            print(f"vpool: the telemetry collector process exited ({code}); starting it again", file=sys.stderr)
            self._spawn()

    def _ask(self, path: str, params: dict | None = None) -> httpx.Response:
        try:
            r = self._client.get(path, params=params)
            r.raise_for_status()
            return r
        except httpx.HTTPError as e:
            raise Unavailable(f"the telemetry collector process did not answer ({e.__class__.__name__}: {e}); "
                              "it is restarted by itself, try again in a few seconds") from None

    def latest(self, host: str | None) -> dict:
        return self._ask("/latest", {"host": host} if host is not None else None).json()

    def exposition(self) -> bytes:
        return self._ask("/metrics").content


# --- the child ------------------------------------------------------------------------------
class OwnConnections:
    """The child's libvirt connections, one per host, opened on first use (on a collection
    thread, so a host that black-holes the connect costs only its own reading) and dropped on
    the first error, so the next interval connects afresh."""

    def __init__(self):
        self._drivers: dict[int, LibvirtDriver] = {}
        self._lock = threading.Lock()

    def driver(self, host_id: int, uri: str):
        if uri.startswith("test:"):
            raise HypervisorError("a test:/// host is a simulation inside the API's process; the collector "
                                  "process cannot see its VMs")
        with self._lock:
            drv = self._drivers.get(host_id)
        if drv is None:
            drv = LibvirtDriver(uri)
            with self._lock:
                self._drivers[host_id] = drv
        return drv

    def failed(self, host_id: int) -> None:
        with self._lock:
            drv = self._drivers.pop(host_id, None)
        if drv is not None:
            drv.close()


class CollectorPlane:
    """What the loop needs of a control plane (store, host capacity, alarms, the reconciler's
    size check on what the loop reads) and nothing else: no task runner, no events, no host
    monitor, which stay the API process's."""

    def __init__(self, settings: Settings):
        start_event_loop()  # keepalive on the child's connections
        self.settings = settings
        self.store = Store(settings.database_url)
        self.hosts = HostService(self)
        self.alarms = AlarmService(self)
        self.reconciler = Reconciler(self.store, connections=None)  # sync_sizes reads no hypervisor
        self.telemetry = TelemetryService(self, OwnConnections())


def _view_handler(telemetry):
    class View(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/latest":
                host = parse_qs(url.query).get("host", [None])[0]
                body, kind = json.dumps(telemetry.current(host)).encode(), "application/json"
            elif url.path == "/metrics":
                body, kind = telemetry.exposition(), "text/plain; version=0.0.4"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # the parent logs what matters; requests are routine
            pass

    return View


class _ViewServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="vpool's telemetry collector (started by `vpool serve`)")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--settings", required=True, help="JSON of the parent's settings")
    args = parser.parse_args(argv)
    passed = json.loads(args.settings)
    settings = Settings(**{k: passed[k] for k in SETTINGS_PASSED} | {"data_dir": Path(passed["data_dir"])})
    parent = os.getppid()
    plane = CollectorPlane(settings)
    server = _ViewServer(args.socket, _view_handler(plane.telemetry))
    threading.Thread(target=server.serve_forever, name="collector-view", daemon=True).start()
    plane.telemetry.start()
    while os.getppid() == parent:  # the API process is gone: so is the reason to collect
        time.sleep(1.0)
    plane.telemetry.stop()
    shutil.rmtree(Path(args.socket).parent, ignore_errors=True)  # the parent died before it could


if __name__ == "__main__":
    main()
