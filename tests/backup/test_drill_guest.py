"""A DR drill on a real tiny guest: restored on an isolated network, booted, answering, cleaned up."""

import json
from pathlib import Path

import libvirt
import pytest

from vpool.hypervisor import localhost

from .conftest import wait_up

pytestmark = pytest.mark.guest


def test_drill_restores_boots_measures_and_cleans_up(guest_api, vms):
    api = guest_api
    vms("drweb1")
    wait_up(api, "drweb1")
    backup = api.task(api.post("/backups", json={"vm": "drweb1"}))["result"]
    assert api.post("/dr/drills", json={"vms": "nomatch*"}).status_code == 404

    task = api.task(api.post("/dr/drills", json={"vms": "drweb*", "target_host": "local"}), timeout=400)
    result = task["result"]
    assert result["passed"] and result["rto_s"] > 0
    report = json.loads(Path(result["report"]).read_text())
    [vm] = report["vms"]
    assert vm["vm"] == "drweb1" and vm["backup"] == backup["backup"] and vm["answered_by"] in ("serial", "http")
    assert report["rpo_s"] == vm["rpo_s"] > 0
    assert "PASSED" in Path(report["files"]["summary"]).read_text()

    conn = libvirt.open(localhost.LOCAL_URI)
    try:
        assert not [d.name() for d in conn.listAllDomains() if d.name().startswith(f"dr{report['drill']}-")]
        assert f"vpool-dr{report['drill']}" not in conn.listNetworks() + conn.listDefinedNetworks()
    finally:
        conn.close()
    assert api.get(f"/vms/dr{report['drill']}-drweb1").status_code == 404
    [listed] = [d for d in api.get("/dr/drills").json()["items"] if d["id"] == report["drill"]]
    assert listed["state"] == "passed" and listed["rto_s"] == result["rto_s"]
