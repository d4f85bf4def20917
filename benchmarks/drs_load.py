"""What DRS should weigh a VM's CPU by: the mean it was measured at over windows of several
lengths, or vpool's Holt-Winters forecast (predictive DRS), replayed on PlanetLab CPU traces
through vpool's own balancer.

    benchmarks/drs_load.py [--data ../shared/planetlab] [--hosts 12] [--vms-per-host 10]
                           [--cores 2] [--seeds 2] [--jobs 2]

Per day of traces and seed, hosts × vms-per-host traces are drawn at random, each a 1-vCPU VM
whose load is its share of one core, and placed at random. From noon on, every 30 minutes
(the decision interval), each strategy gives every VM a load from what was measured until
then; vpool's balancer (`BalancePolicy(measured_cpu=True)`, at most 8 moves) moves VMs on those
loads, and the next 30 minutes of the true traces are scored: the mean σ of how busy the hosts'
CPUs are (what the balancer evens out), host-steps above 90 % busy (where VMs wait for CPU) and
migrations. Each strategy follows its own placements from the same start. The strategies: the
mean of the last 5, 15, 30, 60 and 120 minutes; the forecaster's mean over the next interval, fitted
on the day so far; and the oracle, the next 30 minutes' true mean, as the bound no strategy
reaches. Ratios are to the 5-minute mean of the same run.
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
from vpool.placement.balance import BalancePolicy, balance
from vpool.telemetry.forecast import HoltWinters

STEP_MIN = 5            # PlanetLab: one sample per 5 minutes, 288 a day
DECIDE = 6              # steps between decisions: 30 minutes
START = 144             # noon: half a day of history to measure and fit on
OVERLOADED = 0.9        # share of a host's CPUs busy
WINDOWS_MIN = (5, 15, 30, 60, 120)
STRATEGIES = tuple(f"mean_{w}min" for w in WINDOWS_MIN) + ("forecast", "oracle")


def loads(strategy: str, y: np.ndarray, t: int) -> np.ndarray:
    """Each VM's load at decision time t (cores), from samples before t (the oracle's after)."""
    if strategy == "oracle":
        return y[:, t:t + DECIDE].mean(axis=1)
    if strategy == "forecast":
        return np.array([max(0.0, float(HoltWinters().fit(row[:t]).forecast(DECIDE).mean())) for row in y])
    steps = int(strategy.split("_")[1].removesuffix("min")) // STEP_MIN
    return y[:, t - steps:t].mean(axis=1)


def replay(strategy: str, y: np.ndarray, start_hosts: np.ndarray, n_hosts: int, cores: float) -> dict:
    host = start_hosts.copy()
    records = [HostRecord(f"h{j}", cpus=cores, memory_mib=65536, cpu_ratio=16.0, cpu_pool=cores)
               for j in range(n_hosts)]
    sigma, overloaded, moves, seconds = [], 0, 0, 0.0
    for t in range(START, y.shape[1] - DECIDE + 1, DECIDE):
        began = time.perf_counter()
        load = loads(strategy, y, t)
        vms = [VMRecord(f"v{i}", host=f"h{host[i]}", cpus=1, memory_mib=1024, cpu_load=round(float(x), 2))
               for i, x in enumerate(load)]
        plan = balance(ClusterState.from_records(records, vms), BalancePolicy(measured_cpu=True, max_moves=8))
        seconds += time.perf_counter() - began
        for m in plan.moves:
            host[int(m.vm[1:])] = int(m.dst[1:])
        moves += len(plan.moves)
        for k in range(t, t + DECIDE):
            busy = np.bincount(host, weights=y[:, k], minlength=n_hosts) / cores
            sigma.append(float(busy.std()))
            overloaded += int((busy > OVERLOADED).sum())
    return {"sigma": float(np.mean(sigma)), "overloaded_host_steps": overloaded, "migrations": moves,
            "decide_s": seconds}


def run(job: tuple) -> dict:
    day, seed, n_hosts, per_host, cores = job
    rng = np.random.default_rng(seed)
    n = n_hosts * per_host
    y = draw(day, n, rng)
    start_hosts = rng.integers(0, n_hosts, n)
    out = {"day": Path(day).name, "seed": seed}
    for strategy in STRATEGIES:
        out[strategy] = replay(strategy, y, start_hosts, n_hosts, cores)
    return out


def summarise(runs: list[dict]) -> dict:
    base = "mean_5min"
    table = {}
    for s in STRATEGIES:
        sigma = np.array([r[s]["sigma"] for r in runs])
        table[s] = {
            "sigma_mean": round(float(sigma.mean()), 4),
            "overloaded_host_steps": sum(r[s]["overloaded_host_steps"] for r in runs),
            "migrations": sum(r[s]["migrations"] for r in runs),
            "sigma_over_5min": round(float(sigma.mean() / np.mean([r[base]["sigma"] for r in runs])), 4),
            "migrations_over_5min": round(sum(r[s]["migrations"] for r in runs)
                                          / max(1, sum(r[base]["migrations"] for r in runs)), 4),
            "best_sigma_in_runs": sum(min((x for x in STRATEGIES if x != "oracle"), key=lambda x: r[x]["sigma"]) == s
                                      for r in runs),
            "decide_ms_mean": round(1e3 * sum(r[s]["decide_s"] for r in runs)
                                    / (len(runs) * len(range(START, 288 - DECIDE + 1, DECIDE))), 2),
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--vms-per-host", type=int, default=10)
    parser.add_argument("--cores", type=float, default=2.0, help="CPUs per host")
    args = parser.parse_args(argv)
    folders = days(parser, args.data)
    jobs = [(d, seed, args.hosts, args.vms_per_host, args.cores) for d in folders for seed in range(args.seeds)]
    started = time.perf_counter()
    runs = run_all(run, jobs, args.jobs)
    print(json.dumps({
        "data": str(args.data), "days": len(folders), "runs": len(runs), "hosts": args.hosts,
        "vms": args.hosts * args.vms_per_host, "cores_per_host": args.cores,
        "decisions_per_run": len(range(START, 288 - DECIDE + 1, DECIDE)), "decide_every_min": DECIDE * STEP_MIN,
        "overloaded_above": OVERLOADED, "wall_s": round(time.perf_counter() - started, 1),
        "strategies": summarise(runs),
        "per_run_sigma": [{"day": r["day"], "seed": r["seed"], **{s: round(r[s]["sigma"], 4) for s in STRATEGIES}}
                          for r in runs],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
