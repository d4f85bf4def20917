"""Statistics collection cost at 1,000 VMs on one host: one bulk getAllDomainStats call beside
the per-domain calls a naive collector makes (info, memoryStats, blockStats, interfaceStats).

Runs on libvirt's test driver with 1,000 running domains of type 'test', twice: in-process
(test:///<file>, no RPC at all, which flatters per-domain calls) and, when a libvirtd
socket is there, through the daemon (test+unix:///<file>), where every call is a round trip
as it is to a real host. Also times vpool's whole interval (TelemetryService.ingest: rates,
one detector per series, one bulk insert, alarms) on qemu-shaped records for 1,000 VMs.
Prints JSON.

    .venv/bin/python benchmarks/collect.py [--vms 1000] [--rounds 5] [--restart]
"""

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
from sqlalchemy import insert

from vpool.config import Settings
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.lab.simhost import write_sim_host
from vpool.services.collector import HostRead
from vpool.services.controlplane import ControlPlane
from vpool.store.tables import VM, Host, utcnow
from vpool.store.telemetry_tables import Rollup
from vpool.store.timeseries import Point

DAEMON_SOCKET = "/run/libvirt/libvirt-sock"


def sim_host_with_domains(directory: Path, n: int) -> str:
    uri = write_sim_host(directory, "bench", cpus=256, memory_mib=4 * 2**20)
    path = Path(uri.removeprefix("test://"))
    node = ET.parse(path).getroot()
    for i in range(n):
        dom = ET.SubElement(node, "domain", type="test")
        ET.SubElement(dom, "name").text = f"vm{i:04d}"
        ET.SubElement(dom, "memory").text = "1048576"
        ET.SubElement(dom, "vcpu").text = "1"
        ET.SubElement(ET.SubElement(dom, "os"), "type").text = "hvm"
        devices = ET.SubElement(dom, "devices")
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "source", file=f"/guest/vm{i:04d}.img")
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "source", network="default")
        ET.SubElement(nic, "target", dev=f"tap{i:04d}")
    ET.ElementTree(node).write(path)
    return uri  # domains in a test driver node file start running


def per_domain(conn: libvirt.virConnect, devices: dict[str, tuple[str, str]]) -> int:
    """What a collector without the bulk API does: four calls per domain."""
    n = 0
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        disk, nic = devices[dom.name()]
        dom.info()
        dom.memoryStats()
        dom.blockStats(disk)
        dom.interfaceStats(nic)
        n += 1
    return n


def bulk(conn: libvirt.virConnect) -> int:
    return len(conn.getAllDomainStats(0, 0))


def timed(fn, rounds: int) -> float:
    fn()  # warm
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(uri: str, n: int, rounds: int) -> dict:
    conn = libvirt.open(uri)
    try:
        devices = {d.name(): ("vda", f"tap{d.name()[2:]}") for d in conn.listAllDomains(0)}
        assert len(devices) == n, len(devices)
        t_bulk = timed(lambda: bulk(conn), rounds)
        t_each = timed(lambda: per_domain(conn, devices), rounds)
    finally:
        conn.close()
    return {"uri": uri.split(":")[0] + ":///FILE", "domains": n, "bulk_s": round(t_bulk, 5),
            "per_domain_s": round(t_each, 5), "ratio_per_domain_over_bulk": round(t_each / t_bulk, 1)}


def qemu_record(i: int, k: int) -> dict:
    """A qemu-shaped getAllDomainStats record: counters that grow with k (the interval number)."""
    return {"state.state": 1, "cpu.time": int((i % 7 + 1) * k * 1e9), "vcpu.current": 2,
            "balloon.maximum": 2**20, "balloon.current": 2**20, "balloon.available": 2**20,
            "balloon.unused": 2**18 + (i * k) % 1000,
            "block.count": 1, "block.0.rd.bytes": 4096 * k * i, "block.0.wr.bytes": 8192 * k,
            "block.0.rd.reqs": k * i, "block.0.wr.reqs": 2 * k,
            "net.count": 1, "net.0.rx.bytes": 1500 * k * (i % 11), "net.0.tx.bytes": 900 * k}


def stored_pool(cp: ControlPlane, n: int) -> None:
    """The host and its n running VMs in the store, at the size the records report, so that the
    interval's size check reads and compares every row as it does in a steady pool."""
    with cp.store.session() as s:
        s.add(Host(id=1, name="bench", uri="test:///bench", cpus=256, memory_mib=4 * 2**20, disk_gib=10**5,
                   arch="x86_64", hypervisor="QEMU", hypervisor_version="7.2.0", hostname="bench",
                   host_uuid="bench", virt_type="kvm", network="default", storage_pool="default"))
        s.add_all(VM(name=f"vm{i:04d}", uuid=f"uuid-{i}", host_id=1, state="running", cpus=2, memory_mib=1024,
                     disk_gib=10) for i in range(n))
        s.commit()


