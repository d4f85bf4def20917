"""A host reached over qemu+ssh, the way Proxmox and most libvirt operators reach theirs.

A lab of its own (ss1, ss2): ss1 runs a real OpenSSH server in its namespaces and is added as
``qemu+ssh://root@ss1:2222/system?keyfile=…&no_verify=1``, so libvirt's client runs the real
``ssh`` and the remote ``virt-ssh-helper``; ss2 is reached over TCP. The image upload, the
guest's create and start and a live migration away from ss1 all go through the ssh
connection; the migration back to ss1 has ss2's libvirtd open ss1's qemu+ssh URI itself, as
peer-to-peer migration does. The test's ``ssh`` keeps its known-hosts file in the test's
directory (a wrapper first on PATH), and so does ss2's (root's home, in ss2's mount namespace
only, is the test's), so the machine's own ~/.ssh is never written.
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


def _sshd(lab: Lab, directory: Path) -> tuple[subprocess.Popen, Path]:
    """An sshd inside ss1's namespaces that takes root with one key; returns it and the key."""
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                       check=True)
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {PORT}", f"ListenAddress {TOPOLOGY.host_address(1)}", f"HostKey {directory / 'host_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PidFile none", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    sshd = subprocess.Popen(lab._enter(1) + [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f",
                                             str(config)],
                            stdout=subprocess.DEVNULL, stderr=(directory / "sshd.log").open("w"))
    return sshd, directory / "client_key"


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
    sshd = cp = None
    try:
        lab.up(2)
        sshd, key = _sshd(lab, directory)
        # ss2's libvirtd runs ssh itself to migrate to ss1 (peer to peer): in ss2's mount
        # namespace only, root's home is the test's, so its known_hosts lands there
        (directory / "home" / ".ssh").mkdir(parents=True)
        subprocess.run(lab._enter(2) + ["mount", "--bind", str(directory / "home"), "/root"], check=True)
        os.environ["PATH"] = f"{wrapper.parent}:{path}"
        settings = dataclasses.replace(make_settings(tmp_path_factory.mktemp("ss")),
                                       dhcp_lease_files=(lease_file(lab.root),), sync_interval_s=2.0)
        cp = ControlPlane(settings)
        cp.start()
        api = Api(cp)
        network = f"bridge:{TOPOLOGY.guest_bridge}"
        ssh_uri = f"qemu+ssh://root@{TOPOLOGY.host_address(1)}:{PORT}/system?keyfile={key}&no_verify=1"
        deadline = time.monotonic() + 20
        while subprocess.run(["ssh", "-i", str(key), "-p", str(PORT), "-o", "BatchMode=yes",
                              "-o", "StrictHostKeyChecking=no", f"root@{TOPOLOGY.host_address(1)}", "true"],
                             capture_output=True).returncode and time.monotonic() < deadline:
            time.sleep(0.3)
        api.task(api.post("/hosts", json={"uri": ssh_uri, "name": "ss1", "virt_type": "qemu",
                                          "network": network}))
        api.task(api.post("/hosts", json={"uri": lab.uri(2), "name": "ss2", "virt_type": "qemu",
                                          "network": network}))
        api.task(api.post("/images/build-tiny"), timeout=600)
        yield api, directory / "home"
    finally:
        if cp is not None:
            cp.stop()
        os.environ["PATH"] = path
        if sshd is not None:
            sshd.terminate()
            sshd.wait(10)
        lab.down(fence=False)


def test_a_host_over_ssh_runs_and_hands_a_guest_over_and_back(ssh_pool):
    api, ss2_home = ssh_pool
    hosts = {h["name"]: h for h in api.get("/hosts").json()["items"]}
    assert hosts["ss1"]["uri"].startswith("qemu+ssh://") and hosts["ss1"]["state"] == "up"
    assert hosts["ss1"]["capacity"]["memory_mib"]["capacity"] > 0
    assert hosts["ss1"]["storage"] == hosts["ss2"]["storage"]   # the marker was read over ssh too
    api.task(api.post("/vms", json={"name": "sshvm", "image": "tiny", "memory": "256M", "disk": "1G",
                                    "host": "ss1"}), timeout=180)
    try:
        ip = wait_up(api, "sshvm")
        before = counters(ip)
        api.task(api.post("/vms/sshvm/migrate", json={"to": "ss2"}), timeout=300)
        vm = api.get("/vms/sshvm").json()
        assert vm["host"] == "ss2" and vm["state"] == "running"
        after = counters(ip)
        assert after["boots"] == before["boots"] and after["uptime"] > before["uptime"]
        # and back: now ss2's libvirtd reaches ss1 over ssh, with the URI vpool has for it
        api.task(api.post("/vms/sshvm/migrate", json={"to": "ss1"}), timeout=300)
        vm = api.get("/vms/sshvm").json()
        assert vm["host"] == "ss1" and vm["state"] == "running"
        assert (ss2_home / ".ssh" / "known_hosts").read_text()   # ss2's own ssh went to ss1
        back = counters(ip)
        assert back["boots"] == before["boots"] and back["uptime"] > after["uptime"]
    finally:
        api.task(api.delete("/vms/sshvm"), timeout=120)
