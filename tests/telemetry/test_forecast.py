"""Holt-Winters forecaster and season detection on short synthetic series."""

import numpy as np
import pytest

from vpool.telemetry.forecast import HoltWinters, detect_season, forecast_points, regular


def seasonal(n, period=24, amplitude=10.0, noise=0.5, seed=0, base=50.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return base + amplitude * np.sin(2 * np.pi * t / period) + rng.normal(0, noise, n)


def test_detects_the_period_of_a_noisy_cycle():
    assert detect_season(seasonal(240, period=24)) == 24
    assert detect_season(seasonal(240, period=12) + 0.05 * np.arange(240)) == 12


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).normal(0, 1, 240),
        np.full(100, 3.0),
        np.arange(100, dtype=float),
        np.array([1.0, 2.0, 3.0]),
    ],
    ids=["white-noise", "constant", "ramp", "too-short"],
)
def test_no_season_where_there_is_none(values):
    assert detect_season(values) == 0


def test_seasonal_series_is_forecast_a_full_period_ahead():
    y = seasonal(240, period=24, noise=0.2)
    model = HoltWinters().fit(y[:200])
    assert model.season == 24
    predicted = model.forecast(24)
    assert np.mean(np.abs(predicted - (y[200:224]))) < 1.0
    naive = np.mean(np.abs(y[199] - y[200:224]))
    assert naive > 5.0


def test_trend_is_followed_but_damped():
    y = 10.0 + 0.5 * np.arange(100)
    model = HoltWinters().fit(y)
    f = model.forecast(20)
    assert model.season == 0
    assert np.all(np.diff(f) > 0)
    assert f[0] == pytest.approx(y[-1] + 0.5, abs=0.2)
    assert f[-1] < y[-1] + 0.5 * 20


def test_updates_track_a_level_shift():
    rng = np.random.default_rng(3)
    model = HoltWinters().fit(20 + rng.normal(0, 1, 150))
    assert model.forecast(1)[0] == pytest.approx(20, abs=1.5)
    for v in 60 + rng.normal(0, 1, 60):
        model.update(float(v))
    assert model.forecast(3) == pytest.approx(np.full(3, 60.0), abs=3.0)


def test_non_negative_series_are_never_forecast_below_zero():
    y = np.maximum(0.0, 30 - 0.4 * np.arange(80))
    y[-10:] = [8, 6, 5, 3, 2, 1, 0, 0, 0, 0]
    f = HoltWinters().fit(y).forecast(30)
    assert np.all(f >= 0.0)


def test_fitting_needs_two_points():
    with pytest.raises(ValueError):
        HoltWinters().fit([1.0])


def test_stored_points_become_one_value_per_step():
    """Means within a step, the last value carried over a step the collector missed."""
    start, values = regular([(100.0, 1.0), (104.0, 3.0), (111.0, 5.0), (135.0, 7.0)], 10.0)
    assert start == 100.0 and values.tolist() == [2.0, 5.0, 5.0, 7.0]


def test_a_stored_cycle_is_forecast_from_irregular_points():
    """A 10-minute cycle sampled every ~10 s with jitter and a gap, stepped at 30 s: the forecast
    continues the cycle, and says it found one."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(9, 11, 2200))
    t = t[(t < 9000) | (t > 9300)]  # a collector down for five minutes
    points = [(float(x), 50 + 30 * np.sin(2 * np.pi * x / 600) + rng.normal(0, 1)) for x in t]
    f = forecast_points(points, 30.0, 600.0)
    assert f["season_steps"] == 20 and len(f["points"]) == 20 and f["step_s"] == 30.0
    truth = [50 + 30 * np.sin(2 * np.pi * (p[0] + 15) / 600) for p in f["points"]]  # a step's mean is mid-step
    assert np.mean(np.abs(np.array([p[1] for p in f["points"]]) - truth)) < 5


def test_too_few_points_say_so():
    with pytest.raises(ValueError, match="too few"):
        forecast_points([(float(i), 1.0) for i in range(5)], 10.0, 60.0)
    with pytest.raises(ValueError, match="cover only"):
        forecast_points([(float(i), 1.0) for i in range(40)], 10.0, 60.0)
