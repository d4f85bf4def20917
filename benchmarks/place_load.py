"""Whether a new VM should go where the hosts' CPUs were measured least busy, and how much that
should weigh beside the allocation weighers: PlanetLab CPU traces replayed through vpool's own
`place`, with the MeasuredCPUWeigher at several multipliers (0 is placement by allocation alone).

    benchmarks/place_load.py [--data ../shared/planetlab] [--hosts 12] [--vms-per-host 12]
                             [--cores 4] [--churn 8] [--window-min 60] [--seeds 2] [--jobs 2]

Per day of traces and seed, hosts × vms-per-host VMs (1 vCPU, 2 GiB, each a trace drawn at
random: its share of one core) start on random hosts. From noon on, every 30 minutes, `churn`
VMs leave (the same ones for every multiplier) and as many new ones arrive, each placed by
`place` on the pool as it is then: its allocations, and each host's share of CPUs busy over the
last `window-min` minutes as the collector would have measured it (the VMs there at each 5-minute
step). A new VM's load is its trace from its arrival on. Nothing is migrated, so only placement
differs. The rest of the day is scored on the true traces: host-steps above 90 % busy (where VMs
wait for CPU) and the mean σ of how busy the hosts are. Ratios are to multiplier 0 in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from planetlab_days import add_arguments, days, draw, run_all

from vpool.placement import ClusterState, HostRecord, PlacementPolicy, PlacementRequest, VMRecord, place
from vpool.placement.weighers import DEFAULT_WEIGHERS

DECIDE = 6              # 5-minute steps between arrivals: 30 minutes
START = 144             # noon: half a day of history
STEP_MIN = 5            # PlanetLab: one sample per 5 minutes
OVERLOADED = 0.9        # share of a host's CPUs busy
MULTIPLIERS = (0.0, 1.0, 2.0, 3.0, 4.0, 8.0)  # 3.0: vpool's default


def replay(multiplier: float, y: np.ndarray, start_hosts: np.ndarray, leaving: list[np.ndarray],
           n_hosts: int, cores: float, window: int) -> dict:
    """One multiplier's day: the hosts' busy history, the placements, and the afternoon's score."""
    policy = PlacementPolicy(weighers={**DEFAULT_WEIGHERS, "MeasuredCPUWeigher": multiplier})
    # 2 GiB VMs on 8 GiB per core and 4 vCPUs per core: either resource fills at 16 VMs on 4 cores
    records = [HostRecord(f"h{j}", cpus=cores, memory_mib=8192 * cores, disk_gib=1000, cpu_ratio=4.0)
               for j in range(n_hosts)]
    n_start = start_hosts.size
    host = np.full(y.shape[0], -1)
    host[:n_start] = start_hosts
    arrived = np.zeros(y.shape[0], dtype=int)
    busy = np.zeros((n_hosts, y.shape[1]))
    present = host >= 0

    def run_steps(lo: int, hi: int) -> None:
        for k in range(lo, hi):
            on = present & (arrived <= k)
            busy[:, k] = np.bincount(host[on], weights=y[on, k], minlength=n_hosts) / cores

    run_steps(0, START)
    refused, next_vm = 0, n_start
    for d, t in enumerate(range(START, y.shape[1], DECIDE)):
        present[leaving[d]] = False
        measured = busy[:, t - window:t].mean(axis=1)
        hosts = [replace(r, cpu_busy=float(b)) for r, b in zip(records, measured)]
        for _ in range(leaving[d].size):
            vms = [VMRecord(f"v{i}", host=f"h{host[i]}", cpus=1, memory_mib=2048, disk_gib=10)
                   for i in np.flatnonzero(present)]
            decision = place(ClusterState.from_records(hosts, vms),
                             PlacementRequest(f"v{next_vm}", cpus=1, memory_mib=2048, disk_gib=10), policy)
            if decision.ok:
                host[next_vm], arrived[next_vm], present[next_vm] = int(decision.host[1:]), t, True
            else:
                refused += 1
            next_vm += 1
        run_steps(t, min(t + DECIDE, y.shape[1]))
    afternoon = busy[:, START:]
    return {"overloaded_host_steps": int((afternoon > OVERLOADED).sum()),
            "sigma": float(afternoon.std(axis=0).mean()), "refused": refused}


def run(job: tuple) -> dict:
    day, seed, n_hosts, per_host, cores, churn, window = job
    rng = np.random.default_rng(seed)
    n_start = n_hosts * per_host
    decisions = len(range(START, 288, DECIDE))
    y = draw(day, n_start + churn * decisions, rng)
    start_hosts = rng.integers(0, n_hosts, n_start)
    # who leaves at each decision: VMs present then (the starters, and arrivals before it)
    leaving, pool = [], list(range(n_start))
    for d in range(decisions):
        out = rng.choice(len(pool), churn, replace=False)
        leaving.append(np.array([pool[i] for i in out]))
        pool = [v for i, v in enumerate(pool) if i not in set(out)] + list(range(n_start + d * churn,
                                                                                 n_start + (d + 1) * churn))
    out = {"day": Path(day).name, "seed": seed}
    for m in MULTIPLIERS:
        out[str(m)] = replay(m, y, start_hosts, leaving, n_hosts, cores, window)
    return out


def summarise(runs: list[dict]) -> dict:
    base_over = sum(r["0.0"]["overloaded_host_steps"] for r in runs)
    base_sigma = np.mean([r["0.0"]["sigma"] for r in runs])
    table = {}
    for m in map(str, MULTIPLIERS):
        over = sum(r[m]["overloaded_host_steps"] for r in runs)
        sigma = float(np.mean([r[m]["sigma"] for r in runs]))
        table[m] = {"overloaded_host_steps": over, "overloaded_over_allocation": round(over / max(1, base_over), 4),
                    "sigma_mean": round(sigma, 4), "sigma_over_allocation": round(sigma / base_sigma, 4),
                    "refused": sum(r[m]["refused"] for r in runs)}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--vms-per-host", type=int, default=12)
    parser.add_argument("--cores", type=float, default=4.0, help="CPUs per host")
    parser.add_argument("--churn", type=int, default=8, help="VMs leaving and arriving every 30 minutes")
    parser.add_argument("--window-min", type=int, default=60, help="the measured mean's window (vpool's: an hour)")
    args = parser.parse_args(argv)
    folders = days(parser, args.data)
    jobs = [(d, seed, args.hosts, args.vms_per_host, args.cores, args.churn, args.window_min // STEP_MIN)
            for d in folders for seed in range(args.seeds)]
    started = time.perf_counter()
    runs = run_all(run, jobs, args.jobs)
    print(json.dumps({
        "data": str(args.data), "days": len(folders), "runs": len(runs), "hosts": args.hosts,
        "vms": args.hosts * args.vms_per_host, "cores_per_host": args.cores, "churn_per_30min": args.churn,
        "window_min": args.window_min,
        "overloaded_above": OVERLOADED, "wall_s": round(time.perf_counter() - started, 1),
        "multipliers": summarise(runs),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
