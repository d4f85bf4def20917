"""Real guests in tests: a control plane on this machine's libvirtd, and the tiny guest's own
view of itself read over HTTP (the ground truth a power operation, a revert or a migration
must leave as expected)."""

import dataclasses
import urllib.request
from contextlib import contextmanager

import libvirt
import pytest

from vpool.hypervisor import localhost
from vpool.services.controlplane import ControlPlane

from tests.core.conftest import Api, eventually, make_settings


def http(ip: str, path: str = "/") -> str | None:
    try:
        with urllib.request.urlopen(f"http://{ip}{path}", timeout=3) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def status(ip: str) -> dict:
    """host, ip, load, uptime, tick (a 1 Hz counter in RAM), disk (one on /dev/vda), boots, disk_sectors
    (/dev/vda's size in 512-byte sectors, as the guest sees it), ..."""
    text = http(ip, "/cgi-bin/status") or ""
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


COUNTERS = ("tick", "disk", "boots", "uptime")


def counters(ip: str) -> dict:
    """The guest's counters, read again while one is empty: the guest rewrites its counter files
    in place, so a read can fall between the truncate and the write."""
    def read():
        s = status(ip)
        return s if all(s.get(k, "").replace(".", "", 1).isdigit() for k in COUNTERS) else None

    s = eventually(read, timeout=30, interval=0.3)
    assert s, f"{ip} never reported its counters"
    return {k: float(s[k]) if k == "uptime" else int(s[k]) for k in COUNTERS}


def wait_up(api: Api, name: str) -> str:
    """The guest's address once its web server answers with its name."""
    ip = eventually(lambda: api.get(f"/vms/{name}").json()["ip"], timeout=90, interval=0.5)
    assert ip, f"{name} never got an address"
    assert eventually(lambda: http(ip) == name, timeout=120, interval=0.5), f"{name} never answered"
    return ip


def remove_domains(names) -> None:
    """A run killed half-way leaves its guests in libvirtd; they would be adopted as unmanaged."""
    conn = libvirt.open(localhost.LOCAL_URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name() in names:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()


@contextmanager
def local_control_plane(tmp_path_factory, storage_pool: str, storage_path: str, leftovers=()):
    """The API over a control plane with this machine as host `local` (its own storage pool,
    so tests never touch an operator's) and the tiny image built; ``leftovers`` are domains an
    earlier killed run may have left (removed once libvirtd runs: on a fresh machine it does
    not run before this)."""
    localhost.fix_kvm_permissions()
    try:
        localhost.start_libvirtd(tmp_path_factory.mktemp("logs"))
    except RuntimeError as e:
        pytest.fail(f"real-guest tests need a local libvirtd: {e}")
    remove_domains(leftovers)
    settings = dataclasses.replace(make_settings(tmp_path_factory.mktemp("guests")), storage_pool=storage_pool,
                                   storage_path=storage_path)
    cp = ControlPlane(settings)
    cp.start()
    try:
        api = Api(cp)
        api.task(api.post("/hosts", json={"uri": localhost.LOCAL_URI, "name": "local"}))
        api.task(api.post("/images/build-tiny"), timeout=600)
        yield api
    finally:
        cp.stop()
