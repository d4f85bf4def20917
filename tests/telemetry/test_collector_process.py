"""The collection loop in its own process, as `vpool serve` runs it: it reads the real local
libvirtd over connections of its own, stores samples the API can query, answers `top` and
/metrics through the API, says why it cannot see a test:/// host, is restarted when it dies
and ends with the control plane."""

import dataclasses
import os
import signal
import uuid as uuidlib
import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.core.conftest import Api, eventually, make_settings
from vpool.hypervisor import localhost
from vpool.services.controlplane import ControlPlane

pytestmark = pytest.mark.guest


def _shutoff_domain(conn, name: str):
    """A defined, never started domain: the bulk statistics call reports it like any other."""
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "uuid").text = str(uuidlib.uuid4())
    ET.SubElement(dom, "memory", unit="MiB").text = "64"
    ET.SubElement(ET.SubElement(dom, "os"), "type").text = "hvm"
    return conn.defineXML(ET.tostring(dom, encoding="unicode"))


def test_collector_process_reads_real_libvirt_and_is_supervised(tmp_path):
    try:
        localhost.start_libvirtd(tmp_path / "logs")
    except RuntimeError as e:
        pytest.fail(f"this test needs a local libvirtd: {e}")
    settings = dataclasses.replace(make_settings(tmp_path), telemetry_process=True, telemetry_interval_s=1.0)
    cp = ControlPlane(settings)
    cp.start()
    conn = libvirt.open(localhost.LOCAL_URI)
    name = f"vpool-collector-test-{os.getpid()}"
    dom = _shutoff_domain(conn, name)
    try:
        api = Api(cp)
        api.task(api.post("/hosts", json={"uri": localhost.LOCAL_URI, "name": "local"}))
        api.add_sim_host(tmp_path, "sim1")
        proc = cp.telemetry.remote
        assert proc is not None and proc.pid != os.getpid()

        def latest():
            r = api.client.get("/metrics/latest", headers=api.headers)
            return r.json() if r.status_code == 200 else None

        def seen():
            view = latest()
            hosts = {h["name"]: h for h in view["hosts"]} if view else {}
            local, sim = hosts.get("local"), hosts.get("sim1")
            return (local and not local["stale"] and "cpu_percent" in local["metrics"]
                    and sim and sim["stale"] and name in {v["name"] for v in view["vms"]})
        assert eventually(seen, timeout=60)
        sim = next(h for h in latest()["hosts"] if h["name"] == "sim1")
        assert "test:///" in sim["error"]

        text = api.get("/metrics").text
        assert 'vpool_host_stats_stale{host="local"} 0.0' in text
        assert 'vpool_host_stats_stale{host="sim1"} 1.0' in text
        assert f'vpool_vm_running{{host="local",tenant="",vm="{name}"}} 0.0' in text
        assert "vpool_api_request_duration_seconds_bucket" in text  # the API's own series beside the pool's
        points = api.get("/metrics/query", params={"host": "local", "metric": "memory_used_bytes"}).json()
        assert points["series"] and points["series"][0]["points"]

        first = proc.pid
        os.kill(first, signal.SIGKILL)
        assert eventually(lambda: proc.pid != first and latest() is not None, timeout=60)
        assert eventually(seen, timeout=60)
    finally:
        child = cp.telemetry.remote.pid if cp.telemetry.remote else None
        cp.stop()
        dom.undefine()
        conn.close()
    assert child is not None
    with pytest.raises(ProcessLookupError):  # stopped and reaped with the control plane
        os.kill(child, 0)
