"""Score vpool's streaming anomaly detector on the Numenta Anomaly Benchmark (NAB v1.1).

    benchmarks/nab.py --data DIR [--data DIR ...] --out DIR [--jobs 2] [--cv folders|files]

DIR is any NAB-layout folder: category folders of ``timestamp,value`` CSVs and
``labels/combined_windows.json`` (in it, or beside it as in NAB's own repository, whose root
or ``data/`` folder may be given). Every CSV listed in the labels is streamed, one row at a
time, through a fresh detector per file (one parameter set for the whole corpus; the
detector is told only what NAB's contract allows: the probation length and the file's
value range). Results go to ``OUT/<detector>/<category>/<detector>_<file>.csv`` with NAB's
columns ``timestamp,value,anomaly_score,label`` plus one ``S(t)_<profile>`` column per
profile (the row's contribution at that profile's optimised threshold; a missed window's
``-A_FN`` sits on its last row, so each column sums to the file's raw score), and
``OUT/<detector>/<detector>_<profile>_scores.csv`` per profile, as NAB writes them.
``OUT/final_results.json`` and stdout carry the normalised scores of vpool (as NAB's
contract allows, told each file's range; its context tables alone, without the resonance's
band; and online, learning the range itself) beside three peers restated from NAB (ARTime,
the best published, which is vpool's resonance uncapped; CAD OSE, the published detector
closest to vpool's tables; the windowed-Gaussian baseline; the first two reproduce NAB's
published per-file results) and the null and perfect references, all scored by the same code
in the same run. Every peer has a published full-corpus score, so vpool's margin over them
on any corpus, the development subset included, anchors what vpool would score on the full
one. ``benchmarks/long_series.py`` writes a corpus of made-up long series for the same run.

NAB's score optimises its threshold on the very corpus it scores, and a detector whose
parameters were chosen on the same corpus is scored in-sample twice over. ``--cv folders``
adds the honest proxy for a held-out corpus: for each folder, the threshold is optimised on
the other folders and applied to the held-out one; the held-out raw scores are summed
over folders and normalised with the corpus's window count ("pooled"). ``--cv files`` holds
out one file at a time instead (less pessimistic: most files have siblings in the training
part). The same run scores one-at-a-time neighbours of each of vpool's parameters, in-sample
and held out, so the JSON shows whether the defaults sit on a plateau or a sharp peak.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

import cad_ose
from vpool.telemetry.detectors import PARAMETERS, ContextNoveltyDetector, make_detector
from vpool.telemetry.resonance import Resonance
from vpool.telemetry.nab_scoring import (
    PROFILES,
    normalise,
    optimise_threshold,
    probation_rows,
    raw_file_score,
    row_values,
    score_corpus,
    window_rows,
)

DetectorRun = Callable[[list[float], list[float], int], list[float]]


def load_corpus(data_dir: Path) -> list[dict]:
    """Every file named in the labels that exists, sorted by path; a CSV without labels cannot
    be scored and is not run. Labelled files that are missing are named on stderr, and a
    corpus with none of them is refused: scoring a part of a corpus silently would report a
    figure for a benchmark that was not run."""
    labels, csv_root = locate(data_dir)
    corpus, missing = [], []
    for rel in sorted(labels):
        path = csv_root / rel
        if not path.exists():
            missing.append(rel)
            continue
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        timestamps = [r[0] for r in rows]
        corpus.append(
            {
                "name": rel,
                "timestamps": timestamps,
                "epoch": [_epoch(t) for t in timestamps],
                "values": [float(r[1]) for r in rows],
                "windows": window_rows(timestamps, labels[rel]),
            }
        )
    if not corpus:
        raise SystemExit(f"nab.py: none of the {len(labels)} files the labels name is under {csv_root}")
    if missing:
        print(f"nab.py: {len(missing)} of the {len(labels)} labelled files are not under {csv_root} and are "
              f"not scored (first: {missing[0]})", file=sys.stderr)
    return corpus


def locate(data_dir: Path) -> tuple[dict, Path]:
    """The labels, and the folder their paths are relative to. NAB's own repository keeps
    ``labels/`` beside ``data/``; a copy of the data folder may hold ``labels/`` itself (as
    ../shared/nab/data does). Either folder, or the repository's root, is accepted."""
    for root in (data_dir, data_dir / "data", data_dir.parent):
        labels_file = root / "labels" / "combined_windows.json"
        if labels_file.exists():
            break
    else:
        raise SystemExit(f"nab.py: {data_dir} is not a NAB-layout folder: no labels/combined_windows.json "
                         "in it, in its data/ or beside it")
    labels = json.loads(labels_file.read_text())
    candidates = [root, root / "data"]
    found = max(candidates, key=lambda d: sum((d / rel).exists() for rel in labels))
    return labels, found


