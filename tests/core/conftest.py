"""A real control plane per test: its own data dir and SQLite file (or PostgreSQL), simulated
hosts on libvirt's test driver, and the API through FastAPI's TestClient."""

import dataclasses
import time

import pytest
from fastapi.testclient import TestClient

from vpool.api.app import create_app
from vpool.config import Settings
from vpool.lab.simhost import write_sim_host
from vpool.services.controlplane import ControlPlane

from ..postgres import postgres_server


class Api:
    """TestClient with the admin token, plus the waits a test needs."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.client = TestClient(create_app(cp))
        self.headers = {"Authorization": f"Bearer {cp.admin_token}"}

    def __getattr__(self, method):
        def call(path, **kw):
            return getattr(self.client, method)(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)
        return call

    def task(self, response, expect: str = "succeeded", timeout: float = 60) -> dict:
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(f"/tasks/{task_id}", params={"wait": 5}).json()
            if task["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                break
        assert task["state"] == expect, f"task {task['kind']} {task['state']}: {task.get('error')}"
        return task

    def add_sim_host(self, tmp_path, name: str, cpus: int = 32, memory_mib: int = 131072,
                     storage: str | None = None, network: str | None = None) -> dict:
        uri = write_sim_host(tmp_path / "simhosts", name, cpus, memory_mib, storage)
        self.task(self.post("/hosts", json={"uri": uri, "name": name, "network": network}))
        return self.get(f"/hosts/{name}").json()


def make_settings(tmp_path, database_url: str = "") -> Settings:
    """Tests drive the collection loop themselves, or on a thread: libvirt's test:/// hosts live
    inside this process, where a collector process could not see them (it has its own test)."""
    return dataclasses.replace(Settings(data_dir=tmp_path / "data", database_url=database_url),
                               sync_interval_s=1.0, reconnect_interval_s=1.0, telemetry_process=False)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def cp(settings):
    plane = ControlPlane(settings)
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture
def api(cp):
    return Api(cp)


def eventually(check, timeout: float = 15.0, interval: float = 0.1):
    """Polls until check() returns something truthy; the last value is returned either way."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    return value


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """One database for several control planes or stores: a SQLite file, or a PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        with postgres_server() as url:
            yield url
