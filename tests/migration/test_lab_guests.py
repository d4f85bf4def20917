"""`make run`'s lab guests come back whatever an earlier run left: created when missing, left
alone when running, started when stopped, and adopted first when the data directory was wiped
but the lab kept its domains."""

import dataclasses
from datetime import timedelta

import libvirt
import pytest
from sqlalchemy import update

from tests.core.conftest import Api, eventually, make_settings
from vpool.services.controlplane import ControlPlane
from vpool.model.states import VMState
from vpool.services.serve import ensure_lab_guests
from vpool.store.tables import VM, utcnow

from .conftest import HOSTS, TOPOLOGY

pytestmark = pytest.mark.guest


def _settle(cp, under_way) -> list[str]:
    return [cp.runner.outcome(task.id, 240).state for _, task in under_way]


def _state(api, name):
    vm = api.get(f"/vms/{name}").json()
    return vm["ownership"], vm["state"]


def _size(api, name):
    vm = api.get(f"/vms/{name}").json()
    return vm["cpus"], vm["memory_mib"], vm["disk_gib"]


def _destroy(lab, name):
    conn = libvirt.open(lab.uri(1))
    try:
        conn.lookupByName(name).destroy()
    finally:
        conn.close()


def test_lab_guests_are_created_started_and_adopted(lab, pool, tmp_path):
    host = HOSTS[0]
    under_way = ensure_lab_guests(pool.cp, [host])
    assert [what for what, _ in under_way] == [f"web1 on {host}"] and _settle(pool.cp, under_way) == ["succeeded"]
    try:
        assert _state(pool, "web1") == ("managed", "running")
        assert ensure_lab_guests(pool.cp, [host]) == []  # what runs is left alone
        pool.task(pool.post("/vms/web1/stop", json={"force": True}))
        assert _settle(pool.cp, ensure_lab_guests(pool.cp, [host])) == ["succeeded"]
        assert _state(pool, "web1") == ("managed", "running")

        # `make run` after `vpool lab down`: the control plane started before the lab, so the
        # row still says running though the domain is off. The host is synced before it is trusted.
        _destroy(lab, "web1")
        assert eventually(lambda: _state(pool, "web1") == ("managed", "shutoff"))
        with pool.cp.store.session() as s:
            s.execute(update(VM).where(VM.name == "web1").values(
                state=VMState.running, updated_at=utcnow() - timedelta(minutes=1)))
            s.commit()
        assert _settle(pool.cp, ensure_lab_guests(pool.cp, [host])) == ["succeeded"]
        assert _state(pool, "web1") == ("managed", "running")

        # A control plane with a new data directory finds the lab's domain and takes it in.
        _destroy(lab, "web1")
        settings = dataclasses.replace(make_settings(tmp_path), sync_interval_s=2.0)
        fresh = ControlPlane(settings)
        fresh.start()
        try:
            api = Api(fresh)
            api.task(api.post("/hosts", json={"uri": lab.uri(1), "name": host, "virt_type": "qemu",
                                              "network": f"bridge:{TOPOLOGY.guest_bridge}"}))
            assert _state(api, "web1") == ("unmanaged", "shutoff")
            assert _size(api, "web1") == _size(pool, "web1")  # its disk read from the host, not taken as 0
            assert _settle(fresh, ensure_lab_guests(fresh, [host])) == ["succeeded"]
            assert _state(api, "web1") == ("managed", "running")
            assert _size(api, "web1") == _size(pool, "web1")
        finally:
            fresh.stop()
    finally:
        pool.task(pool.delete("/vms/web1"), timeout=120)
        assert eventually(lambda: pool.get("/vms/web1").status_code == 404, timeout=30)
