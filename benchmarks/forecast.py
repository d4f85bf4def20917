"""Forecast accuracy of vpool's Holt-Winters on PlanetLab CPU traces, beside naive peers.

    benchmarks/forecast.py [--data ../shared/planetlab] [--horizons 1,6,12] [--jobs 2] [--limit N]

Each trace (one VM, 288 five-minute CPU samples) is split 80/20. The model is fitted on the
first 80 %, then rolled through the last 20 %: at every origin it forecasts 1..H steps
ahead from what it has seen, then takes the next observation. The same origins are given
to a naive last-value forecast and a seasonal-naive one (the value one detected period
earlier; the naive value when no period was detected). Per horizon the script prints MASE
(MAE over the in-sample one-step naive MAE of the training part; flat training parts are
skipped) and MAPE (over samples whose actual value is above zero, since idle VMs read 0 %),
each as mean and median over traces, and the ratio of vpool's to the naive forecast's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from vpool.telemetry.forecast import HoltWinters

MODELS = ("vpool_holt_winters", "naive", "seasonal_naive")


def evaluate_trace(args: tuple[str, tuple[int, ...]]) -> dict | None:
    path, horizons = args
    y = np.loadtxt(path, dtype=float, ndmin=1)
    n = len(y)
    split = int(round(0.8 * n))
    train = y[:split]
    scale = float(np.mean(np.abs(np.diff(train))))
    if scale == 0.0 or split < 4:
        return None
    started = time.perf_counter()
    model = HoltWinters().fit(train)
    fit_seconds = time.perf_counter() - started
    m = model.season
    h_max = max(horizons)
    errors = {name: {h: [] for h in horizons} for name in MODELS}
    actuals = {h: [] for h in horizons}
    update_seconds = 0.0
    for origin in range(split, n):
        predicted = model.forecast(h_max)
        for h in horizons:
            target = origin + h - 1
            if target >= n:
                continue
            actual = y[target]
            actuals[h].append(actual)
            errors["vpool_holt_winters"][h].append(actual - predicted[h - 1])
            errors["naive"][h].append(actual - y[origin - 1])
            seasonal = y[target - m * -(-h // m)] if m else y[origin - 1]
            errors["seasonal_naive"][h].append(actual - seasonal)
        started = time.perf_counter()
        model.update(y[origin])
        update_seconds += time.perf_counter() - started
    result = {"season": m, "fit_s": fit_seconds, "update_s": update_seconds, "updates": n - split, "metrics": {}}
    for h in horizons:
        a = np.asarray(actuals[h])
        positive = a > 0
        for name in MODELS:
            e = np.abs(np.asarray(errors[name][h]))
            mape = float(np.mean(e[positive] / a[positive]) * 100) if positive.any() else None
            result["metrics"][(name, h)] = (float(e.mean()) / scale, mape)
    return result


def summarise(results: list[dict], horizons: tuple[int, ...]) -> dict:
    out = {}
    for h in horizons:
        row = {}
        for name in MODELS:
            mase = np.array([r["metrics"][(name, h)][0] for r in results])
            mape = np.array([r["metrics"][(name, h)][1] for r in results if r["metrics"][(name, h)][1] is not None])
            row[name] = {
                "MASE_mean": round(float(mase.mean()), 4),
                "MASE_median": round(float(np.median(mase)), 4),
                "MAPE_mean_pct": round(float(mape.mean()), 2),
                "MAPE_median_pct": round(float(np.median(mape)), 2),
            }
        for peer in ("naive", "seasonal_naive"):
            row[f"vpool_over_{peer}_MASE_mean"] = round(row["vpool_holt_winters"]["MASE_mean"] / row[peer]["MASE_mean"], 4)
            row[f"vpool_over_{peer}_MASE_median"] = round(
                row["vpool_holt_winters"]["MASE_median"] / row[peer]["MASE_median"], 4
            )
        out[f"h={h}"] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "planetlab")
    parser.add_argument("--horizons", default="1,6,12", help="steps of 5 minutes")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (the machine is shared)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N traces (sorted), 0 = all")
    args = parser.parse_args(argv)
    horizons = tuple(int(h) for h in args.horizons.split(","))
    paths = sorted(str(p) for p in args.data.glob("*/*") if p.is_file() and p.name != "README.md")
    if args.limit:
        paths = paths[: args.limit]
    started = time.perf_counter()
    jobs = [(p, horizons) for p in paths]
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            outcome = list(pool.map(evaluate_trace, jobs, chunksize=64))
    else:
        outcome = [evaluate_trace(j) for j in jobs]
    results = [r for r in outcome if r is not None]
    report = {
        "data": str(args.data),
        "traces": len(paths),
        "traces_scored": len(results),
        "traces_skipped_flat_training": len(paths) - len(results),
        "split": "first 80% fit, last 20% rolled one origin at a time",
        "step_s": 300,
        "traces_with_detected_season": sum(1 for r in results if r["season"]),
        "fit_ms_per_trace_mean": round(1e3 * float(np.mean([r["fit_s"] for r in results])), 3),
        "update_us_mean": round(1e6 * sum(r["update_s"] for r in results) / sum(r["updates"] for r in results), 2),
        "wall_s": round(time.perf_counter() - started, 1),
        "horizons": summarise(results, horizons),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
