"""The Prometheus exposition of the pool, built at scrape time from a snapshot of plain data.

Counters are exported as libvirt counts them (CPU seconds, bytes, requests) so Prometheus
computes its own rates; what is a level (memory, capacity, an anomaly score) is a gauge.
Names carry base units (seconds, bytes) and counters end in _total, as Prometheus asks.
Labels: host, vm, tenant (empty until tenants exist).
"""

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vpool.telemetry.collector import ANOMALY_SUFFIX

VM_LABELS = ["host", "vm", "tenant"]
VM_COUNTERS = (  # (name, help, VMReading field, scale to base unit)
    ("vpool_vm_cpu_seconds", "CPU time the VM used", "cpu_time_ns", 1e-9),
    ("vpool_vm_disk_read_bytes", "bytes read from the VM's disks", "rd_bytes", 1),
    ("vpool_vm_disk_written_bytes", "bytes written to the VM's disks", "wr_bytes", 1),
    ("vpool_vm_disk_read_requests", "read requests to the VM's disks", "rd_reqs", 1),
    ("vpool_vm_disk_write_requests", "write requests to the VM's disks", "wr_reqs", 1),
    ("vpool_vm_network_receive_bytes", "bytes the VM's NICs received", "rx_bytes", 1),
    ("vpool_vm_network_transmit_bytes", "bytes the VM's NICs sent", "tx_bytes", 1),
)
RESOURCES = (("cpus", "vcpus", 1), ("memory_mib", "memory_bytes", 2**20), ("disk_gib", "disk_bytes", 2**30))


def families(snap: dict) -> Iterator[Metric]:
    """snap: hosts (as HostService.describe), readings {host: (HostReading, [VMReading])},
    latest {(scope, name): {metric: value}}, status {host: HostStatus}, tasks {state: n},
    alarms_firing {alarm: n}, samples_stored."""
    yield from _hosts(snap)
    yield from _vms(snap)
    yield from _pool(snap["hosts"])
    tasks = GaugeMetricFamily("vpool_tasks", "tasks in the store by state", labels=["state"])
    for state, n in sorted(snap["tasks"].items()):
        tasks.add_metric([state], n)
    yield tasks
    firing = GaugeMetricFamily("vpool_alarm_firing_subjects", "VMs/hosts an alarm is firing for", labels=["alarm"])
    for alarm, n in sorted(snap["alarms_firing"].items()):
        firing.add_metric([alarm], n)
    yield firing
    stored = CounterMetricFamily("vpool_telemetry_samples_stored", "samples written to the time-series store")
    stored.add_metric([], snap["samples_stored"])
    yield stored


def _hosts(snap: dict) -> Iterator[Metric]:
    g = {name: GaugeMetricFamily(f"vpool_host_{name}", text, labels=["host"]) for name, text in (
        ("up", "1 when vpool has a live connection to the host"),
        ("stats_stale", "1 when the last collection interval got nothing from the host"),
        ("collect_duration_seconds", "time the host took to answer the last bulk statistics call"),
        ("memory_capacity_bytes", "physical memory of the host"),
        ("memory_used_bytes", "memory in use on the host"),
        ("guest_cpu_cores", "CPU the running VMs use, in cores"),
        ("vms_running", "running VMs"),
    )}
    cpu = CounterMetricFamily("vpool_host_cpu_seconds", "host CPU time by mode", labels=["host", "mode"])
    for name, text in (("capacity", "usable after overcommit ratio and reservations"),
                       ("allocated", "allocated to VMs")):
        for resource, unit, _scale in RESOURCES:
            g[f"{name}_{unit}"] = GaugeMetricFamily(f"vpool_host_{name}_{unit}", f"{unit} {text}", labels=["host"])
    for h in snap["hosts"]:
        name = h["name"]
        g["up"].add_metric([name], 1.0 if h["state"] == "up" else 0.0)
        for resource, unit, scale in RESOURCES:
            g[f"capacity_{unit}"].add_metric([name], h["capacity"][resource]["usable"] * scale)
            g[f"allocated_{unit}"].add_metric([name], h["capacity"][resource]["allocated"] * scale)
        status = snap["status"].get(name)
        if status is not None:
            g["stats_stale"].add_metric([name], 1.0 if status.stale else 0.0)
            if status.duration_s is not None and not status.stale:
                g["collect_duration_seconds"].add_metric([name], status.duration_s)
        latest = snap["latest"].get(("host", name), {})
        for metric in ("memory_used_bytes", "guest_cpu_cores", "vms_running"):
            if metric in latest:
                g[metric].add_metric([name], latest[metric])
        reading = snap["readings"].get(name)
        if reading is not None:
            hr = reading[0]
            g["memory_capacity_bytes"].add_metric([name], hr.memory_total_bytes)
            if hr.cpu_busy_ns is not None:
                cpu.add_metric([name, "busy"], hr.cpu_busy_ns / 1e9)
                cpu.add_metric([name, "idle"], (hr.cpu_total_ns - hr.cpu_busy_ns) / 1e9)
    yield from g.values()
    yield cpu


