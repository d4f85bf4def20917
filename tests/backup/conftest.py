"""One control plane on this machine's libvirtd for every real-guest test of issue 5, with its
own storage pool and backup repository, and helpers that read the tiny guest's counters."""

import hashlib
import os
import subprocess
import tempfile

import libvirt
import pytest

from vpool.hypervisor import localhost
from tests.core.conftest import Api, api, cp, eventually, settings
from tests.guests import counters, http, local_control_plane, status, wait_up

POOL = "vpool-bk-test"
POOL_PATH = "/var/lib/vpool/bk-test-images"

__all__ = ["Api", "api", "cp", "eventually", "settings", "counters", "http", "status", "wait_up"]  # the simulated-host fixtures serve here too


@pytest.fixture(scope="session")
def guest_api(tmp_path_factory):
    with local_control_plane(tmp_path_factory, POOL, POOL_PATH) as api:
        yield api
        for vm in api.get("/vms", params={"limit": 1000}).json()["items"]:
            if vm["ownership"] == "managed" and vm["host"] == "local":
                api.task(api.delete(f"/vms/{vm['name']}"), timeout=120)
        assert api.delete("/images/tiny").status_code == 204  # and with it its copy in the test pool


@pytest.fixture
def vms(guest_api):
    """Creates VMs on request and deletes every one of them (and drill leftovers) afterwards."""
    made = []

    def create(name: str, start: bool = True) -> dict:
        made.append(name)
        guest_api.task(guest_api.post("/vms", json={"name": name, "image": "tiny", "memory": "256M", "disk": "1G",
                                                    "start": start}), timeout=120)
        return guest_api.get(f"/vms/{name}").json()

    create.made = made
    yield create
    for name in made:
        if guest_api.get(f"/vms/{name}").status_code == 200:
            guest_api.task(guest_api.delete(f"/vms/{name}"), timeout=120)


def disk_digest(path: str) -> str:
    """SHA-256 of the disk as the guest sees it (backing chain folded in, as raw bytes)."""
    with tempfile.TemporaryDirectory() as work:
        raw = os.path.join(work, "disk.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, raw], check=True)
        h = hashlib.sha256()
        with open(raw, "rb") as f:
            for chunk in iter(lambda: f.read(4 * 2**20), b""):
                h.update(chunk)
        return h.hexdigest()


def volume_path(name: str) -> str | None:
    path = os.path.join(POOL_PATH, name)
    return path if os.path.exists(path) else None


def domain(name: str):
    conn = libvirt.open(localhost.LOCAL_URI)
    return conn, conn.lookupByName(name)
