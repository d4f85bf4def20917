"""A host that stops answering goes down within 30 s and comes back up by itself.

The host is a real libvirtd of a one-host lab (its own network namespace, reached over
qemu+tcp); freezing it with SIGSTOP is a host that hangs, not one that closes its socket, so
only libvirt's keepalive can tell. Coming back is vpool's part; that the daemon survives its
own wake-up is libvirt's, and a crash there is restarted the way systemd would."""

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from vpool.lab.hosts import Lab
from vpool.lab.network import Topology

from .conftest import eventually

TOPOLOGY = Topology(prefix="hm", mgmt_bridge="hmmgmt0", guest_bridge="hmbr0", mgmt_subnet="10.90.0",
                    guest_subnet="10.80.0")


@pytest.fixture(scope="module")
def one_host_lab():
    if os.geteuid() != 0 or not shutil.which("libvirtd"):
        pytest.fail("this test needs root and libvirtd (make test installs it)")
    # A fixed directory: if an earlier run died before its teardown, down() finds what it left.
    lab = Lab(Path(tempfile.gettempdir()) / "vpool-test-hmlab", TOPOLOGY)
    lab.down(fence=False)
    try:
        lab.up(1)
        yield lab
    finally:
        lab.down(fence=False)


def test_frozen_host_goes_down_then_up(one_host_lab, api):
    lab = one_host_lab
    api.task(api.post("/hosts", json={"uri": lab.uri(1), "name": "frozen", "virt_type": "qemu"}))
    assert api.get("/hosts/frozen").json()["state"] == "up"
    pid = lab.status()[0].pids["libvirtd"]
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        assert eventually(lambda: api.get("/hosts/frozen").json()["state"] == "down", timeout=40, interval=0.5)
        took = time.monotonic() - stopped
        host = api.get("/hosts/frozen").json()
        assert host["error"]
        r = api.post("/vms", json={"name": "nowhere", "cpus": 1, "memory": "128M", "disk": "1G", "host": "frozen"})
        assert r.status_code == 409
    finally:
        os.kill(pid, signal.SIGCONT)
    up = lambda: api.get("/hosts/frozen").json()["state"] == "up"  # noqa: E731
    eventually(lambda: up() or not lab.status()[0].libvirtd, timeout=30, interval=0.5)
    if not lab.status()[0].libvirtd:
        # libvirt 9.0's daemon now and then segfaults on waking, while it drops the event
        # callbacks of the client whose keepalive gave up (dmesg: "libvirtd[…]: segfault …
        # in libvirt.so"). systemd's libvirtd.service restarts it on failure; so does this.
        print("libvirtd crashed on waking up; restarted, as systemd would")
        lab.up(1)
    assert eventually(up, timeout=30, interval=0.5), \
        f"still not up 30 s after SIGCONT: {api.get('/hosts/frozen').json()}"
    print(f"down after {took:.1f} s")
