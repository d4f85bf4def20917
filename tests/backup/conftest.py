"""One control plane on this machine's libvirtd for every real-guest test of issue 5, with its
own storage pool and backup repository, and helpers that read the tiny guest's counters."""

import dataclasses
import hashlib
import os
import subprocess
import tempfile
import urllib.request

import libvirt
import pytest

from vpool.hypervisor import localhost
from vpool.services.controlplane import ControlPlane
from tests.core.conftest import Api, api, cp, eventually, make_settings, settings

POOL = "vpool-bk-test"
POOL_PATH = "/var/lib/vpool/bk-test-images"

__all__ = ["Api", "api", "cp", "eventually", "settings"]  # the simulated-host fixtures serve here too


@pytest.fixture(scope="session")
def guest_api(tmp_path_factory):
    localhost.fix_kvm_permissions()
    try:
        localhost.start_libvirtd(tmp_path_factory.mktemp("logs"))
    except RuntimeError as e:
        pytest.fail(f"real-guest tests need a local libvirtd: {e}")
    tmp = tmp_path_factory.mktemp("bk")
    settings = dataclasses.replace(make_settings(tmp), storage_pool=POOL, storage_path=POOL_PATH)
    cp = ControlPlane(settings)
    cp.start()
    api = Api(cp)
    api.task(api.post("/hosts", json={"uri": localhost.LOCAL_URI, "name": "local"}))
    api.task(api.post("/images/build-tiny"), timeout=600)
    yield api
    for vm in api.get("/vms", params={"limit": 1000}).json()["items"]:
        if vm["ownership"] == "managed" and vm["host"] == "local":
            api.task(api.delete(f"/vms/{vm['name']}"), timeout=120)
    assert api.delete("/images/tiny").status_code == 204  # and with it its copy in the test pool
    cp.stop()


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


def http(ip: str, path: str = "/") -> str | None:
    try:
        with urllib.request.urlopen(f"http://{ip}{path}", timeout=2) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def status(ip: str) -> dict:
    text = http(ip, "/cgi-bin/status") or ""
    return {k: v for k, v in (kv.split("=", 1) for kv in text.split() if "=" in kv)}


def wait_up(api: Api, name: str) -> str:
    """The guest's address once its web server answers with its name."""
    ip = eventually(lambda: api.get(f"/vms/{name}").json()["ip"], timeout=90, interval=0.5)
    assert ip, f"{name} never got an address"
    assert eventually(lambda: http(ip) == name, timeout=120, interval=0.5), f"{name} never answered"
    return ip


def counters(ip: str) -> dict:
    s = eventually(lambda: status(ip).get("tick") and status(ip), timeout=30, interval=0.3)
    return {k: float(s[k]) if k == "uptime" else int(s[k]) for k in ("tick", "disk", "boots", "uptime")}


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
