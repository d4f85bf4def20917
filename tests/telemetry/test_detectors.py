"""Behaviour of vpool's streaming detector on short synthetic series and one NAB file."""

import csv
import json
import math
import random

import pytest

from tests.shared import SHARED
from vpool.telemetry.detectors import PARAMETERS, ContextNoveltyDetector, make_detector
from vpool.telemetry.resonance import Resonance

NAB = SHARED / "nab" / "data"


def run(detector, values):
    return [detector.update(10.0 * i, v) for i, v in enumerate(values)]


def daily(n, period=96, noise=1.0, seed=0):
    rng = random.Random(seed)
    return [50 + 20 * math.sin(2 * math.pi * i / period) + rng.gauss(0, noise) for i in range(n)]


@pytest.mark.parametrize("value_range", [None, (0.0, 100.0)])
def test_scores_are_in_unit_interval_and_silent_while_learning(value_range):
    values = daily(2000)
    scores = run(make_detector(300, value_range), values)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert not any(scores[:300])


@pytest.mark.parametrize("value_range", [None, (0.0, 100.0)])
def test_no_look_ahead_a_prefix_scores_the_same_alone(value_range):
    values = daily(1500, seed=3)
    values[1200] = 95.0
    full = run(make_detector(200, value_range), values)
    prefix = run(make_detector(200, value_range), values[:1000])
    assert full[:1000] == prefix


@pytest.mark.parametrize("value_range", [None, (-50.0, 150.0)])
def test_level_shift_in_a_periodic_series_is_the_strongest_alert(value_range):
    values = daily(3000, seed=1)
    values[2400:] = [v + 40 for v in values[2400:]]
    scores = run(make_detector(400, value_range), values)
    top = max(range(400, 3000), key=scores.__getitem__)
    assert 2400 <= top < 2420
    assert scores[top] > 2 * max(scores[400:2400])


def test_spike_in_a_byte_rate_of_unknown_range_is_found():
    values = [1e6 * v for v in daily(2000, seed=7)]
    values[1500] = 4e8
    scores = run(make_detector(300), values)
    assert max(range(300, 2000), key=scores.__getitem__) == 1500
    assert scores[1500] > 0.9


def test_repeated_alerts_of_one_incident_are_inhibited():
    values = [10.0 + (i % 7) * 0.1 for i in range(1200)] + [60.0 + (i % 5) for i in range(200)]
    scores = run(make_detector(300), values)
    first = scores[1200]
    assert first > 0.5
    assert max(scores[1203:1400]) < first / 2


def test_flat_series_is_quiet_until_it_steps():
    values = [5.0] * 1000 + [6.0] * 50
    scores = run(make_detector(300), values)
    assert not any(scores[:1000])
    assert scores[1000] > 0.5


def test_missing_samples_are_skipped():
    detector = make_detector(50, (0.0, 10.0))
    values = [5.0, float("nan")] * 100
    scores = run(detector, values)
    assert all(s == 0.0 for s in scores[1::2])


