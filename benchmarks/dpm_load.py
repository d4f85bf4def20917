"""What consolidation (DPM) costs in CPU contention and saves in energy when it weighs measured
load or allocations alone, replayed on PlanetLab CPU traces through vpool's own `consolidate`.

    benchmarks/dpm_load.py [--data ../shared/planetlab] [--hosts 30] [--vms 120] [--seeds 2]
                           [--cpu-ratio 4] [--memory-gib 8] [--jobs 2]

Per day of traces and seed, `--vms` traces are drawn at random, each a 1-vCPU VM of 1 GiB whose
load is its share of one core, spread evenly over `--hosts` hosts of 2 CPUs and 8 GiB (CloudSim's
ML110 G4 and G5 alternate, with their SPECpower curves from ../shared/planetlab/README.md). From
noon, every 30 minutes, `consolidate` decides which hosts hold every VM; a host left empty draws
nothing (as in CloudSim, switching is instant and free) and every host is there to be used at the
next decision. Scored over the next 30 minutes of the true traces: energy (each host's power at
its busy share, linear between the table's 10 % points), host-steps above 100 % busy (VMs wait
for CPU) and above 90 %, hosts on, and migrations. Strategies, same start and same traces:
allocations alone (the vCPU ratio decides how many VMs share a core), and allocations plus the
VMs' measured load (`measured_cpu`, the mean of the last hour, under `load_target`: 0.63 of the
CPUs, vpool's default and vCenter DPM's demand target, and 0.8).
No consolidation (every host on at its load) is the energy baseline. Ratios are to allocations
alone in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from planetlab_days import add_arguments, days, draw, run_all

from vpool.placement import ClusterState, HostRecord, VMRecord
from vpool.placement.consolidate import ConsolidationPolicy, consolidate

STEP_S = 300
DECIDE = 6               # steps between decisions: 30 minutes
START = 144              # noon
WINDOW = 12              # steps of measured load each VM weighs: the hour vpool's plans use
CORES = 2.0
# Watts at 0, 10, ..., 100 % busy: HP ProLiant ML110 G4 (Xeon 3040) and G5 (Xeon 3075), SPECpower_ssj2008
POWER = np.array([[86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117],
                  [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]])
# measured load under vpool's default load_target (0.63, vCenter DPM's demand target) and under 0.8
TARGETS = {"measured_load": 0.63, "measured_load_0.8": 0.8}
STRATEGIES = ("no_consolidation", "allocations", *TARGETS)


def watts(kind: np.ndarray, busy: np.ndarray) -> np.ndarray:
    """Each host's draw at its busy share (capped at 100 %), linear between the table's points."""
    u = np.clip(busy, 0.0, 1.0) * 10
    low = np.floor(u).astype(int)
    high = np.minimum(low + 1, 10)
    table = POWER[kind]
    rows = np.arange(len(kind))
    return table[rows, low] + (table[rows, high] - table[rows, low]) * (u - low)


def replay(strategy: str, y: np.ndarray, n_hosts: int, cpu_ratio: float, memory_gib: float) -> dict:
    n = y.shape[0]
    host = np.arange(n) % n_hosts
    kind = np.arange(n_hosts) % 2
    records = [HostRecord(f"h{j}", cpus=CORES, memory_mib=memory_gib * 1024, cpu_ratio=cpu_ratio, cpu_pool=CORES)
               for j in range(n_hosts)]
    joules, over, busy90, on, moves, seconds = 0.0, 0, 0, [], 0, 0.0
    for t in range(START, y.shape[1] - DECIDE + 1, DECIDE):
        if strategy != "no_consolidation":
            began = time.perf_counter()
            load = y[:, t - WINDOW:t].mean(axis=1)
            vms = [VMRecord(f"v{i}", host=f"h{host[i]}", cpus=1, memory_mib=1024, cpu_load=round(float(x), 2))
                   for i, x in enumerate(load)]
            policy = ConsolidationPolicy(measured_cpu=True, load_target=TARGETS[strategy]) if strategy in TARGETS \
                else ConsolidationPolicy()
            plan = consolidate(ClusterState.from_records(records, vms), policy)
            seconds += time.perf_counter() - began
            for m in plan.moves:
                host[int(m.vm[1:])] = int(m.dst[1:])
            moves += len(plan.moves)
        used = np.bincount(host, minlength=n_hosts) > 0
        for k in range(t, t + DECIDE):
            busy = np.bincount(host, weights=y[:, k], minlength=n_hosts) / CORES
            joules += float(watts(kind, busy)[used].sum()) * STEP_S
            over += int((busy > 1.0).sum())
            busy90 += int((busy > 0.9).sum())
            on.append(int(used.sum()))
    return {"kwh": joules / 3.6e6, "host_steps_over_100pct": over, "host_steps_over_90pct": busy90,
            "hosts_on_mean": float(np.mean(on)), "migrations": moves, "decide_s": seconds}


def run(job: tuple) -> dict:
    day, seed, n_hosts, n_vms, cpu_ratio, memory_gib = job
    y = draw(day, n_vms, np.random.default_rng(seed))
    return {"day": Path(day).name, "seed": seed,
            **{s: replay(s, y, n_hosts, cpu_ratio, memory_gib) for s in STRATEGIES}}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for s in STRATEGIES:
        total = {k: sum(r[s][k] for r in runs) for k in ("kwh", "host_steps_over_100pct", "host_steps_over_90pct",
                                                         "migrations")}
        out[s] = {"kwh": round(total["kwh"], 2),
                  "hosts_on_mean": round(float(np.mean([r[s]["hosts_on_mean"] for r in runs])), 2),
                  "host_steps_over_100pct": total["host_steps_over_100pct"],
                  "host_steps_over_90pct": total["host_steps_over_90pct"],
                  "migrations": total["migrations"],
                  "decide_ms_mean": round(1e3 * float(np.mean([r[s]["decide_s"] for r in runs]))
                                          / len(range(START, 288 - DECIDE + 1, DECIDE)), 2)}
    base = out["allocations"]
    for s in STRATEGIES:
        out[s]["kwh_over_allocations"] = round(out[s]["kwh"] / base["kwh"], 4)
        out[s]["over_100pct_over_allocations"] = round(out[s]["host_steps_over_100pct"]
                                                       / max(1, base["host_steps_over_100pct"]), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--hosts", type=int, default=30)
    parser.add_argument("--vms", type=int, default=120)
    parser.add_argument("--cpu-ratio", type=float, default=4.0, help="vCPUs allotted per host CPU")
    parser.add_argument("--memory-gib", type=float, default=8.0, help="memory per host")
    args = parser.parse_args(argv)
    folders = days(parser, args.data)
    jobs = [(d, seed, args.hosts, args.vms, args.cpu_ratio, args.memory_gib) for d in folders
            for seed in range(args.seeds)]
    started = time.perf_counter()
    runs = run_all(run, jobs, args.jobs)
    print(json.dumps({
        "data": str(args.data), "days": len(folders), "runs": len(runs), "hosts": args.hosts, "vms": args.vms,
        "cores_per_host": CORES, "memory_gib_per_host": args.memory_gib, "cpu_ratio": args.cpu_ratio,
        "decide_every_min": DECIDE * STEP_S // 60,
        "hours_scored_per_run": (288 - START) * STEP_S / 3600, "wall_s": round(time.perf_counter() - started, 1),
        "strategies": summarise(runs),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
