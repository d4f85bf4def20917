"""Adaptive resonance over wavelet features: ARTime, restated, as a second opinion on shape.

Why it is here: the context tables in ``detectors`` judge a few coarse values at a time, and
a series whose every value and every pair is ordinary can still have an extraordinary day (a
holiday shaped like a Sunday, a storm that halves a working day, a sensor stuck at its
mean). ARTime, the best published detector on the Numenta Anomaly Benchmark (74.9 on the full
corpus), clusters the shape of the last eight steps online and calls a feature that
resonates with no cluster news. Its published per-file scores hold up off NAB's development
subset (74.3 on the subset's files, 75.2 on the three folders the subset lacks), where the
context-table family falls (CAD OSE: 76.1 and 65.2). ``ContextNoveltyDetector`` lets it
speak in the band below its own alarms; see there.

Restated in our own words from the algorithm of ARTimeNAB.jl (the version NAB ran for its
published results; no code copied). Uncapped (``max_categories=None``) it reproduces NAB's
published per-file results of ARTime at its published threshold on all 35 subset files (the
NAB benchmark runs it so, and a test keeps three). The Haar detail's sign matters for that:
(second - first) / sqrt(2), as Wavelets.jl has it; the other sign changes 17 of the 35 files.

In outline:

- the series is cut into steps of ``probation // 104`` points, so the learning period is
  always about 104 steps whatever its length; a step is its extreme farther from a running
  average of step means, or its mean when that extreme is within 10 % of it;
- the step is put on an 80-level grid of the series' range and, when within 0.075 of a
  running median level, snapped to it (quiet wobble is not shape);
- the last 8 step values and their Haar wavelet coefficients (both scaled to 0..1) are a
  16-value feature, clustered online by a dual-vigilance fuzzy ART: a feature that resonates
  with no category above the lower vigilance founds a new cluster, and a new cluster after
  the learning period is an anomaly, scored by how far below the vigilances it fell;
- the vigilances start from the mean similarity of the learning period's features,
  self-clustered, and move with the similarities the series keeps showing; alarms are masked
  for a while after one, unless the next is clearly worse.

Cost: a step compares the feature with every category (numpy over a 32 x categories array),
about 5-10 us a point on NAB's files (one step every ``probation // 104`` points). Categories
grow with the variety a series shows (up to 250 in 4,000 points of NAB's subset), so the
control plane caps them (``max_categories``): at the cap the category that resonated least
recently makes room.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Resonance"]

WINDOW = 8  # step values per feature
STEPS_PER_PROBATION = 13 * WINDOW
LEVELS = 80
SNAP = 0.075  # distance to the running median level inside which a step is the median
INITIAL_RHO = 0.80
MASK = 12  # steps after an alarm during which another must be clearly worse (1.5 windows)


def _haar(x: list[float]) -> list[float]:
    """Full orthonormal Haar transform: [approximation, details from coarsest to finest]."""
    out: list[float] = []
    level = list(x)
    r = 1 / math.sqrt(2)
    while len(level) > 1:
        pairs = range(0, len(level), 2)
        out = [(level[k + 1] - level[k]) * r for k in pairs] + out
        level = [(level[k] + level[k + 1]) * r for k in pairs]
    return level + out


def _unit(x: list[float]) -> list[float]:
    """Shift to a minimum of 0 and scale to a maximum of 1 (unless flat)."""
    low = min(x)
    x = [v - low for v in x]
    high = max(x)
    return [v / high for v in x] if high != 0 else x


def _similarity(features: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows (1 on the diagonal); a zero row's similarity to
    another is 1 minus that one's norm, as ARTime has it."""
    norms = np.linalg.norm(features, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (features @ features.T) / np.outer(norms, norms)
    zero = norms == 0.0
    sim[zero, :] = 1 - norms[None, :]
    sim[:, zero] = 1 - norms[:, None]
    np.fill_diagonal(sim, 1.0)
    return sim


class _DualVigilanceART:
    """Fuzzy ART with two vigilances over complement-coded features.

    A category whose match reaches ``rho_ub`` learns the feature (fast commit); failing that,
    the best one reaching ``rho_lb`` lends its cluster label to a new category holding the
    feature; failing both, the feature founds a new cluster (label -1 returned). The match
    multiplies the fuzzy subset measure (cubed) by that of the newest step value alone (the
    "energy", squared), so a shape seen before at another level still stands out.
    """

    def __init__(self, dim: int, rho_lb: float = 0.0, rho_ub: float = 0.0, max_categories: int | None = None):
        self.dim = dim
        self.rho_lb, self.rho_ub = rho_lb, rho_ub
        self.cap = max_categories
        self.w = np.ones((2 * dim, 16))
        self.used = np.zeros(16)  # the step at which each category last resonated
        self.n = 0
        self.step = 0
        self.labels: list[int] = []
        self.clusters = 0
        self.similarity = 0.0  # the newest feature's best match (ARTime's A)
        self.energy = 0.0  # that category's energy similarity (Ae)

    def _add(self, x: np.ndarray, label: int) -> None:
        if self.cap is not None and self.n >= self.cap:
            j = int(np.argmin(self.used[:self.n]))
            self.labels[j] = label
        else:
            if self.n == self.w.shape[1]:
                self.w = np.concatenate([self.w, np.ones_like(self.w)], axis=1)
                self.used = np.concatenate([self.used, np.zeros_like(self.used)])
            j = self.n
            self.n += 1
            self.labels.append(label)
        self.w[:, j] = x
        self.used[j] = self.step

    def train(self, feature: list[float], learning: bool = True) -> int:
        """The feature's cluster label, -1 for a new cluster; `similarity` and `energy` then
        say how well the best category matched."""
        self.step += 1
        x = np.array(feature + [1.0 - f for f in feature])
        if self.n == 0:  # the first feature only founds the all-ones category
            self._add(np.ones(2 * self.dim), 1)
            self.clusters = 1
            self.similarity = self.energy = 0.0
            return 1
        w = self.w[:, :self.n]
        meet = np.minimum(x[:, None], w)
        size = w.sum(axis=0)
        size[size == 0] = 0.001
        e = self.dim - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            energy = (meet[e] + meet[-1]) / (w[e] + w[-1])
            match = (meet.sum(axis=0) / size) ** 3 * energy ** 2
        order = np.argsort(-match, kind="stable")
        undefined = np.isnan(match)
        if undefined.any():  # ARTime's reverse sort puts an undefined match first, ending the search
            order = np.concatenate([np.flatnonzero(undefined), order[~undefined[order]]])
        best = best_energy = 0.0
        label, mismatch = -1, True
        for j in order.tolist():
            m = match[j]
            if m > best:
                best, best_energy = m, energy[j]
                self.used[j] = self.step
            if not learning:
                continue
            if m >= self.rho_ub:
                self.w[:, j] = meet[:, j]
                if m >= best:
                    label = self.labels[j]
                mismatch = False
            elif m >= self.rho_lb and mismatch:
                if m >= best:
                    label = self.labels[j]
                self._add(x, label)
                mismatch = False
                break
            else:
                break
        self.similarity, self.energy = float(best), float(best_energy)
        if mismatch and learning:
            label = -1
            self.clusters += 1
            self._add(x, self.clusters)
        return label


class Resonance:
    """One series' ARTime, told the series' range and its learning period (NAB's probation)."""

    def __init__(self, low: float, high: float, probation: int, max_categories: int | None = None):
        self.low, self.high = low, high
        probation -= probation % 2
        self.sstep = max(1, probation // STEPS_PER_PROBATION)
        self.trend = max(1, probation // self.sstep)
        self.max_categories = max_categories
        self.i = 1
        self.dsi = 1
        self.step_window = [0.0] * self.sstep
        self.average = 0.0
        self.median_bins = [0] * (LEVELS + 1)
        self.median = self.below = self.above = 0
        self.values = [0.0] * WINDOW
        self.probation_features: list[list[float]] | None = []
        self.art = _DualVigilanceART(2 * WINDOW, max_categories=max_categories)
        self.last_alarm = 0
        self.last_alarm_similarity = 0.0
        self.last_alarm_similarity_low = 0.0  # the last alarm's similarity, lowered through its mask
        self.last_rho_update = 0
        self.mask_after_cluster = False
        self.quiet_steps = 0
        self.alarm_similarity_sum = 0.0
        self.alarm_similarity_count = 0
        self.similarity_mean = 0.0
        self.similarity_count = 0
        self.recent_similarity = [1.0] * (self.trend // 2 + 1)
        self.recent_shortfall = [0.0] * (self.trend + 1)

    def update(self, value: float) -> float:
        """Consume one point; a score in [0, 1] at the end of a step that founds a new cluster."""
        self.step_window = self.step_window[1:] + [value]
        score = 0.0
        if self.i % self.sstep == 0:
            score = self._features(self._step())
            self.dsi += 1
        self.i += 1
        return score

    def _step(self) -> float:
        """The step's value on the grid, snapped to the running median when near it."""
        w = self.step_window
        mean, top, bottom = sum(w) / len(w), max(w), min(w)
        if self.dsi == 1:
            self.average = mean
        self.average = (self.average + mean) / 2
        v = bottom if abs(top - self.average) < abs(bottom - self.average) else top
        if abs(v - mean) < 0.1 * mean:
            v = mean
        v -= self.low
        if self.high != self.low:
            v /= self.high - self.low
        level = LEVELS if v >= 1 else 0 if v <= 0 else round(v * LEVELS)  # beyond the told range: its edge
        v = level / LEVELS
        bins = self.median_bins
        bins[level] += 1
        if self.dsi == 1:
            self.median = level
        if self.median > level:
            self.below += 1
        elif self.median < level:
            self.above += 1
        half = self.dsi // 2
        if half < self.above:  # walk the median up one occupied level
            self.below += bins[self.median]
            self.median += 1
            while bins[self.median] == 0:
                self.median += 1
            self.above -= bins[self.median]
        elif half < self.below:
            self.above += bins[self.median]
            self.median -= 1
            while bins[self.median] == 0:
                self.median -= 1
            self.below -= bins[self.median]
        median = self.median / LEVELS
        return median if abs(v - median) < SNAP else v

    def _features(self, v: float) -> float:
        self.values = self.values[1:] + [v]
        feature = [0.0] * (2 * WINDOW)
        if self.dsi >= WINDOW:
            feature = _unit(_haar(_unit(self.values))) + self.values
        i = self.dsi
        if self.probation_features is None:
            return self._detect(feature, i)
        self.probation_features.append(feature)
        if i == self.trend:  # the learning period's features, self-clustered, set the first vigilance
            features, self.probation_features = self.probation_features, None
            rho = self._initial_rho(np.array(features[WINDOW - 1:]))
            self.art.rho_lb = self.art.rho_ub = rho
            for k, f in enumerate(features, start=1):
                self._detect(f, k)
        return 0.0

    def _initial_rho(self, features: np.ndarray) -> float:
        if len(features) == 0:
            return INITIAL_RHO
        order = np.argsort(_similarity(features).sum(axis=0), kind="stable")
        art = _DualVigilanceART(2 * WINDOW, INITIAL_RHO, INITIAL_RHO, self.max_categories)
        similarity = []
        for f in features[order]:
            art.train(f.tolist())
            similarity.append(art.similarity)
        return float(np.mean(similarity[self.trend // 2 - 1:] or similarity))

    def _detect(self, feature: list[float], i: int) -> float:
        art = self.art
        since_alarm = i - self.last_alarm
        if i > self.trend + MASK and self.mask_after_cluster and self.quiet_steps >= MASK:
            self.mask_after_cluster = False
        cluster = art.train(feature, learning=i >= WINDOW)
        if i < WINDOW:
            cluster = -1
        self.quiet_steps = 0 if cluster == -1 else self.quiet_steps + 1
        a = art.similarity
        self.similarity_count += 1
        self.similarity_mean += (a - self.similarity_mean) / self.similarity_count
        self.recent_similarity = self.recent_similarity[1:] + [a]
        self.recent_shortfall = self.recent_shortfall[1:] + [art.rho_ub - a]
        if since_alarm < MASK and self.alarm_similarity_count and a < self.last_alarm_similarity_low:
            self.alarm_similarity_sum += a - self.last_alarm_similarity_low
            self.last_alarm_similarity_low = a
        masked = self.mask_after_cluster or since_alarm <= MASK
        clearly_worse = a < self.last_alarm_similarity * (0.90 if since_alarm <= MASK else 0.70)
        score = 0.0
        if i > self.trend and cluster == -1 and (not masked or clearly_worse):
            score = self._confidence(a, art.energy)
            self.alarm_similarity_sum += a
            self.alarm_similarity_count += 1
            self.last_alarm_similarity_low = a
            self.last_alarm_similarity = a
            self.last_alarm = i
        self.mask_after_cluster = cluster == -1 or self.mask_after_cluster
        if i > self.trend and (since_alarm == MASK or i - self.last_rho_update >= self.trend // 2):
            self._move_vigilance(i)
        return score

    def _move_vigilance(self, i: int) -> None:
        """Raise the lower vigilance towards the worst recent similarity when the series stays
        above it; lower it by the recent shortfall when not, never below past alarms' mean."""
        art = self.art
        worst = min(self.recent_similarity)
        ub = min(0.97, self.similarity_mean)
        lb = art.rho_lb
        if lb <= worst:
            lb += (worst - lb) * 0.19
        else:
            drop = 0.0
            if i > self.trend * 2:
                short = [min(0.37, s) for s in self.recent_shortfall if s > 0.05]
                if short:
                    drop = sum(short) / len(short)
            lb -= max(0.01, drop) / 2
            if self.alarm_similarity_count:
                lb = max(self.alarm_similarity_sum / self.alarm_similarity_count, lb)
        art.rho_lb, art.rho_ub = min(ub, lb), ub
        self.last_rho_update = i
        self.mask_after_cluster = True

    def _confidence(self, similarity: float, energy: float) -> float:
        s = min(0.999, similarity)
        ub = ((1 - s) - (1 - self.art.rho_ub)) / (1 - s)
        lb = ((1 - s) - (1 - self.art.rho_lb)) / (1 - s)
        return round(min(1.0, ub * 0.35 + lb * 0.65 + (1.0 - energy) * 1.5), 6)