def _vms(snap: dict) -> Iterator[Metric]:
    counters = [(CounterMetricFamily(name, text, labels=VM_LABELS), field, scale)
                for name, text, field, scale in VM_COUNTERS]
    running = GaugeMetricFamily("vpool_vm_running", "1 when the VM runs", labels=VM_LABELS)
    vcpus = GaugeMetricFamily("vpool_vm_vcpus", "vCPUs of the VM", labels=VM_LABELS)
    memory = {m: GaugeMetricFamily(f"vpool_vm_{m}", text, labels=VM_LABELS) for m, text in (
        ("memory_used_bytes", "memory the guest uses"),
        ("memory_balloon_bytes", "memory the host gives the guest after ballooning"))}
    anomaly = GaugeMetricFamily("vpool_vm_anomaly_score", "the streaming detector's score of each VM series, 0..1",
                                labels=[*VM_LABELS, "metric"])
    for host, (_hr, vms) in sorted(snap["readings"].items()):
        for r in vms:
            labels = [host, r.name, ""]
            running.add_metric(labels, 1.0 if r.running else 0.0)
            vcpus.add_metric(labels, r.vcpus)
            for family, field, scale in counters:
                value = getattr(r, field)
                if value is not None:
                    family.add_metric(labels, value * scale)
            latest = snap["latest"].get(("vm", r.name), {})
            for metric, family in memory.items():
                if metric in latest:
                    family.add_metric(labels, latest[metric])
            for metric, value in latest.items():
                if metric.endswith(ANOMALY_SUFFIX):
                    anomaly.add_metric([*labels, metric.removesuffix(ANOMALY_SUFFIX)], value)
    yield running
    yield vcpus
    for family, _field, _scale in counters:
        yield family
    yield from memory.values()
    yield anomaly


def _pool(hosts: list[dict]) -> Iterator[Metric]:
    util = GaugeMetricFamily("vpool_pool_utilisation_ratio", "allocated / usable over the pool",
                             labels=["resource"])
    for resource, unit, scale in RESOURCES:
        usable = sum(h["capacity"][resource]["usable"] for h in hosts)
        allocated = sum(h["capacity"][resource]["allocated"] for h in hosts)
        yield GaugeMetricFamily(f"vpool_pool_capacity_{unit}", f"{unit} usable in the pool", value=usable * scale)
        yield GaugeMetricFamily(f"vpool_pool_allocated_{unit}", f"{unit} allocated to VMs", value=allocated * scale)
        if usable > 0:
            util.add_metric([resource.split("_")[0]], allocated / usable)
    yield util
    yield GaugeMetricFamily("vpool_pool_hosts", "hosts in the pool", value=len(hosts))


class PoolCollector(Collector):
    """Registered on the API's registry; calls `snapshot` once per scrape."""

    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        return families(self.snapshot())
