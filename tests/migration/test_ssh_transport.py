"""Hosts reached over qemu+ssh, the way Proxmox and most libvirt operators reach theirs.

A lab of its own (ss1, ss2), each running a real OpenSSH server in its namespaces and added as
``qemu+ssh://root@ssN:2222/system?keyfile=…&no_verify=1``, so libvirt's client runs the real
``ssh`` and the remote ``virt-ssh-helper``. The image upload, the guest's create and start go
through the ssh connection; each live migration has the source's libvirtd open the
destination's qemu+ssh URI itself, as peer-to-peer migration does, so both directions are ssh
to ssh. The test's ``ssh`` keeps its known-hosts file in the test's directory (a wrapper first
on PATH), and so does each host's (root's home, in that host's mount namespace only, is the
test's), so the machine's own ~/.ssh is never written.
"""

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from vpool.lab.hosts import Lab
from vpool.lab.network import Topology, lease_file
from vpool.services.controlplane import ControlPlane
from tests.core.conftest import Api, make_settings
from tests.guests import counters, wait_up

pytestmark = pytest.mark.guest

TOPOLOGY = Topology(prefix="ss", mgmt_bridge="ssmgmt0", guest_bridge="ssbr0", mgmt_subnet="10.94.0",
                    guest_subnet="10.84.0")
PORT = 2222


def _sshd(lab: Lab, n: int, directory: Path) -> subprocess.Popen:
    """An sshd inside host n's namespaces that takes root with the test's one client key."""
    config = directory / f"sshd_config{n}"
    config.write_text("\n".join([
        f"Port {PORT}", f"ListenAddress {TOPOLOGY.host_address(n)}", f"HostKey {directory / 'host_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PidFile none", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    return subprocess.Popen(lab._enter(n) + [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f",
                                             str(config)],
                            stdout=subprocess.DEVNULL, stderr=(directory / f"sshd{n}.log").open("w"))


def _ssh_uri(n: int, key: Path) -> str:
    return f"qemu+ssh://root@{TOPOLOGY.host_address(n)}:{PORT}/system?keyfile={key}&no_verify=1"


def _wait_for_sshd(n: int, key: Path) -> None:
    deadline = time.monotonic() + 20
    while subprocess.run(["ssh", "-i", str(key), "-p", str(PORT), "-o", "BatchMode=yes",
                          "-o", "StrictHostKeyChecking=no", f"root@{TOPOLOGY.host_address(n)}", "true"],
                         capture_output=True).returncode and time.monotonic() < deadline:
        time.sleep(0.3)


@pytest.fixture(scope="module")
def ssh_pool(tmp_path_factory):
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        pytest.fail("the ssh transport test needs root and sshd (make test installs openssh-server)")
    root = Path(tempfile.gettempdir()) / "vpool-test-sslab"
    Lab(root, TOPOLOGY).down(fence=False)
    shutil.rmtree(root, ignore_errors=True)
    lab = Lab(root, TOPOLOGY)
    directory = tmp_path_factory.mktemp("ssh")
    wrapper = directory / "bin" / "ssh"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -o UserKnownHostsFile={directory}/known_hosts "
                       '"$@"\n')
    wrapper.chmod(0o755)
    path = os.environ["PATH"]
    sshds, cp = [], None
    try:
        lab.up(2)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                           check=True)
        shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
        key = directory / "client_key"
        homes = {}
        for n in (1, 2):
            sshds.append(_sshd(lab, n, directory))
            # each host's libvirtd runs ssh itself to migrate (peer to peer): in that host's mount
            # namespace only, root's home is the test's, so its known_hosts lands there
            homes[n] = directory / f"home{n}"
            (homes[n] / ".ssh").mkdir(parents=True)
            subprocess.run(lab._enter(n) + ["mount", "--bind", str(homes[n]), "/root"], check=True)
        os.environ["PATH"] = f"{wrapper.parent}:{path}"
        settings = dataclasses.replace(make_settings(tmp_path_factory.mktemp("ss")),
                                       dhcp_lease_files=(lease_file(lab.root),), sync_interval_s=2.0)
        cp = ControlPlane(settings)
        cp.start()
        api = Api(cp)
        network = f"bridge:{TOPOLOGY.guest_bridge}"
        for n in (1, 2):
            _wait_for_sshd(n, key)
            api.task(api.post("/hosts", json={"uri": _ssh_uri(n, key), "name": f"ss{n}", "virt_type": "qemu",
                                              "network": network}))
        api.task(api.post("/images/build-tiny"), timeout=600)
        yield api, homes
    finally:
        if cp is not None:
            cp.stop()
        os.environ["PATH"] = path
        for sshd in sshds:
            sshd.terminate()
            sshd.wait(10)
        lab.down(fence=False)


def test_hosts_over_ssh_run_and_hand_a_guest_over_and_back(ssh_pool):
    api, homes = ssh_pool
    hosts = {h["name"]: h for h in api.get("/hosts").json()["items"]}
    for name in ("ss1", "ss2"):
        assert hosts[name]["uri"].startswith("qemu+ssh://") and hosts[name]["state"] == "up"
        assert hosts[name]["capacity"]["memory_mib"]["capacity"] > 0
    assert hosts["ss1"]["storage"] == hosts["ss2"]["storage"]   # the marker was read over ssh too
    api.task(api.post("/vms", json={"name": "sshvm", "image": "tiny", "memory": "256M", "disk": "1G",
                                    "host": "ss1"}), timeout=180)
    try:
        ip = wait_up(api, "sshvm")
        before = counters(ip)
        # ss1's libvirtd reaches ss2 over ssh, with the URI vpool has for it
        api.task(api.post("/vms/sshvm/migrate", json={"to": "ss2"}), timeout=300)
        vm = api.get("/vms/sshvm").json()
        assert vm["host"] == "ss2" and vm["state"] == "running"
        assert (homes[1] / ".ssh" / "known_hosts").read_text()   # ss1's own ssh went to ss2
        after = counters(ip)
        assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
        # and back: ss2's libvirtd reaches ss1 over ssh
        api.task(api.post("/vms/sshvm/migrate", json={"to": "ss1"}), timeout=300)
        vm = api.get("/vms/sshvm").json()
        assert vm["host"] == "ss1" and vm["state"] == "running"
        assert (homes[2] / ".ssh" / "known_hosts").read_text()   # ss2's own ssh went to ss1
        back = counters(ip)
        assert back["boots"] == before["boots"] and back["uptime"] > after["uptime"]
    finally:
        api.task(api.delete("/vms/sshvm"), timeout=120)
