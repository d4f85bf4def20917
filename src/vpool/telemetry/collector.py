"""From libvirt's cumulative counters to the rates people read: CPU %, bytes/s, IOPS, memory used.

libvirt reports what a domain has done since it started (CPU nanoseconds, bytes read...);
a rate needs two readings and the time between them. A counter that went backwards means
the domain restarted or moved to another host, so that rate is skipped for one interval
rather than reported as a huge negative number. Pure: readings in, numbers out.
"""

from dataclasses import dataclass

# Every series vpool keeps, per scope, with its unit; the store, the API, the alarms and
# the exporter all check names against these.
VM_METRICS = {
    "cpu_percent": "% of the VM's vCPUs",
    "memory_used_bytes": "bytes the guest uses (balloon driver's view; else what the balloon leaves it)",
    "memory_balloon_bytes": "bytes the host currently gives the guest (after ballooning)",
    "disk_read_bytes_per_s": "bytes/s", "disk_write_bytes_per_s": "bytes/s",
    "disk_read_iops": "requests/s", "disk_write_iops": "requests/s",
    "net_rx_bytes_per_s": "bytes/s", "net_tx_bytes_per_s": "bytes/s",
}
HOST_METRICS = {
    "cpu_percent": "% of the host's CPUs busy",
    "memory_used_bytes": "bytes", "memory_total_bytes": "bytes",
    # libvirt has no load average for a remote host; the load it can see is what the guests demand.
    "guest_cpu_cores": "sum over running VMs of the CPU they use, in cores",
    "vms_running": "count",
}
POOL_METRICS = {
    "cpus_utilisation": "allocated / usable vCPUs", "memory_utilisation": "allocated / usable memory",
    "disk_utilisation": "allocated / usable disk", "hosts_up": "count", "vms": "count",
}
SCOPES = {"vm": VM_METRICS, "host": HOST_METRICS, "pool": POOL_METRICS}
ANOMALY_SUFFIX = ".anomaly"  # the detector's score of series M is stored as series M.anomaly
PERCENT_METRICS = frozenset({"cpu_percent"})  # a known range lets the detector skip learning it


def anomaly_metric(metric: str) -> str:
    return metric + ANOMALY_SUFFIX


def known_metric(scope: str, metric: str) -> bool:
    base = metric.removesuffix(ANOMALY_SUFFIX)
    return base in SCOPES.get(scope, {})


@dataclass(frozen=True)
class VMReading:
    """One domain's counters at one moment, summed over its disks and NICs."""

    uuid: str
    name: str
    running: bool
    vcpus: int
    cpu_time_ns: int | None
    balloon_current_kib: int | None
    balloon_available_kib: int | None
    balloon_unused_kib: int | None
    rd_bytes: int | None
    wr_bytes: int | None
    rd_reqs: int | None
    wr_reqs: int | None
    rx_bytes: int | None
    tx_bytes: int | None
    size: tuple[int, int] | None = None  # (vCPUs, memory MiB) a running domain reports it runs with


@dataclass(frozen=True)
class HostReading:
    cpu_busy_ns: int | None
    cpu_total_ns: int | None
    memory_total_bytes: int
    memory_free_bytes: int | None


def _sum(stats: dict, count_key: str, prefix: str, field: str) -> int | None:
    n = stats.get(count_key)
    if not n:
        return None
    values = [stats.get(f"{prefix}.{i}.{field}") for i in range(n)]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def vm_reading(uuid: str, name: str, stats: dict) -> VMReading:
    """Reads one record of getAllDomainStats (keys like 'cpu.time', 'block.0.rd.bytes')."""
    return VMReading(
        uuid=uuid, name=name, running=stats.get("state.state") == 1,
        vcpus=stats.get("vcpu.current") or stats.get("vcpu.maximum") or 1,
        cpu_time_ns=stats.get("cpu.time"),
        balloon_current_kib=stats.get("balloon.current"),
        balloon_available_kib=stats.get("balloon.available"),
        balloon_unused_kib=stats.get("balloon.unused"),
        rd_bytes=_sum(stats, "block.count", "block", "rd.bytes"),
        wr_bytes=_sum(stats, "block.count", "block", "wr.bytes"),
        rd_reqs=_sum(stats, "block.count", "block", "rd.reqs"),
        wr_reqs=_sum(stats, "block.count", "block", "wr.reqs"),
        rx_bytes=_sum(stats, "net.count", "net", "rx.bytes"),
        tx_bytes=_sum(stats, "net.count", "net", "tx.bytes"),
        size=_size(stats),
    )


def _size(stats: dict) -> tuple[int, int] | None:
    """The size a running domain has now, for the reconciler: libvirt raises no event when
    vCPUs are plugged behind vpool's back, and this reading costs nothing more."""
    cpus, max_kib = stats.get("vcpu.current"), stats.get("balloon.maximum")
    if stats.get("state.state") != 1 or not cpus or not max_kib:
        return None
    return cpus, max_kib // 1024


