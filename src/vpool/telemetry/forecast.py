"""Short-horizon forecasts of one metric series, for predictive DRS and autoscaling.

The model is additive Holt-Winters (ETS(A,Ad,A)): a level, a damped trend and, when the
series has one, a season. Damping keeps a trend from running away over the horizon, which
matters more to a balancer than squeezing the last percent of accuracy.

The season is found, not configured: the period is the lag of the strongest peak of the
autocorrelation of the first-differenced series (differencing removes a slow drift that
would otherwise make every lag look alike), accepted only when that peak is clearly
positive and at least two periods fit in the history. Utilisation series often have no
season at the scale a balancer looks at; they then get a damped-trend model.

Smoothing constants are chosen by one-step-ahead squared error over a small fixed grid,
every combination run at once as NumPy vectors, so fitting one series of a few hundred
points costs a few milliseconds and updating it afterwards costs microseconds.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["HoltWinters", "detect_season", "forecast_points", "regular"]

MIN_POINTS = 12  # fewer, and the smoothing constants are chosen on noise

_ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9)
_BETAS = (0.0, 0.05, 0.2)
_PHIS = (0.8, 0.95)
_GAMMAS = (0.05, 0.2, 0.5)


def detect_season(values: np.ndarray, max_period: int | None = None, min_strength: float = 0.3) -> int:
    """The dominant period of a series in samples, or 0 when there is none worth modelling."""
    x = np.diff(np.asarray(values, dtype=float))
    n = len(x)
    max_period = min(max_period or n // 2, n // 2)
    if max_period < 3:
        return 0
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom == 0.0:
        return 0
    acf = np.array([np.dot(x[:-lag], x[lag:]) / denom for lag in range(1, max_period + 1)])
    best, best_lag = min_strength, 0
    for lag in range(2, max_period):
        a = acf[lag - 1]
        if a > best and a >= acf[lag - 2] and a >= acf[lag]:
            best, best_lag = a, lag
    return best_lag


class HoltWinters:
    """Additive Holt-Winters with a damped trend and a detected season; see the module docstring."""

    def __init__(self, season: int | None = None, max_period: int | None = None):
        self.requested_season = season
        self.max_period = max_period
        self.season = 0
        self.alpha = self.beta = self.gamma = 0.0
        self.phi = 1.0
        self.level = self.trend = 0.0
        self.seasonal = np.zeros(0)
        self.phase = 0
        self.non_negative = False

    def fit(self, values) -> "HoltWinters":
        """Detect the season, choose the smoothing constants, and run the model through ``values``."""
        y = np.asarray(values, dtype=float)
        if len(y) < 2:
            raise ValueError("need at least two points to fit a forecaster")
        self.non_negative = bool(np.all(y >= 0))
        m = self.requested_season if self.requested_season is not None else detect_season(y, self.max_period)
        self.season = m if m and len(y) >= 2 * m else 0
        gammas = _GAMMAS if self.season else (0.0,)
        grid = np.array(list(itertools.product(_ALPHAS, _BETAS, _PHIS, gammas)))
        alpha, beta, phi, gamma = grid.T
        k = len(grid)

        level, trend, seasonal, start = self._initial_state(y)
        level = np.full(k, level)
        trend = np.full(k, trend)
        seasonal = np.tile(seasonal, (k, 1))
        sse = np.zeros(k)
        for t in range(start, len(y)):
            j = (t - start) % self.season if self.season else 0
            s = seasonal[:, j] if self.season else 0.0
            error = y[t] - (level + phi * trend + s)
            sse += error * error
            new_level = level + phi * trend + alpha * error
            trend = phi * trend + alpha * beta * error
            if self.season:
                seasonal[:, j] = s + gamma * (1 - alpha) * error
            level = new_level
        best = int(np.argmin(sse))
        self.alpha, self.beta, self.phi, self.gamma = (float(v) for v in grid[best])
        self.level, self.trend = float(level[best]), float(trend[best])
        self.seasonal = seasonal[best].copy() if self.season else np.zeros(0)
        self.phase = (len(y) - start) % self.season if self.season else 0
        return self

    def _initial_state(self, y: np.ndarray) -> tuple[float, float, np.ndarray, int]:
        """Level, trend and seasonal indices from the first one or two periods."""
        m = self.season
        if not m:
            return float(y[0]), float(y[1] - y[0]) if len(y) > 1 else 0.0, np.zeros(0), 1
        first, second = y[:m], y[m : 2 * m]
        trend = float(second.mean() - first.mean()) / m
        return float(first.mean()) + trend * (m - 1) / 2, trend, first - first.mean(), m

    def update(self, value: float) -> None:
        """Fold one new observation into the state, with the fitted constants (error-correction form)."""
        s = self.seasonal[self.phase] if self.season else 0.0
        error = value - (self.level + self.phi * self.trend + s)
        new_level = self.level + self.phi * self.trend + self.alpha * error
        self.trend = self.phi * self.trend + self.alpha * self.beta * error
        if self.season:
            self.seasonal[self.phase] = s + self.gamma * (1 - self.alpha) * error
            self.phase = (self.phase + 1) % self.season
        self.level = new_level
        if value < 0:
            self.non_negative = False

    def forecast(self, h: int) -> np.ndarray:
        """The next ``h`` values; never negative for a series that has never been negative."""
        steps = np.arange(1, h + 1)
        damped = np.cumsum(self.phi ** steps)
        out = self.level + damped * self.trend
        if self.season:
            out = out + self.seasonal[(self.phase + steps - 1) % self.season]
        if self.non_negative:
            out = np.maximum(out, 0.0)
        return out


def regular(points: list[tuple[float, float]], step_s: float) -> tuple[float, np.ndarray]:
    """Stored points (t seconds, value), oldest first, as one value per step from the first:
    a step's mean, and the last value carried over a step without points (a collector that
    was down). Holt-Winters needs evenly spaced values; the collector's are only nearly so."""
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points], dtype=float)
    index = ((t - t[0]) // step_s).astype(int)
    sums = np.bincount(index, weights=v)
    counts = np.bincount(index)
    out = np.empty(len(counts))
    last = v[0]
    for i, (total, n) in enumerate(zip(sums, counts)):
        last = total / n if n else last
        out[i] = last
    return float(t[0]), out


def forecast_points(points: list[tuple[float, float]], step_s: float, horizon_s: float) -> dict:
    """The series' next values, a step apart up to the horizon, from a model fitted on `points`."""
    if len(points) < MIN_POINTS:
        raise ValueError(f"{len(points)} stored points are too few to forecast from; at least {MIN_POINTS} are needed")
    start, values = regular(points, step_s)
    if len(values) < MIN_POINTS:
        raise ValueError(f"the stored points cover only {len(values)} steps of {step_s:g} s; at least "
                         f"{MIN_POINTS} are needed")
    model = HoltWinters(max_period=len(values) // 2).fit(values)
    steps = max(1, int(horizon_s // step_s))
    last = start + (len(values) - 1) * step_s
    ahead = model.forecast(steps)
    return {"step_s": step_s, "fitted_on": len(values), "season_steps": model.season,
            "last": [last, float(values[-1])],
            "points": [[last + (i + 1) * step_s, float(x)] for i, x in enumerate(ahead)]}
