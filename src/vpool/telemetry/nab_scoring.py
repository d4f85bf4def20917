"""The Numenta Anomaly Benchmark (NAB v1.1) scoring rules, restated from shared/nab/SCORING.md.

The scorer lives apart from any detector so that its arithmetic can be checked on hand-made
windows and so that every detector (vpool's, the baselines, the null and perfect references)
is judged by the same code in the same run. Everything works on row indices: a file is an
ordered list of rows, and windows are converted to inclusive row ranges once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "PROFILES",
    "Profile",
    "CorpusScore",
    "scaled_sigmoid",
    "probation_rows",
    "window_rows",
    "row_values",
    "raw_file_score",
    "optimise_threshold",
    "normalise",
    "score_corpus",
]


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB application profile (config/profiles.json)."""

    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0),
}

NOTHING_DETECTED = 1.1


def scaled_sigmoid(y: float) -> float:
    """NAB's position weight: +0.987 at a window's left edge, 0 at its right, -1 far after it."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(n_rows: int) -> int:
    """Rows excluded from scoring at the start of a file: the detector's learning time."""
    return min(math.floor(0.15 * n_rows), 750)


def window_rows(timestamps: Sequence[str], windows: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Turn label windows (inclusive timestamp pairs) into inclusive row ranges.

    Timestamps are compared on their first 19 characters (labels carry ``.000000``). A
    repeated timestamp at an edge widens the window to include every copy, which keeps the
    widths equal to NAB's ``floor(0.1 * n / n_anomalies)``.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, ts in enumerate(timestamps):
        key = ts[:19]
        first.setdefault(key, i)
        last[key] = i
    rows = []
    for start, end in windows:
        rows.append((first[start[:19]], last[end[:19]]))
    return rows


def row_values(n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """What a detection at each row would be worth, and which window (or -1) holds the row.

    Inside window k a detection is worth ``tp * S(-(R-i+1)/W) / MAX_TP``; outside, it costs
    ``fp * u`` with ``u`` measured from the most recent preceding window only (or -1 when
    there is none), with ``W - 1`` as the decay width.
    """
    value = np.empty(n_rows)
    owner = np.full(n_rows, -1, dtype=np.int64)
    prev_end = None
    prev_width = None
    k = 0
    for i in range(n_rows):
        while k < len(windows) and windows[k][1] < i:
            prev_end, prev_width = windows[k][1], windows[k][1] - windows[k][0] + 1
            k += 1
        if k < len(windows) and windows[k][0] <= i <= windows[k][1]:
            left, right = windows[k]
            width = right - left + 1
            value[i] = profile.tp * scaled_sigmoid(-(right - i + 1) / width) / MAX_TP
            owner[i] = k
        elif prev_end is None:
            value[i] = -profile.fp
        else:
            u = scaled_sigmoid((i - prev_end) / (prev_width - 1)) if prev_width > 1 else -1.0
            value[i] = profile.fp * u
    return value, owner


def raw_file_score(
    scores: Sequence[float], windows: Sequence[tuple[int, int]], profile: Profile, threshold: float
) -> float:
    """Raw NAB score of one file at one threshold (section 5 of SCORING.md)."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    probation = probation_rows(n)
    value, owner = row_values(n, windows, profile)
    detected = np.zeros(n, dtype=bool)
    detected[probation:] = scores[probation:] >= threshold
    total = float(value[detected & (owner < 0)].sum())
    for k, (left, right) in enumerate(windows):
        if right < probation:
            continue
        hits = np.flatnonzero(detected[left : right + 1])
        total += value[left + hits[0]] if hits.size else -profile.fn
    return total


def _prepare(
    files: Mapping[str, tuple[Sequence[float], Sequence[tuple[int, int]]]], profile: Profile
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    scores_all, value_all, owner_all = [], [], []
    window_base = 0
    for scores, windows in files.values():
        scores = np.asarray(scores, dtype=float)
        n = len(scores)
        probation = probation_rows(n)
        value, owner = row_values(n, windows, profile)
        live = [k for k, (_, right) in enumerate(windows) if right >= probation]
        remap = np.full(len(windows) + 1, -1, dtype=np.int64)
        for j, k in enumerate(live):
            remap[k] = window_base + j
        scores_all.append(scores[probation:])
        value_all.append(value[probation:])
        owner_all.append(remap[owner[probation:]])
        window_base += len(live)
    return np.concatenate(scores_all), np.concatenate(value_all), np.concatenate(owner_all), window_base


def optimise_threshold(
    files: Mapping[str, tuple[Sequence[float], Sequence[tuple[int, int]]]], profile: Profile
) -> tuple[float, float]:
    """NAB's sweep: the single corpus-wide threshold that maximises the summed raw score.

    Candidates are 1.1 and every distinct score of a scorable row; lowering the threshold to
    a candidate detects every row at or above it. A window is worth its earliest detection,
    which is also its most valuable one, so the sweep keeps each window's best value.
    Returns ``(threshold, raw_corpus_score)``; ties keep the higher threshold.
    """
    scores, value, owner, n_windows = _prepare(files, profile)
    order = np.argsort(-scores, kind="stable")
    best = np.full(n_windows, -profile.fn)
    raw = -profile.fn * n_windows
    best_raw, best_t = raw, NOTHING_DETECTED
    s_sorted = scores[order]
    i = 0
    n = len(order)
    while i < n:
        t = s_sorted[i]
        while i < n and s_sorted[i] == t:
            row = order[i]
            k = owner[row]
            if k < 0:
                raw += value[row]
            elif value[row] > best[k]:
                raw += value[row] - best[k]
                best[k] = value[row]
            i += 1
        if raw > best_raw:
            best_raw, best_t = raw, float(t)
    return best_t, float(best_raw)


@dataclass
class CorpusScore:
    """A detector's result for one profile, on NAB's 0-100 scale and raw."""

    threshold: float
    raw: float
    normalised: float
    null_raw: float
    perfect_raw: float


def score_corpus(
    files: Mapping[str, tuple[Sequence[float], Sequence[tuple[int, int]]]],
    profile: Profile,
    n_windows_total: int,
) -> CorpusScore:
    """Optimise the threshold, then normalise between the corpus's null and perfect detectors."""
    threshold, raw = optimise_threshold(files, profile)
    null_raw = -profile.fn * n_windows_total
    perfect_raw = profile.tp * n_windows_total
    return CorpusScore(threshold, raw, normalise(raw, profile, n_windows_total), null_raw, perfect_raw)


def normalise(raw: float, profile: Profile, n_windows_total: int) -> float:
    """Map a raw corpus score to the scoreboard: null detector 0, perfect detector 100."""
    null_raw = -profile.fn * n_windows_total
    perfect_raw = profile.tp * n_windows_total
    return 100.0 * (raw - null_raw) / (perfect_raw - null_raw)
