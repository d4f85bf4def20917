"""The same store on a real PostgreSQL server: migrations, the API flows, restart recovery."""

import libvirt
import pytest
from sqlalchemy import select

from vpool.services.controlplane import ControlPlane
from vpool.store.tables import Task

from ..postgres import postgres_server
from .conftest import Api, make_settings

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def test_pool_on_postgresql(pg_url, tmp_path):
    settings = make_settings(tmp_path, database_url=pg_url)
    cp = ControlPlane(settings)
    cp.start()
    try:
        api = Api(cp)
        api.add_sim_host(tmp_path, "pg1", cpus=8, memory_mib=16384)
        for i in range(3):
            api.task(api.post("/vms", json={"name": f"pg-vm{i}", "cpus": 2, "memory": "1G", "disk": "2G"}))
        assert api.post("/vms", json={"name": "pg-vm0", "cpus": 1}).status_code == 409
        page = api.get("/vms", params={"ownership": "managed", "limit": 2}).json()
        assert page["total"] == 3 and len(page["items"]) == 2
        assert api.get("/hosts/pg1").json()["capacity"]["cpus"]["allocated"] == 6
        dom = cp.connections.driver(api.get("/hosts/pg1").json()["id"]).conn.lookupByName("pg-vm0")
        dom.setVcpusFlags(3, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        cp.telemetry.collect_once()  # the collector's size check compares timestamps in SQL
        assert api.get("/vms/pg-vm0").json()["cpus"] == 3
        api.post("/groups", json={"name": "pg", "policy": "affinity"})
        assert api.patch("/groups/pg", json={"add": ["pg-vm0", "pg-vm1"]}).json()["holds"]  # under the advisory lock
        with cp.store.session() as s:
            s.add(Task(kind="vm.create", target="interrupted", state="running", params={}))
            s.commit()
    finally:
        cp.stop()
    again = ControlPlane(settings)  # the schema is already there: migrations must be a no-op
    again.runner.recover()
    with again.store.session() as s:
        assert s.scalar(select(Task.state).where(Task.target == "interrupted")) == "failed"
    again.stop()
