"""Templates and clones of a real tiny guest: each clone boots under its own name."""

import os
import stat
import subprocess

import pytest

from .conftest import counters, volume_path, wait_up

pytestmark = pytest.mark.guest


def test_template_then_linked_and_full_clones(guest_api, vms):
    api = guest_api
    vms("tsrc")
    wait_up(api, "tsrc")
    r = api.post("/vms/tsrc/template")
    assert r.status_code == 409 and "stop it first" in r.json()["detail"]
    api.task(api.post("/vms/tsrc/stop", json={"timeout": 60}), timeout=90)
    tpl = api.task(api.post("/vms/tsrc/template", json={"name": "tpl-t"}), timeout=180)["result"]
    try:
        image = api.cp.images
        with api.cp.store.session() as s:
            path = image.get(s, "tpl-t").path
        assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # sealed read-only
        assert "backing file" not in subprocess.run(["qemu-img", "info", path], capture_output=True, text=True).stdout
        assert tpl["kind"] == "kernel"

        vms.made.append("tlinked")
        api.task(api.post("/vms/tpl-t/clone", json={"name": "tlinked"}), timeout=180)
        ip = wait_up(api, "tlinked")
        assert counters(ip)["boots"] == 2  # the template's disk, booted once more under a new name
        info = subprocess.run(["qemu-img", "info", "-U", volume_path("vm-tlinked.qcow2")], capture_output=True,
                              text=True).stdout
        assert "img-tpl-t" in info  # a thin overlay on the template's copy

        r = api.post("/vms/tsrc/clone", json={"name": "tx", "mode": "linked"})
        assert r.status_code == 409 and "template" in r.json()["detail"]
        assert api.post("/vms/tsrc/clone", json={"name": "tlinked"}).status_code == 409
        assert api.post("/vms/nosuch/clone", json={"name": "ty"}).status_code == 404

        # a full clone of a running VM: a point-in-time copy made by a backup job
        vms.made.append("tfull")
        result = api.task(api.post("/vms/tlinked/clone", json={"name": "tfull", "mode": "full"}), timeout=180)
        assert result["result"]["mode"] == "full"
        ip_full = wait_up(api, "tfull")
        assert counters(ip_full)["boots"] == 3
        assert "backing file" not in subprocess.run(["qemu-img", "info", "-U", volume_path("vm-tfull.qcow2")],
                                                    capture_output=True, text=True).stdout
    finally:
        for vm in ("tfull", "tlinked"):
            if api.get(f"/vms/{vm}").status_code == 200:
                api.task(api.delete(f"/vms/{vm}"), timeout=120)
        api.delete("/images/tpl-t")


def test_a_vm_stopped_on_a_snapshot_overlay_is_copied_with_what_it_wrote_since(guest_api, vms):
    """After a disk-only snapshot the VM writes to an overlay; a template or a full clone of it
    shut off copied the disk below it, as it was at the snapshot."""
    api = guest_api
    vms("tov")
    wait_up(api, "tov")
    api.task(api.post("/vms/tov/snapshots", json={"name": "d1"}))  # the VM writes to an overlay from now on
    api.task(api.post("/vms/tov/stop", json={"timeout": 60}), timeout=90)
    api.task(api.post("/vms/tov/start"))
    assert counters(wait_up(api, "tov"))["boots"] == 2  # written to the overlay only
    api.task(api.post("/vms/tov/stop", json={"timeout": 60}), timeout=90)
    vms.made.append("tovfull")
    api.task(api.post("/vms/tov/clone", json={"name": "tovfull", "mode": "full"}), timeout=180)
    api.task(api.post("/vms/tov/template", json={"name": "tpl-ov"}), timeout=180)
    try:
        vms.made.append("tovlinked")
        api.task(api.post("/vms/tpl-ov/clone", json={"name": "tovlinked"}), timeout=180)
        assert counters(wait_up(api, "tovfull"))["boots"] == 3
        assert counters(wait_up(api, "tovlinked"))["boots"] == 3
    finally:
        for vm in ("tovlinked", "tovfull"):
            if api.get(f"/vms/{vm}").status_code == 200:
                api.task(api.delete(f"/vms/{vm}"), timeout=120)
        api.delete("/images/tpl-ov")
