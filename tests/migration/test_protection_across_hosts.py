"""Backups and DR across lab hosts: a VM on mg1 is backed up through libvirt's download stream
(the host is remote, so nothing is read from its files directly), restored onto mg2 where it
boots from the restored disk and answers, and drilled onto mg2 on an isolated network there."""

import json
from pathlib import Path

import libvirt
import pytest

from .conftest import HOSTS, counters, running_on, wait_up

pytestmark = pytest.mark.guest


def test_a_backup_on_one_host_restores_and_drills_on_another(lab, pool):
    api = pool
    name, copy = "mgbk", "mgbk2"
    api.task(api.post("/vms", json={"name": name, "image": "tiny", "memory": "256M", "disk": "1G",
                                    "host": HOSTS[0]}), timeout=120)
    try:
        ip = wait_up(api, name)
        assert counters(ip)["boots"] == 1
        full = api.task(api.post("/backups", json={"vm": name}), timeout=300)["result"]
        assert full["kind"] == "full" and full["size_bytes"] > 0
        inc = api.task(api.post("/backups", json={"vm": name, "incremental": True}), timeout=300)["result"]
        assert inc["kind"] == "incremental" and inc["chain"] == full["chain"]

        restored = api.task(api.post("/backups/restore", json={"vm": name, "as": copy, "host": HOSTS[1]}),
                            timeout=300)["result"]
        assert restored["chain"] == [full["backup"], inc["backup"]]
        shown = api.get(f"/vms/{copy}").json()
        assert shown["host"] == HOSTS[1] and running_on(lab, shown["uuid"]) == [HOSTS[1]]
        assert counters(wait_up(api, copy))["boots"] == 2  # the source's disk, booted once more
        api.task(api.delete(f"/vms/{copy}"), timeout=120)

        task = api.task(api.post("/dr/drills", json={"vms": name, "target_host": HOSTS[1]}), timeout=400)
        assert task["result"]["passed"], task["result"]
        report = json.loads(Path(task["result"]["report"]).read_text())
        [vm] = report["vms"]
        assert vm["host"] == HOSTS[1] and vm["backup"] == inc["backup"] and vm["answered_by"]
        conn = libvirt.open(lab.uri(2))
        try:  # the drill's copy and its network are gone from the target host
            assert not [d.name() for d in conn.listAllDomains() if d.name().startswith(f"dr{report['drill']}-")]
            assert f"vpool-dr{report['drill']}" not in conn.listNetworks() + conn.listDefinedNetworks()
        finally:
            conn.close()
    finally:
        for vm in (copy, name):
            if api.get(f"/vms/{vm}").status_code == 200:
                api.task(api.delete(f"/vms/{vm}"), timeout=120)
