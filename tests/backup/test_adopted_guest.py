"""A VM adopted from elsewhere that boots a kernel its host hands it (as the lab's guests do once
a new data directory adopts them): its backups, restores and clones boot the same kernel, and a
template of its disk alone, which could not boot, is refused."""

import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET

import libvirt
import pytest

from vpool.hypervisor import localhost
from vpool.hypervisor.domain_xml import DomainSpec, domain_xml

from .conftest import POOL, POOL_PATH, counters, eventually, http

pytestmark = pytest.mark.guest


def _define_outsider(api, name: str) -> None:
    """Defines and starts, behind vpool's back, a kernel-boot guest on a disk of its own."""
    host = api.get("/hosts/local").json()
    with api.cp.store.session() as s:
        image = api.cp.images.get(s, "tiny")
        image_id, cmdline = image.id, image.cmdline
    copy = api.cp.images.ensure_copy(image_id, host["id"])
    disk = f"{POOL_PATH}/{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", copy.disk_path, disk], check=True)
    dom = ET.fromstring(domain_xml(DomainSpec(
        name=name, uuid=str(uuidlib.uuid4()), cpus=1, memory_mib=256, virt_type=host["virt_type"],
        disk_path=disk, network=host["network"], kernel=copy.kernel_path,
        initrd=copy.initrd_path, cmdline=cmdline.replace("{name}", name))))
    dom.remove(dom.find("metadata"))  # not vpool's
    conn = libvirt.open(localhost.LOCAL_URI)
    try:
        conn.storagePoolLookupByName(POOL).refresh(0)
        conn.defineXML(ET.tostring(dom, encoding="unicode")).create()
    finally:
        conn.close()


def _answers_as(api, vm: str, name: str) -> str:
    ip = eventually(lambda: api.get(f"/vms/{vm}").json()["ip"], timeout=90, interval=0.5)
    assert ip, f"{vm} never got an address: it did not boot"
    assert eventually(lambda: http(ip) == name, timeout=120, interval=0.5), f"{vm} never answered"
    return ip


def test_backups_and_clones_of_an_adopted_kernel_boot_vm_boot(guest_api, vms):
    api = guest_api
    vms.made.extend(["outsider", "outsider-r", "outsider-c"])
    _define_outsider(api, "outsider")
    assert eventually(lambda: api.get("/vms/outsider").json().get("ownership") == "unmanaged", timeout=15)
    api.task(api.post("/vms/outsider/adopt"))
    assert api.get("/vms/outsider").json()["image"] is None
    ip = _answers_as(api, "outsider", "outsider")
    boots = int(counters(ip)["boots"])

    api.task(api.post("/backups", json={"vm": "outsider"}), timeout=180)
    api.task(api.post("/backups/restore", json={"vm": "outsider", "as": "outsider-r"}), timeout=180)
    restored = _answers_as(api, "outsider-r", "outsider")  # the same machine, its kernel's command line too
    assert int(counters(restored)["boots"]) == boots + 1

    api.task(api.post("/vms/outsider/clone", json={"name": "outsider-c"}), timeout=180)
    _answers_as(api, "outsider-c", "outsider")

    api.task(api.post("/vms/outsider/stop", json={"timeout": 60}), timeout=90)
    r = api.post("/vms/outsider/template", json={"name": "tpl-outsider"})
    assert r.status_code == 409 and "from its host, not from its disk" in r.json()["detail"], r.text
    assert api.get("/images/tpl-outsider").status_code == 404
