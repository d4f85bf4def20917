"""Measured CPU load, for the balance and consolidation plans and for placing VMs: DRS balances what VMs use,
not what they were given, and DPM keeps hosts out of CPU contention. Ten idle 4-vCPU VMs on one
host and two busy ones on another are even by allocation and far apart by load; vCenter's DRS
balances demand for that reason, and hbal does when handed a utilisation file (-U).

A running VM's load is its mean CPU use over the window the collector measured, in cores (its
`cpu_percent` is a share of its vCPUs); each host's load is divided by its CPUs, so the score's
CPU-load term is how unevenly busy the hosts' CPUs are, and it takes the place of the vCPU and
VM-count terms (placement/score.py says why). A running VM with no sample in the window (just
started, or on a host the collector cannot read) counts all its vCPUs busy: the balancer never
moves VMs onto a host on the belief that an unknown VM there is idle. Until any VM is measured
(telemetry off, or the collector just started) the balance plan counts VMs, as hbal without -U
does, and consolidation goes by allocations alone. Consolidation keeps the hosts that stay on
under a share of their CPUs busy by the same loads (ConsolidationPolicy.load_target). A new VM,
or one migrated with no destination named, goes preferably where the hosts' own CPU use was
lowest over the same hour (host_busy; the MeasuredCPUWeigher).
"""

import time
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from vpool.model.errors import Invalid
from vpool.placement import ClusterState
from vpool.store.tables import VM, Host
from vpool.store.timeseries import TimeSeries

METRIC = "cpu_percent"
# An hour: replayed on PlanetLab traces through the balancer (benchmarks/drs_load.py), a 60-minute
# mean left the hosts as even over the next half hour as 120 minutes did, more even than 5, 15 or
# 30 minutes or the Holt-Winters forecast, with a quarter of the migrations a 5-minute mean made.
WINDOW_S = 3600.0


def load_window(value: float | str | None, longest_s: int) -> float:
    """The `load_window_s` plan or DRS setting: at least one collection interval's worth, at
    most as far back as raw samples are kept; 0 weighs no measurement (VMs are counted)."""
    if value is None:
        return WINDOW_S
    try:
        window = float(value)
    except (TypeError, ValueError):
        raise Invalid(f"load_window_s must be a number of seconds, not {value!r}") from None
    if window != 0 and not 10 <= window <= longest_s:
        raise Invalid(f"load_window_s must be 0 (weigh no measurement) or between 10 s and {longest_s} s "
                      f"(as long as raw samples are kept), got {window:g}")
    return window


def with_measured_load(state: ClusterState, s: Session, series: TimeSeries, now_s: float,
                       window_s: float) -> tuple[ClusterState, dict]:
    """`state` with each VM's and host's CPU load filled in, and what it rests on."""
    running = [v for v in state.vms if v.running and v.host is not None]
    uuids, percent = {}, {}
    if window_s:
        names = {v.name for v in running}
        uuids = {n: u for n, u in s.execute(select(VM.name, VM.uuid).where(VM.uuid.is_not(None))) if n in names}
        percent = series.means("vm", METRIC, [u for u in uuids.values() if u], int((now_s - window_s) * 1000))
    basis = {"window_s": window_s, "running_vms": len(running),
             "measured_vms": sum(uuids.get(v.name) in percent for v in running)}
    if not basis["measured_vms"]:
        return state, basis | {"cpu": "not measured"}

    def load(vm) -> float:
        if not vm.running or vm.host is None:
            return 0.0
        measured = percent.get(uuids.get(vm.name))
        # to a hundredth of a core: finer is noise, and VMs of equal load are one kind to the balancer
        return vm.cpus if measured is None else round(measured / 100.0 * vm.cpus, 2)

    hosts = [replace(h, cpu_pool=max(h.cpus, 1.0)) for h in state.hosts]
    vms = [replace(v, cpu_load=load(v)) for v in state.vms]
    return ClusterState.from_records(hosts, vms, state.group_policies), basis | {"cpu": "measured"}


def host_busy(cp, window_s: float = WINDOW_S) -> dict[str, float]:
    """Each host's share of CPUs busy over the window (its own `cpu_percent`, which counts what is
    not a VM too), by name, for placing a VM: vCenter's initial placement weighs demand as DRS
    does, and Nova's MetricsWeigher the hosts' measured CPU. O(hosts), so a create in a pool of
    ten thousand VMs stays fast; read before the placement lock: a measurement needs no lock."""
    with cp.store.session() as s:
        names = list(s.scalars(select(Host.name)))
    since_ms = int((time.time() - window_s) * 1000)
    return {h: v / 100.0 for h, v in cp.telemetry.series.means("host", METRIC, names, since_ms).items()}

