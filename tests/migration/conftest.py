"""A two-host lab of its own (mg1, mg2 on 10.92.0/10.82.0), one control plane on it, and the
tiny guest's counters read over HTTP: the ground truth a migration must not disturb.

The lab lives in a fixed directory, so a run that died before its teardown is cleaned by the
next one (down first, then up), and it is always taken down at the end.
"""

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from vpool.lab.hosts import Lab
from vpool.lab.network import Topology, lease_file
from vpool.model.states import TaskState
from vpool.services.controlplane import ControlPlane
from tests.core.conftest import Api, api, cp, eventually, make_settings, settings
from tests.guests import counters, status, wait_up

__all__ = ["api", "cp", "settings", "counters", "status"]  # the simulated-host fixtures serve the request tests

TOPOLOGY = Topology(prefix="mg", mgmt_bridge="mgmgmt0", guest_bridge="mgbr0", mgmt_subnet="10.92.0",
                    guest_subnet="10.82.0")
HOSTS = ("mg1", "mg2")


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0 or not shutil.which("libvirtd"):
        pytest.fail("the migration tests need root and libvirtd (make test installs it)")
    root = Path(tempfile.gettempdir()) / "vpool-test-mglab"
    Lab(root, TOPOLOGY).down(fence=False)  # what a run that died left behind...
    shutil.rmtree(root)  # ...down to the hosts' domain definitions: each run starts empty
    lab = Lab(root, TOPOLOGY)
    try:
        lab.up(len(HOSTS))
        yield lab
    finally:
        lab.down(fence=False)


@pytest.fixture(scope="session")
def pool(lab, tmp_path_factory):
    """The API over a control plane that has both lab hosts and the tiny image."""
    settings = dataclasses.replace(make_settings(tmp_path_factory.mktemp("mg")),
                                   dhcp_lease_files=(lease_file(lab.root),), sync_interval_s=2.0)
    cp = ControlPlane(settings)
    cp.start()
    api = Api(cp)
    try:
        for n, name in enumerate(HOSTS, start=1):
            api.task(api.post("/hosts", json={"uri": lab.uri(n), "name": name, "virt_type": "qemu",
                                              "network": f"bridge:{TOPOLOGY.guest_bridge}"}))
        api.task(api.post("/images/build-tiny"), timeout=600)
        yield api
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def guest(pool):
    """One tiny guest on mg1, deleted at the end; its address once its web server answers."""
    name = "mgvm"
    pool.task(pool.post("/vms", json={"name": name, "image": "tiny", "memory": "256M", "disk": "1G",
                                      "host": HOSTS[0]}), timeout=120)
    yield name, wait_up(pool, name)
    pool.task(pool.delete(f"/vms/{name}"), timeout=120)


def running_on(lab: Lab, uuid: str) -> list[str]:
    """The lab hosts where the VM's domain is active, asked over fresh connections."""
    found = []
    for n, name in enumerate(HOSTS, start=1):
        conn = libvirt.open(lab.uri(n))
        try:
            try:
                if conn.lookupByUUIDString(uuid).isActive():
                    found.append(name)
            except libvirt.libvirtError:
                pass
        finally:
            conn.close()
    return found


def in_phase(pool: Api, task_id: int, phase: Callable[[str], bool], timeout: float) -> dict | None:
    """The task once its message shows the phase while it runs, or once it has ended.

    A queued task is neither: it has not started, so its message says nothing yet.
    """
    def check():
        t = pool.get(f"/tasks/{task_id}").json()
        state = TaskState(t["state"])
        return t if state.finished or state == TaskState.running and phase(t["message"] or "") else None
    return eventually(check, timeout=timeout, interval=0.2)


def other(host: str) -> str:
    return HOSTS[1] if host == HOSTS[0] else HOSTS[0]
