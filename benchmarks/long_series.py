"""Write made-up long series with labelled anomalies in NAB's layout, for benchmarks/nab.py.

    benchmarks/long_series.py --out DIR [--seeds 0,1,2,3,4,5]
    benchmarks/nab.py --data DIR --out RESULTS --detectors vpool,vpool_tables,ARTime,contextOSE

Why: NAB's development subset is short series (1,000-4,700 rows); the three folders it lacks
are long ones (realKnownCause, realTweets: 4,000-22,000 rows over weeks or months), and that
is where detectors of vpool's family fall (CAD OSE's published scores: 76 on the subset's
files, 65 on those folders; ARTime's hold at 75). Nothing of those folders is here to look at,
so these are series of the same *kinds*, written from what such metrics are known to look
like, never from NAB's data:

- taxi: half-hourly demand over 200 days, weekday and weekend shapes, a slow seasonal swing,
  8 % noise; anomalies: two holidays (a weekday shaped like a Sunday), a two-day storm at a
  third of the demand, an evening surge;
- temperature: hourly over 300 days, a seasonal and a daily cycle under slowly wandering
  noise; anomalies: a drop of 6 degrees held for a day and a half, the sensor stuck for three
  days;
- machine: five-minute temperatures over 70 days, a noisy plateau; anomalies: a creep of
  10 degrees over two days ending in a crash, a dip that recovers;
- tweets: five-minute counts over 55 days with a daily rhythm and 25 ordinary short bursts;
  anomalies: three sustained bursts.

Windows follow NAB's rule (a tenth of the file shared among its anomalies, centred on each).
The figures it gives are a probe of a risk, not a NAB score: the generator is ours, and a
detector tuned on it would be judged on its own homework, so nothing here is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np


def _write(out: Path, labels: dict, folder: str, name: str, start: datetime, step_s: int,
           values: np.ndarray, anomalies: list[int]) -> None:
    (out / folder).mkdir(parents=True, exist_ok=True)
    stamps = [start + timedelta(seconds=step_s * i) for i in range(len(values))]
    with (out / folder / f"{name}.csv").open("w") as fh:
        fh.write("timestamp,value\n")
        fh.writelines(f"{t:%Y-%m-%d %H:%M:%S},{v:.3f}\n" for t, v in zip(stamps, values))
    n, half = len(values), int(0.1 * len(values) / max(1, len(anomalies))) // 2
    labels[f"{folder}/{name}.csv"] = [
        [f"{stamps[max(0, a - half)]:%Y-%m-%d %H:%M:%S}.000000",
         f"{stamps[min(n - 1, a + half)]:%Y-%m-%d %H:%M:%S}.000000"]
        for a in anomalies
    ]


def _starts(rng: np.random.Generator, low: int, high: int, k: int, n: int, unit: int = 1) -> list[int]:
    """k anomaly starts in [low, high) in multiples of `unit`, spaced so their windows (a tenth
    of the n rows shared among k) never overlap, as NAB's never do."""
    gap = 0.1 * n / k + 2 * unit
    while True:
        starts = sorted(int(a) * unit for a in rng.choice(np.arange(low // unit, high // unit), k, replace=False))
        if all(b - a > gap for a, b in zip(starts, starts[1:])):
            return starts


def taxi(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    days, per = 200, 48
    n = days * per
    hour = np.arange(n) % per / 2.0
    weekend_day = (np.arange(n) // per) % 7 >= 5
    weekday = (0.3 + 0.7 * np.exp(-((hour - 8.5) / 1.5) ** 2) + 0.9 * np.exp(-((hour - 19) / 3) ** 2)
               - 0.25 * np.exp(-((hour - 4) / 1.5) ** 2))
    weekend = 0.35 + 0.8 * np.exp(-((hour - 14) / 4) ** 2) + 0.5 * np.exp(-((hour - 0.5) / 2) ** 2)
    season = 20000 * (1 + 0.1 * np.sin(np.arange(n) / n * 2 * math.pi))
    base = np.where(weekend_day, weekend, weekday) * season
    anomalies = []
    for s, kind in zip(_starts(rng, 60 * per, (days - 5) * per, 4, n, per), ("holiday", "storm", "surge", "holiday")):
        if kind == "holiday":
            while weekend_day[s]:
                s += per
            base[s:s + per] = weekend[s:s + per] * season[s:s + per]
        elif kind == "storm":
            base[s:s + 2 * per] *= 0.35
        else:
            base[s + 40:s + 46] *= 1.8
        anomalies.append(s)
    return base * (1 + rng.normal(0, 0.08, n)), anomalies


def temperature(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    n = 300 * 24
    t = np.arange(n)
    wander = np.zeros(n)
    for i in range(1, n):
        wander[i] = 0.95 * wander[i - 1] + rng.normal(0, 0.4)
    v = 20 + 8 * np.sin(t / n * 2 * math.pi) + 3 * np.sin((t % 24 - 9) / 24 * 2 * math.pi) + wander
    drop, stuck = _starts(rng, 2000, n - 200, 2, n)
    v[drop:drop + 36] = v[drop] - 6 + rng.normal(0, 0.1, 36)
    v[stuck:stuck + 72] = np.mean(v[stuck - 24:stuck]) + rng.normal(0, 0.05, 72)
    return v, [drop, stuck]


def machine(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    n = 70 * 288
    v = 85 + rng.normal(0, 1.2, n)
    for i in range(1, n):
        v[i] = 0.8 * v[i - 1] + 0.2 * v[i]
    crash, dip = _starts(rng, 4000, n - 1500, 2, n)
    v[crash - 600:crash] += np.linspace(0, 10, 600)
    v[crash:crash + 100] = 30 + rng.normal(0, 2, 100)
    v[dip:dip + 300] -= 6 * np.exp(-np.arange(300) / 100)
    return v, [crash - 300, dip]


def tweets(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    n = 55 * 288
    hour = np.arange(n) % 288 / 12
    v = rng.poisson(12 + 10 * np.exp(-((hour - 15) / 4) ** 2)).astype(float)
    for b in rng.choice(n - 2, 25, replace=False):
        v[b:b + 2] += rng.poisson(40, 2)
    bursts = _starts(rng, 3000, n - 500, 3, n)
    for s in bursts:
        v[s:s + 36] += rng.poisson(80 * np.exp(-np.arange(36) / 12))
    return v, bursts


KINDS = {
    "taxi": (taxi, datetime(2014, 7, 1), 1800),
    "temperature": (temperature, datetime(2013, 7, 4), 3600),
    "machine": (machine, datetime(2013, 12, 2), 300),
    "tweets": (tweets, datetime(2015, 2, 26), 300),
}


def write_corpus(out: Path, seeds: list[int]) -> dict:
    labels: dict = {}
    for seed in seeds:
        for kind, (make, start, step_s) in KINDS.items():
            values, anomalies = make(np.random.default_rng([seed, len(kind)]))
            _write(out, labels, f"long{kind.capitalize()}", f"{kind}_{seed}", start, step_s, values, anomalies)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=1) + "\n")
    return labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4,5", help="comma-separated; each writes one file of every kind")
    args = ap.parse_args(argv)
    labels = write_corpus(args.out, [int(s) for s in args.seeds.split(",")])
    print(json.dumps({"out": str(args.out), "files": len(labels), "windows": sum(map(len, labels.values()))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