def whole_interval(tmp: Path, n: int, rounds: int, restart: bool = False) -> dict:
    """vpool's own interval after the bulk call, on records with every counter a qemu host gives."""
    settings = dataclasses.replace(Settings(data_dir=tmp / "data"), telemetry_interval_s=3600.0)
    cp = ControlPlane(settings)
    try:
        stored_pool(cp, n)
        host_stats = {"cpu": {"user": 0, "kernel": 0, "idle": 0, "iowait": 0}, "memory_total_bytes": 2**40,
                      "memory": {"free": 2**30}}
        times = []
        now = time.time() - 10 * (rounds + 2)
        for k in range(rounds + 2):
            records = [(f"uuid-{i}", f"vm{i:04d}", qemu_record(i, k + 1)) for i in range(n)]
            read = HostRead(1, "bench", 10.0 * k, records, host_stats, 0.0, utcnow())
            start = time.perf_counter()
            cp.telemetry.ingest(now + 10 * k, [read], {})
            if k >= 2:  # the first two intervals create the series and the detectors
                times.append(time.perf_counter() - start)
        points = sum(len(m) for (scope, _), m in cp.telemetry.latest.items() if scope == "vm")
        out = {"vms": n, "points_per_interval": points, "ingest_s": round(statistics.median(times), 4),
               "database": "sqlite"}
        if restart:
            out["after_restart"] = first_intervals_after_restart(cp, settings, n, host_stats, now, rounds + 2)
            out["after_restart"]["ratio_to_steady"] = round(out["after_restart"]["ingest_s"] / out["ingest_s"], 1)
            # the steady rounds above fall in the detectors' learning period; these are past it
            out["after_restart"]["learnt_ratio_to_steady"] = round(out["after_restart"]["learnt_ingest_s"]
                                                                   / out["ingest_s"], 2)
        return out
    finally:
        cp.stop()


def first_intervals_after_restart(cp: ControlPlane, settings: Settings, n: int, host_stats: dict,
                                  began: float, rounds: int) -> dict:
    """A control plane started again on a database holding two learning periods of every series
    (a restarted detector reads the last one) and, for the series whose daily slots recall
    the days before (CPU percentages), two weeks of hourly rollups before those: its first
    two intervals (the first only sets the counters again) warm every detector from the stored
    samples. Their cost, once, beside the steady interval's."""
    stored = 2 * 300
    t = cp.telemetry
    found = [x for scope in ("vm", "host", "pool") for x in t.series.find(scope) if not x.metric.endswith(".anomaly")]
    series = [(x.scope, x.subject, x.metric, x.name) for x in found]
    start = began - 10 * (stored - rounds)  # the steady rounds were the last of it
    for k0 in range(0, stored - rounds, 20):  # written in bulk, as the collector writes it
        t.series.write([Point(scope, subject, metric, name, "bench", int((start + 10 * k) * 1000), float(k % 17))
                        for k in range(k0, min(k0 + 20, stored - rounds)) for scope, subject, metric, name in series])
    recalling = [x.id for x in found if t.new_detector(x.metric).recall_s]
    buckets = int(t.new_detector("cpu_percent").recall_s // 3600)
    first_bucket = int(start * 1000) - int(start * 1000) % 3_600_000 - buckets * 3_600_000
    rows = [{"series_id": sid, "step_s": 3600, "t": first_bucket + 3_600_000 * b, "count": 360,
             "total": 360.0 * (20 + 60 * (9 <= b % 24 < 17)), "low": 20.0, "high": 80.0}
            for sid in recalling for b in range(buckets)]
    with t.series.store.session() as s:
        if rows:
            s.execute(insert(Rollup), rows)
        s.commit()
    cp.stop()
    again = ControlPlane(settings)
    try:
        took = []
        for k in range(2 + rounds):  # the two that warm, then intervals of detectors that have learnt
            records = [(f"uuid-{i}", f"vm{i:04d}", qemu_record(i, 1000 + k)) for i in range(n)]
            read = HostRead(1, "bench", 10.0 * k, records, host_stats, 0.0, utcnow())
            started = time.perf_counter()
            again.telemetry.ingest(began + 10 * (rounds + k), [read], {})
            took.append(time.perf_counter() - started)
        return {"series": len(series), "stored_points": stored, "recalling_series": len(recalling),
                "recalled_means_each": buckets, "ingest_s": round(sum(took[:2]), 3),
                "learnt_ingest_s": round(statistics.median(took[2:]), 4)}
    finally:
        again.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--restart", action="store_true",
                    help="also time the first intervals after a restart, warming every detector "
                         "from stored history (writing that history takes minutes at 1,000 VMs)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vpool-collect-"))
    try:
        out = run(tmp, args.vms, args.rounds, args.restart)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))


def run(tmp: Path, vms: int, rounds: int, restart: bool = False) -> dict:
    uri = sim_host_with_domains(tmp / "hosts", vms)
    out = {"in_process": compare(uri, vms, rounds)}
    if os.path.exists(DAEMON_SOCKET):
        out["through_libvirtd"] = compare(uri.replace("test://", "test+unix://"), vms, rounds)
    drv = LibvirtDriver(uri)
    start = time.perf_counter()
    stats = drv.all_domain_stats()
    drv.host_stats()
    out["vpool_driver_read_s"] = round(time.perf_counter() - start, 4)
    drv.close()
    assert len(stats) == vms
    out["vpool_interval"] = whole_interval(tmp, vms, rounds, restart)
    out["target_s"] = 0.5
    return out


if __name__ == "__main__":
    main()
