"""`vpool serve` as an operator runs it: SIGTERM stops the control plane cleanly, so the
collector process it started goes with it and leaves no socket directory behind."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from tests.core.conftest import eventually
from vpool.store.db import Store
from vpool.store.tables import ControlPlaneLease

pytestmark = pytest.mark.guest  # `vpool serve` starts the local libvirtd if none runs


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together while they are picked)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_sigterm_stops_serve_and_its_collector(tmp_path):
    [port] = _free_ports(1)
    env = {**os.environ, "VPOOL_DATA_DIR": str(tmp_path / "data"), "VPOOL_TELEMETRY_INTERVAL": "1",
           "VPOOL_TELEMETRY_PROCESS": "1"}
    serve = subprocess.Popen([sys.executable, "-m", "vpool.cli.main", "serve", "--port", str(port),
                              "--no-register-local"], env=env, stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: _healthy(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2)

        def collector() -> tuple[int, str] | None:
            for pid in _children(serve.pid):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"vpool.services.collector_process" in argv:
                    return pid, argv[argv.index(b"--socket") + 1].decode()
            return None
        found = eventually(collector, timeout=30)
        assert found, "vpool serve started no collector process"
        child, sock = found
        assert Path(sock).parent.is_dir()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    assert not Path(f"/proc/{child}").exists()  # reaped by the parent's cp.stop(), not orphaned
    assert not Path(sock).parent.exists()


def test_a_second_serve_on_the_same_database_is_refused(tmp_path):
    ports = _free_ports(2)
    env = {**os.environ, "VPOOL_DATA_DIR": str(tmp_path / "data"), "VPOOL_TELEMETRY_INTERVAL": "0"}
    argv = [sys.executable, "-m", "vpool.cli.main", "serve", "--no-register-local", "--port"]
    first = subprocess.Popen(argv + [str(ports[0])], env=env, stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: _healthy(f"http://127.0.0.1:{ports[0]}"), timeout=60, interval=0.2)
        second = subprocess.run(argv + [str(ports[1])], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.startswith("error: another vpool control plane (pid "), second.stderr
        assert f"pid {first.pid} on " in second.stderr
        assert _healthy(f"http://127.0.0.1:{ports[0]}")
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    again = subprocess.Popen(argv + [str(ports[1])], env=env, stderr=subprocess.DEVNULL)
    try:  # the first one stopped cleanly and gave the database back
        assert eventually(lambda: _healthy(f"http://127.0.0.1:{ports[1]}"), timeout=60, interval=0.2)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(30)


def test_a_standby_serve_takes_over_when_the_first_dies(tmp_path):
    ports = _free_ports(2)
    env = {**os.environ, "VPOOL_DATA_DIR": str(tmp_path / "data"), "VPOOL_TELEMETRY_INTERVAL": "0"}
    argv = [sys.executable, "-m", "vpool.cli.main", "serve", "--no-register-local", "--port"]
    first = subprocess.Popen(argv + [str(ports[0])], env=env, stderr=subprocess.DEVNULL)
    standby = None
    try:
        assert eventually(lambda: _healthy(f"http://127.0.0.1:{ports[0]}"), timeout=60, interval=0.2)
        log = tmp_path / "standby.log"
        with log.open("w") as out:
            standby = subprocess.Popen(argv + [str(ports[1]), "--standby"], env=env, stderr=out)
        assert eventually(lambda: "standing by" in log.read_text(), timeout=30, interval=0.2), log.read_text()
        assert f"(pid {first.pid} on " in log.read_text()
        assert not _healthy(f"http://127.0.0.1:{ports[1]}")  # a standby serves nothing
        first.kill()  # no clean stop: the lease stays behind, held by a dead process
        first.wait(30)
        assert eventually(lambda: _healthy(f"http://127.0.0.1:{ports[1]}"), timeout=60, interval=0.2)
        assert f"took over the database from a control plane that is gone (pid {first.pid} on " in log.read_text()
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(30) == 0
    finally:
        for proc in (first, standby):
            if proc and proc.poll() is None:
                proc.kill()


def test_serve_stops_itself_when_another_control_plane_takes_its_lease(tmp_path):
    """Fencing: had a standby taken over while this one was frozen or cut off, the two must not
    both drive the hosts; this one stops, cleanly."""
    [port] = _free_ports(1)
    env = {**os.environ, "VPOOL_DATA_DIR": str(tmp_path / "data"), "VPOOL_TELEMETRY_INTERVAL": "0"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "vpool.cli.main", "serve", "--no-register-local",
                                  "--port", str(port)], env=env, stderr=out)
    try:
        assert eventually(lambda: _healthy(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2)
        store = Store(f"sqlite:///{tmp_path / 'data' / 'vpool.db'}")
        with store.session() as s:
            s.execute(update(ControlPlaneLease).values(token="a-standby-took-it"))
            s.commit()
        store.close()
        assert serve.wait(60) == 0
        assert "another control plane took this database's lease" in log.read_text()
        assert "(frozen, or cut off from the database); stopping" in log.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