def _epoch(ts: str) -> float:
    return datetime.strptime(ts[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def run_vpool(epoch: list[float], values: list[float], probation: int, **overrides) -> list[float]:
    """vpool's detector as NAB's contract allows: told the probation and the file's range; with
    `overrides`, some of ``PARAMETERS`` changed."""
    detector = ContextNoveltyDetector(probation, (min(values), max(values)), **{**PARAMETERS, **overrides})
    return [detector.update(t, v) for t, v in zip(epoch, values)]


def run_vpool_online(epoch: list[float], values: list[float], probation: int) -> list[float]:
    """vpool's detector as it runs on a series of unknown range: it learns the range itself."""
    detector = make_detector(learning_period=probation)
    return [detector.update(t, v) for t, v in zip(epoch, values)]


def run_artime(epoch: list[float], values: list[float], probation: int) -> list[float]:
    """ARTime as NAB ran it: told the file's range and probation, its categories uncapped."""
    resonance = Resonance(min(values), max(values), probation)
    return [resonance.update(v) for v in values]


def run_windowed_gaussian(epoch: list[float], values: list[float], probation: int) -> list[float]:
    """NAB's windowedGaussian baseline: two-sided Gaussian tail of the value against the mean
    and deviation of up to 6400 earlier values, refreshed every 100 rows once full; a zero
    deviation is floored at 1e-6 as NAB does."""
    window_size, step_size = 6400, 100
    window: list[float] = []
    buffer: list[float] = []
    mean = std = 0.0
    out = []
    for x in values:
        score = 0.0
        if window:
            z_from = x if x >= mean else 2 * mean - x
            probability = 0.5 * math.erfc((z_from - mean) / std / math.sqrt(2))
            score = 1.0 - probability
        if len(window) < window_size:
            window.append(x)
            mean, std = float(np.mean(window)), float(np.std(window)) or 1e-6
        else:
            buffer.append(x)
            if len(buffer) == step_size:
                window = window[step_size:] + buffer
                buffer = []
                mean, std = float(np.mean(window)), float(np.std(window)) or 1e-6
        out.append(score)
    return out


def run_null(epoch: list[float], values: list[float], probation: int) -> list[float]:
    return [0.0] * len(values)


DETECTORS: dict[str, DetectorRun] = {
    "vpool": run_vpool,
    "vpool_tables": partial(run_vpool, resonance_band=0),  # the context tables alone
    "vpool_online": run_vpool_online,
    "ARTime": run_artime,
    "contextOSE": cad_ose.run,
    "windowedGaussian": run_windowed_gaussian,
    "null": run_null,
}


# One-at-a-time neighbours of each default in ``PARAMETERS``, scored by ``--cv``.
NEIGHBOURS: dict[str, tuple] = {
    "levels": (5, 7),
    "context": (1, 3),
    "scales": ((1, 4), (1, 4, 16, 64)),
    "grids": (2, 4),
    "rate_memory": (100, 1000),
    "inhibition_decay": (0.95, 0.99),
    "fine_levels": (0, 8, 24),
    "daily_slots": (0, 6, 24),
    "resonance_band": (0.0, 0.45),
}


def _run_file(args: tuple[str | dict, dict]) -> tuple[str, list[float], float]:
    """Run one file through a named detector, or through vpool's with ``PARAMETERS``
    overridden by the given dict."""
    detector, item = args
    probation = probation_rows(len(item["values"]))
    started = time.perf_counter()
    if isinstance(detector, dict):
        scores = run_vpool(item["epoch"], item["values"], probation, **detector)
    else:
        scores = DETECTORS[detector](item["epoch"], item["values"], probation)
    return item["name"], scores, time.perf_counter() - started


def run_all(detector: str | dict, corpus: list[dict], jobs: int) -> tuple[dict[str, list[float]], float, float]:
    """Scores per file, summed CPU seconds and wall seconds."""
    work = [(detector, item) for item in corpus]
    started = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outcome = list(pool.map(_run_file, work))
    else:
        outcome = [_run_file(w) for w in work]
    wall = time.perf_counter() - started
    return {name: scores for name, scores, _ in outcome}, sum(s for _, _, s in outcome), wall


def perfect_scores(item: dict) -> list[float]:
    """The perfect reference: one detection on the first row of every window."""
    scores = [0.0] * len(item["values"])
    for left, _ in item["windows"]:
        scores[left] = 1.0
    return scores


def write_results(out: Path, detector: str, corpus: list[dict], scores: dict[str, list[float]], thresholds: dict[str, float]) -> None:
    base = out / detector
    per_profile_rows: dict[str, list[list]] = {p: [] for p in PROFILES}
    for item in corpus:
        name = item["name"]
        category, filename = name.split("/", 1)
        target = base / category / f"{detector}_{filename}"
        target.parent.mkdir(parents=True, exist_ok=True)
        s = scores[name]
        n = len(s)
        label = np.zeros(n, dtype=int)
        for left, right in item["windows"]:
            label[left : right + 1] = 1
        contributions = {}
        for pname, profile in PROFILES.items():
            contributions[pname] = _row_contributions(s, item["windows"], profile, thresholds[pname])
            raw = raw_file_score(s, item["windows"], profile, thresholds[pname])
            detected = np.asarray(s[probation_rows(n) :]) >= thresholds[pname]
            lab = label[probation_rows(n) :].astype(bool)
            per_profile_rows[pname].append(
                [detector, name, thresholds[pname], raw,
                 int((detected & lab).sum()), int((~detected & ~lab).sum()),
                 int((detected & ~lab).sum()), int((~detected & lab).sum()), n]
            )
        with target.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score", "label"] + [f"S(t)_{p}" for p in PROFILES])
            for i in range(n):
                w.writerow([item["timestamps"][i], repr(item["values"][i]), repr(float(s[i])), int(label[i])]
                           + [repr(contributions[p][i]) for p in PROFILES])
    for pname, rows in per_profile_rows.items():
        with (base / f"{detector}_{pname}_scores.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Detector", "File", "Threshold", "Score", "TP", "TN", "FP", "FN", "Total_Count"])
            w.writerows(rows)


def _row_contributions(scores, windows, profile, threshold) -> list[float]:
    n = len(scores)
    probation = probation_rows(n)
    value, owner = row_values(n, windows, profile)
    contrib = [0.0] * n
    for i in range(probation, n):
        if scores[i] >= threshold and owner[i] < 0:
            contrib[i] = float(value[i])
    for left, right in windows:
        if right < probation:
            continue
        hit = next((i for i in range(max(left, probation), right + 1) if scores[i] >= threshold), None)
        if hit is None:
            contrib[right] = -profile.fn
        else:
            contrib[hit] = float(value[hit])
    return contrib


def evaluate(corpus: list[dict], scores: dict[str, list[float]], n_windows: int) -> dict:
    files = {item["name"]: (scores[item["name"]], item["windows"]) for item in corpus}
    result = {}
    for pname, profile in PROFILES.items():
        cs = score_corpus(files, profile, n_windows)
        result[pname] = {"score": round(cs.normalised, 2), "raw": round(cs.raw, 4), "threshold": cs.threshold}
    return result


def cross_validate(corpus: list[dict], scores: dict[str, list[float]], by: str) -> dict:
    """Held-out NAB scores: each group scored at the threshold optimised on all the others.

    A group is a folder (``by="folders"``) or a file (``by="files"``). Per group the JSON has
    the held-out raw score, its window count, the threshold it was scored at and, when the
    group has windows, its own normalised score; ``pooled`` is the sum of held-out raw
    scores normalised with the whole corpus's window count, so a group without windows
    (artificialNoAnomaly) counts through its false alarms only.
    """
    groups: dict[str, list[dict]] = {}
    for item in corpus:
        key = item["name"].split("/", 1)[0] if by == "folders" else item["name"]
        groups.setdefault(key, []).append(item)
    n_windows = sum(_live_windows(item) for item in corpus)
    result = {}
    for pname, profile in PROFILES.items():
        per_group = {}
        pooled_raw = 0.0
        for key, held_out in groups.items():
            train = {i["name"]: (scores[i["name"]], i["windows"]) for i in corpus if i not in held_out}
            threshold, _ = optimise_threshold(train, profile)
            raw = sum(raw_file_score(scores[i["name"]], i["windows"], profile, threshold) for i in held_out)
            windows = sum(_live_windows(i) for i in held_out)
            pooled_raw += raw
            per_group[key] = {"raw": round(float(raw), 4), "windows": windows, "threshold": round(threshold, 4)}
            if windows:
                per_group[key]["score"] = round(float(normalise(raw, profile, windows)), 2)
        result[pname] = {"pooled": round(float(normalise(pooled_raw, profile, n_windows)), 2)}
        if by == "folders":
            result[pname]["groups"] = per_group
    return result


def _live_windows(item: dict) -> int:
    probation = probation_rows(len(item["values"]))
    return sum(1 for _, right in item["windows"] if right >= probation)


def sensitivity(corpus: list[dict], n_windows: int, by: str, jobs: int) -> dict:
    """In-sample and held-out standard scores of each one-at-a-time neighbour of the defaults."""
    out = {}
    for name, values in NEIGHBOURS.items():
        out[name] = {"default": _jsonable(PARAMETERS[name])}
        for value in values:
            scores, _, _ = run_all({name: value}, corpus, jobs)
            std = evaluate(corpus, scores, n_windows)["standard"]["score"]
            held = cross_validate(corpus, scores, by)["standard"]["pooled"]
            out[name][str(_jsonable(value))] = {"in_sample": std, "held_out": held}
    return out


# NAB's scoreboard, standard profile, full 58-file corpus (SCORING.md section 7).
PUBLISHED_STANDARD = {"ARTime": 74.85, "numenta_HTM": 70.10, "contextOSE": 69.90, "windowedGaussian": 39.65}


def _minus_peers(detectors: dict) -> dict:
    """vpool's standard score minus each peer's that ran beside it, in-sample and (with
    ``--cv``) held out: a peer with a published full-corpus score turns a difference on any
    corpus into an estimate for the full one."""
    out = {}
    for peer in ("ARTime", "contextOSE", "windowedGaussian"):
        if peer not in detectors:
            continue
        ours, theirs = detectors["vpool"], detectors[peer]
        out[peer] = {"in_sample": round(ours["standard"]["score"] - theirs["standard"]["score"], 2)}
        if "held_out" in ours:
            out[peer]["held_out"] = round(ours["held_out"]["standard"]["pooled"] - theirs["held_out"]["standard"]["pooled"], 2)
    return out


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="a NAB-layout folder; given twice or more, their files are scored as one corpus")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (the machine is shared)")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated subset of " + ",".join(DETECTORS))
    parser.add_argument("--cv", choices=("folders", "files"), help="also score held out: leave one folder (or file) out")
    args = parser.parse_args(argv)

    corpus = [item for data in args.data for item in load_corpus(data)]
    names = [item["name"] for item in corpus]
    if len(set(names)) < len(names):
        raise SystemExit("nab.py: the --data folders share a file name ("
                         f"{next(n for n in names if names.count(n) > 1)}); a corpus names each file once")
    n_windows = sum(len(item["windows"]) for item in corpus)
    n_rows = sum(len(item["values"]) for item in corpus)

    report: dict = {"data": [str(d) for d in args.data], "files": len(corpus), "rows": n_rows, "windows": n_windows, "detectors": {}}
    all_scores = {"perfect": {item["name"]: perfect_scores(item) for item in corpus}}
    for detector in args.detectors.split(","):
        all_scores[detector], cpu, wall = run_all(detector, corpus, args.jobs)
        report["detectors"][detector] = {"us_per_point": round(1e6 * cpu / n_rows, 2), "wall_s": round(wall, 2)}

    for detector, scores in all_scores.items():
        result = evaluate(corpus, scores, n_windows)
        report["detectors"].setdefault(detector, {}).update(result)
        write_results(args.out, detector, corpus, scores, {p: result[p]["threshold"] for p in PROFILES})
        if args.cv and detector != "perfect":
            report["detectors"][detector]["held_out"] = cross_validate(corpus, scores, args.cv)
    if args.cv:
        report["cv"] = args.cv
        report["sensitivity_standard"] = sensitivity(corpus, n_windows, args.cv, args.jobs)
    report["published_full_corpus_standard"] = PUBLISHED_STANDARD
    if "vpool" in report["detectors"]:
        report["detectors"]["vpool"]["minus_peer_standard"] = _minus_peers(report["detectors"])
    text = json.dumps(report, indent=2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "final_results.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
