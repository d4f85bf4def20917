"""Control planes for the telemetry tests: the collection loop is driven by the test
(collect_once / ingest) unless a test asks for the background loop."""

import dataclasses

import pytest

from tests.core.conftest import Api, make_settings
from vpool.services.controlplane import ControlPlane
from vpool.services.collector import HostRead


@pytest.fixture
def tcp(tmp_path):
    plane = ControlPlane(dataclasses.replace(make_settings(tmp_path), telemetry_interval_s=3600.0))
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture
def tapi(tcp):
    return Api(tcp)


def domain(cpu_s: float, vcpus: int = 1, mem_kib: int = 1048576, rd: int = 0, wr: int = 0, rx: int = 0,
           tx: int = 0, running: bool = True) -> dict:
    """A getAllDomainStats record as a qemu host returns it, one disk and one NIC."""
    return {"state.state": 1 if running else 5, "cpu.time": int(cpu_s * 1e9), "vcpu.current": vcpus,
            "balloon.current": mem_kib, "balloon.available": mem_kib, "balloon.unused": mem_kib // 4,
            "block.count": 1, "block.0.rd.bytes": rd, "block.0.wr.bytes": wr, "block.0.rd.reqs": rd // 4096,
            "block.0.wr.reqs": wr // 4096, "net.count": 1, "net.0.rx.bytes": rx, "net.0.tx.bytes": tx}


def host_read(mono: float, domains: dict[str, dict], host: str = "h1", host_id: int = 1) -> HostRead:
    """One synthetic host answer; domains maps VM name -> record (UUIDs derived from the names)."""
    cpu = {"user": int(mono * 1e9), "kernel": 0, "idle": int(mono * 3e9), "iowait": 0}
    return HostRead(host_id, host, mono, [(f"uuid-{n}", n, d) for n, d in domains.items()],
                    {"cpu": cpu, "memory_total_bytes": 64 * 2**30,
                     "memory": {"total": 64 * 2**20, "free": 48 * 2**20}}, 0.001)


def feed_cpu(cp: ControlPlane, start: float, levels: list[float], cpu: float = 0.0) -> tuple[float, list[float]]:
    """One VM's CPU at these levels (fractions of a core), one interval each; its scores."""
    scores = []
    for i, level in enumerate(levels):
        cpu += level * 10
        cp.telemetry.ingest(start + 10 * i, [host_read(start + 10 * i, {"web": domain(cpu)})], {})
        scores.append(cp.telemetry.latest[("vm", "web")].get("cpu_percent.anomaly", 0.0))
    return cpu, scores