def host_reading(cpu_stats: dict, memory_total_bytes: int, memory_stats: dict | None) -> HostReading:
    """cpu_stats as virNodeGetCPUStats gives it (ns per mode), memory_stats as virNodeGetMemoryStats (KiB).

    The total comes from the memory statistics when they have one, like the free memory: virNodeGetInfo
    can count less (here 9 of 24 GiB), and used = that total - free then came out below zero."""
    busy = cpu_stats.get("user", 0) + cpu_stats.get("kernel", 0) if cpu_stats else None
    total = busy + cpu_stats.get("idle", 0) + cpu_stats.get("iowait", 0) if cpu_stats else None
    free = None
    if memory_stats and "free" in memory_stats:
        free = (memory_stats["free"] + memory_stats.get("buffers", 0) + memory_stats.get("cached", 0)) * 1024
        if "total" in memory_stats:
            memory_total_bytes = memory_stats["total"] * 1024
    return HostReading(busy, total, memory_total_bytes, free)


def _rate(prev: int | None, cur: int | None, dt: float) -> float | None:
    if prev is None or cur is None or cur < prev:
        return None
    return (cur - prev) / dt


def vm_rates(prev: VMReading | None, cur: VMReading, dt: float) -> dict[str, float]:
    """The VM's metrics over the interval dt seconds; a metric with no basis is left out, and a
    VM that is not running has none (libvirt still reports a stopped VM's configured memory)."""
    out: dict[str, float] = {}
    if not cur.running:
        return out
    if cur.balloon_current_kib is not None:
        out["memory_balloon_bytes"] = cur.balloon_current_kib * 1024.0
    if cur.balloon_available_kib is not None and cur.balloon_unused_kib is not None:
        out["memory_used_bytes"] = (cur.balloon_available_kib - cur.balloon_unused_kib) * 1024.0
    elif cur.balloon_current_kib is not None:
        out["memory_used_bytes"] = cur.balloon_current_kib * 1024.0
    if prev is None or dt <= 0:
        return out
    cpu = _rate(prev.cpu_time_ns, cur.cpu_time_ns, dt)
    if cpu is not None:
        out["cpu_percent"] = min(100.0, cpu / 1e9 / max(cur.vcpus, 1) * 100.0)
    for metric, field in (("disk_read_bytes_per_s", "rd_bytes"), ("disk_write_bytes_per_s", "wr_bytes"),
                          ("disk_read_iops", "rd_reqs"), ("disk_write_iops", "wr_reqs"),
                          ("net_rx_bytes_per_s", "rx_bytes"), ("net_tx_bytes_per_s", "tx_bytes")):
        rate = _rate(getattr(prev, field), getattr(cur, field), dt)
        if rate is not None:
            out[metric] = rate
    return out


def host_rates(prev: HostReading | None, cur: HostReading, vm_metrics: list[dict[str, float]],
               vm_readings: list[VMReading]) -> dict[str, float]:
    """The host's metrics; guest load comes from this interval's VM CPU figures."""
    out: dict[str, float] = {"memory_total_bytes": float(cur.memory_total_bytes),
                             "vms_running": float(sum(r.running for r in vm_readings))}
    if cur.memory_free_bytes is not None:
        out["memory_used_bytes"] = float(max(0, cur.memory_total_bytes - cur.memory_free_bytes))
    if prev is not None and None not in (prev.cpu_busy_ns, prev.cpu_total_ns, cur.cpu_busy_ns, cur.cpu_total_ns):
        total = cur.cpu_total_ns - prev.cpu_total_ns
        busy = cur.cpu_busy_ns - prev.cpu_busy_ns
        if total > 0 and busy >= 0:
            out["cpu_percent"] = min(100.0, busy / total * 100.0)
    out["guest_cpu_cores"] = sum(m["cpu_percent"] / 100.0 * r.vcpus
                                 for m, r in zip(vm_metrics, vm_readings) if "cpu_percent" in m)
    return out


def pool_metrics(hosts: list[dict]) -> dict[str, float]:
    """Pool utilisation from the hosts as HostService.describe gives them (allocated / usable)."""
    out = {"hosts_up": float(sum(h["state"] == "up" for h in hosts)), "vms": float(sum(h["vms"] for h in hosts))}
    for resource, metric in (("cpus", "cpus_utilisation"), ("memory_mib", "memory_utilisation"),
                             ("disk_gib", "disk_utilisation")):
        usable = sum(h["capacity"][resource]["usable"] for h in hosts)
        allocated = sum(h["capacity"][resource]["allocated"] for h in hosts)
        if usable > 0:
            out[metric] = allocated / usable
    return out