@pytest.mark.parametrize("value_range", [None, (-100.0, 100.0)])
def test_state_stays_bounded_on_a_long_random_walk(value_range):
    rng = random.Random(11)
    detector = ContextNoveltyDetector(300, value_range)
    x = 0.0
    for i in range(30000):
        x += rng.gauss(0, 1)
        detector.update(10.0 * i, x)
    bound = (detector.levels + 2) ** detector.scales[0].context
    assert all(k.bit_length() <= bound for scale in detector.scales for k in scale.known)
    # the fine grid and the daily slots only where the range stays
    assert (detector.fine is None) == (detector.daily is None) == (value_range is None)
    if value_range is not None:
        assert all(k.bit_length() <= detector.fine.levels + 2 for k in detector.fine.known)
        assert all(k.bit_length() <= detector.daily.slots * (detector.levels + 2) for k in detector.daily.known)
    assert len(detector.history) <= (300 if value_range is None else 0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("value_range", [None, "known"])
def test_white_noise_raises_at_most_a_couple_of_alerts(seed, value_range):
    rng = random.Random(seed)
    values = [rng.gauss(0, 1) for _ in range(4000)]
    known = (min(values), max(values)) if value_range else None
    scores = run(make_detector(600, known), values)
    assert sum(s > 0.5 for s in scores[600:]) <= 2


def poisson(rng, lam):
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@pytest.mark.parametrize("seed", range(3))
def test_burst_in_spiky_hourly_counts_is_the_only_alert(seed):
    """Mention counts (small Poisson counts on a daily cycle, one point an hour) with a
    burst: the burst's first point is the top score and nothing before it alerts."""
    rng = random.Random(seed)
    values = [poisson(rng, 4 + 3 * math.sin(2 * math.pi * i / 24)) for i in range(6000)]
    for i in range(4500, 4520):
        values[i] += 40
    detector = make_detector(750, (min(values), max(values)))
    scores = [detector.update(3600.0 * i, v) for i, v in enumerate(values)]
    assert max(range(750, 6000), key=scores.__getitem__) == 4500
    assert max(scores[750:4500]) < 0.5


@pytest.mark.skipif(not NAB.exists(), reason="NAB development subset not present")
def test_rds_cpu_level_shifts_rank_inside_their_labelled_windows():
    name = "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv"
    with (NAB / name).open() as fh:
        values = [float(row["value"]) for row in csv.DictReader(fh)]
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())[name]
    assert len(windows) == 2
    probation = min(len(values) * 15 // 100, 750)
    scores = run(make_detector(probation, (min(values), max(values))), values)
    top = max(range(probation, len(values)), key=scores.__getitem__)
    # Windows (row indices from the label timestamps): 846..1046 and 2485..2685.
    assert 846 <= top <= 1046 or 2485 <= top <= 2685


def office_hours(days: int, skip_day: int | None = None, per_day: int = 288, seed: int = 0) -> list[float]:
    """Samples low at night and high 09-17 h, except on `skip_day`, which stays low."""
    rng = random.Random(seed)
    out = []
    for i in range(days * per_day):
        day, hour = divmod(i * 24 / per_day, 24)
        busy = 9 <= hour < 17 and day != skip_day
        out.append((80.0 if busy else 20.0) + rng.gauss(0, 2))
    return out


@pytest.mark.parametrize("interval_s", [300, 30])
def test_a_day_whose_busy_hours_never_come_is_found(interval_s):
    """Every value of the missing working day is an ordinary night value, and every pair of
    them is too: only the time of day makes it news (NAB's art_daily_nojump; a holiday in a
    business metric). The daily slots find it during the hours that should have been busy,
    whatever the interval."""
    per_day = 86400 // interval_s
    values = office_hours(14, skip_day=10, per_day=per_day)
    stamps = [float(interval_s * i) for i in range(len(values))]
    should_be_busy = range(10 * per_day + 9 * per_day // 24, 10 * per_day + 17 * per_day // 24 + 1)
    scores = {}
    for slots in (12, 0):
        detector = ContextNoveltyDetector(750, (0.0, 100.0), daily_slots=slots, resonance_band=0)
        scores[slots] = [detector.update(t, v) for t, v in zip(stamps, values)]
    daily = scores[12]
    top = max(range(max(750, per_day), len(values)), key=daily.__getitem__)  # after the first day's news
    assert top in should_be_busy and daily[top] > 0.4
    assert max(scores[0][i] for i in should_be_busy) < 0.1  # without them, nothing there is new


@pytest.mark.parametrize("busy_hours_come", [False, True])
def test_a_restarted_detector_recalls_the_days_before_from_hourly_means(busy_hours_come):
    """After a restart the control plane replays under an hour of raw samples; the daily slots
    learn from the store's hourly means of the two weeks before instead (``recall``), so a
    working day whose busy hours never come is found on the second day after the restart, and a
    working day that is ordinary raises nothing. A detector without them has met each slot once
    and says nothing."""
    stored = office_hours(14, per_day=24, seed=1)
    means = [(3600.0 * i, v) for i, v in enumerate(stored)]
    after = office_hours(2, skip_day=None if busy_hours_come else 1, per_day=8640, seed=2)  # 10 s samples
    stamps = [14 * 86400.0 + 10.0 * i for i in range(len(after))]
    second = range(8640, 2 * 8640)  # the first day taught the point-count scales the day's jumps
    busy = range(8640 + 10 * 360, 8640 + 17 * 360)  # 10-17 h of the second day
    scores = {}
    for recalled in (True, False):  # the resonance, which hears such a day too (below), is left out
        detector = ContextNoveltyDetector(300, (0.0, 100.0), **{**PARAMETERS, "resonance_band": 0})
        assert detector.recall_s >= 14 * 86400
        if recalled:
            detector.recall(means)
        scores[recalled] = [detector.update(t, v) for t, v in zip(stamps, after)]
    if busy_hours_come:
        assert max(scores[True][i] for i in second) < 0.5
    else:
        assert max(scores[True][i] for i in busy) > 0.4
        assert max(scores[True][i] for i in range(8640, 8640 + 9 * 360)) < 0.5  # the night before is ordinary
    assert max(scores[False][i] for i in busy) < 0.1
    assert make_detector(300).recall_s == 0  # a learnt range is rebuilt as it grows: no days to recall onto


def test_a_clean_daily_cycle_raises_nothing_from_the_daily_slots_its_first_day_included():
    """At a 10 s interval each slot of the first day is a time of day never seen; the slots'
    novelty rate, high while every slot is new, keeps that from being news, and a clean daily
    cycle raises nothing on the days after."""
    rng = random.Random(1)
    values = [40 + 20 * math.sin(2 * math.pi * i / 8640) + rng.gauss(0, 3) for i in range(3 * 8640)]
    detector = make_detector(300, (0.0, 100.0))
    scores = [detector.update(1.7e9 + 10.0 * i, v) for i, v in enumerate(values)]
    assert max(scores[300:]) < 0.5


@pytest.mark.parametrize("seed", range(2))
def test_a_burst_inside_the_lowest_bin_of_a_spike_set_range_is_found(seed):
    """Five-minute counts of 0-30 whose range a spike to about 420 sets (as a tweet count's
    does): on six levels a bin is 72 wide and a later burst to 60-90 shares the lowest bins with
    ordinary values; the fine grid sees it, and nothing else alerts."""
    rng = random.Random(seed)
    values = [rng.uniform(0, 30) for _ in range(15800)]
    values[5000:5010] = [400 + rng.uniform(0, 30) for _ in range(10)]
    values[9000:9020] = [rng.uniform(60, 90) for _ in range(20)]
    scores = {}
    for fine_levels in (12, 0):
        detector = ContextNoveltyDetector(750, (min(values), max(values)), fine_levels=fine_levels, resonance_band=0)
        scores[fine_levels] = [detector.update(300.0 * i, v) for i, v in enumerate(values)]
    fine = scores[12]
    assert max(fine[9000:9040]) > 0.9 and max(fine[5000:5040]) > 0.9
    assert max(s for i, s in enumerate(fine[750:], 750) if not (5000 <= i < 5040 or 9000 <= i < 9040)) < 0.5
    assert max(scores[0][9000:9040]) < 0.1  # the coarse grid alone misses it


@pytest.mark.parametrize("seed", range(4))
def test_the_resonance_hears_a_stuck_sensor_in_the_band_below_the_context_alarms(seed):
    """A daily cycle whose sensor sticks at its value for a day: each stuck value is ordinary,
    and so is each pair (the cycle passes through them), so the context tables alone say
    nothing. Eight flat steps are a shape the resonance never met: it speaks within hours, inside
    its band (below every context alarm), and at most once above 0.1 on the other 13 days."""
    rng = random.Random(seed)
    values = [50 + 20 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 3) for i in range(14 * 288)]
    stuck = range(10 * 288 + 100, 11 * 288 + 100)
    values[stuck.start:stuck.stop] = [values[stuck.start]] * len(stuck)
    scores = {}
    for band in (0.35, 0):
        detector = ContextNoveltyDetector(750, (0.0, 100.0), daily_slots=0, resonance_band=band)
        scores[band] = [detector.update(300.0 * i, v) for i, v in enumerate(values)]
    heard = scores[0.35]
    assert 0.1 < max(heard[stuck.start:stuck.start + 108]) <= 0.35  # within nine hours
    assert sum(s > 0.1 for i, s in enumerate(heard) if not stuck.start <= i < stuck.stop + 100) <= 1
    assert max(scores[0]) == 0.0


def test_the_resonance_keeps_its_categories_under_the_cap_and_takes_values_beyond_its_range():
    """The control plane runs one per CPU series for months: the categories stop at the cap
    (the least recently resonating makes room), and a value beyond the told range (a counter
    glitch) is the range's edge, not an error."""
    rng = random.Random(3)
    values = [rng.uniform(0, 100) for _ in range(20000)]
    capped, uncapped = Resonance(0.0, 100.0, 300, max_categories=16), Resonance(0.0, 100.0, 300)
    for v in values:
        capped.update(v), uncapped.update(v)
    assert capped.art.n == 16 < uncapped.art.n
    scores = [capped.update(v) for v in (150.0, -20.0, 1e9) * 10]
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize("seed", range(4))
def test_a_slow_drift_into_new_values_raises_few_alarms(seed):
    """A random walk under noise keeps reaching values never seen before, one fine bin at a
    time: the fine grid must not make each of them news (at 24 levels it raised 4-7 here)."""
    rng = random.Random(seed)
    x, values = 0.0, []
    for _ in range(20000):
        x += rng.gauss(0, 0.05)
        values.append(x + rng.gauss(0, 1))
    scores = run(make_detector(750, (min(values), max(values))), values)
    assert sum(s > 0.5 for s in scores) <= 3


def test_without_a_known_range_there_is_no_resonance_and_no_band():
    """A series of unknown range (byte rates) has no resonance, so its detector's weak scores
    are its own: the band is not a floor below which they vanish."""
    rng = random.Random(5)
    values = [rng.gauss(100, 5) for _ in range(3000)] + [rng.gauss(130, 5) for _ in range(200)]
    online = make_detector(300)
    assert online.resonance is None
    scores = [online.update(10.0 * i, v) for i, v in enumerate(values)]
    assert any(0 < s < PARAMETERS["resonance_band"] for s in scores)
