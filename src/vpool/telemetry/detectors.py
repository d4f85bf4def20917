"""Streaming anomaly detectors for metric series: one point in, one score in [0, 1] out.

The control plane runs one detector per collected series (thousands of series at a 10 s
interval), so a detector is about a kilobyte of plain Python state and a few microseconds
per point (tens of each for a series of known range, one per VM and host: see the
resonance below), never looks ahead, and uses one parameter set for every series.

The detector is *contextual novelty* over several time scales, in the spirit of ARTime and
CAD-OSE, the best published detectors on the Numenta Anomaly Benchmark:

* each scale averages ``every`` raw points and quantises the average on a coarse grid
  (``levels`` bins across the series' range); the last ``context`` quantised averages form a
  context, and a context that was never seen before is *novel*. The raw scale sees spikes
  and sudden shape changes; the 4- and 16-point scales see a changed shape or a slow level
  shift that no single point betrays (a fourth, 64-point scale scored exactly the same on
  NAB's development subset, so it was dropped). Scales count points, not seconds, so the
  detector is the same on 10 s, 5 min or hourly series (the daily slots below read the clock);
* the context is two values long: a pair already says "this jump from here" or "this level
  after that one", and with only (levels + 2)^2 = 64 pairs per grid the learning period
  meets almost every pair a noisy but normal series can make. Three-value contexts (512)
  kept meeting rare tail combinations of plain noise for thousands of points and raised
  false alarms on white noise; held out by folder on NAB's subset (``benchmarks/nab.py
  --cv folders``) two values score 75.3 against 68.2 for three;
* with a known range, two more scales learn tables over weeks (on a learnt range the grid is
  rebuilt as the range grows, and they would meet their entries again as news):

  - *daily slots*: the mean of each two-hour slot of the day (wall-clock time, so the same on
    any interval) against the levels seen in that slot before. A working day that stays at its
    night level, or a holiday in a business metric, is ordinary value by value and pair by
    pair; only the time of day betrays it (NAB's art_daily_nojump). The slot's novelty rate,
    high while every slot is new, keeps the first days quiet. A restarted control plane
    teaches them the two weeks before from the store's hourly means (``recall``);
  - *a fine grid*: each value alone on a grid twice as fine (12 levels). Where the range is
    set by one huge spike (tweet counts, byte rates), ordinary values share the coarse grid's
    lowest bin and a burst to three times the usual stays inside it; on the fine grid it does
    not. Finer grids score higher on NAB's subset (24 levels: 80.6 and 78.8), but each new fine
    bin a slow drift reaches is news: 4-7 alarms in 20,000 points of a random walk at 24
    levels, 0-2 at 12, 0-1 without.

  On NAB's development subset the slots lift the standard score from 77.2 to 78.8 in-sample
  and from 75.3 to 77.0 held out by folder, and the fine grid on top to 79.7 and 77.9;
* the grid is laid three times, shifted by a third of a bin, and a context counts as novel
  only when it is new on every grid, so a value dithering on a bin edge is not news;
* a novelty is worth ``1 - rate``, where ``rate`` is that scale's recent novelty rate, so a
  series that keeps producing new contexts (noise) alarms less than a quiet one that
  suddenly does;
* the output is inhibited by its own recent maximum, which decays geometrically: NAB (and an
  operator) rewards the first alert of an incident and charges for each repeat;
* with a known range, a second opinion speaks *below* these alarms: the resonance
  (``resonance``, ARTime restated), which clusters the shape of the last eight steps of about
  a hundredth of the learning period each and calls a shape that resonates with no cluster
  news. It hears what no table of a few coarse values can: a sensor stuck at an ordinary
  value for hours, a day shaped unlike any before though every value in it is ordinary. Its
  opinion is graded and noisier, so it owns only the band below ``resonance_band`` (0.35):
  where the tables' score is under the band, the output is the band times the resonance's.
  An alarm threshold above the band hears the tables alone, exactly as before; a threshold
  inside it hears both. Why: on NAB's development subset the tables lead ARTime by 4.9, but
  ARTime's published scores hold up on the folders the subset lacks and the tables' family
  (CAD OSE) falls there by 11. On made-up long series of those folders' kinds
  (``benchmarks/long_series.py``: half-hourly taxi demand with holidays and a storm, hourly
  temperatures with a stuck sensor, machine temperatures that creep before a failure, bursty
  tweet counts; 24 files) the tables alone score 50.6 (49.2 held out by folder), ARTime 54.9
  (53.7) and both together 58.4 (53.6). On the subset the band changes nothing, in-sample or
  held out by folder (its best threshold, 0.415, lies above it; a band of 0.45 costs 1.8).
  It is a bet, not a free option: a neighbouring parameter set whose best threshold lies
  below the band loses there what the band takes (rate memory 1000: 79.2 to 73.2), though on
  the subset and the long series together the band still gains for it (BENCHMARKS.md).

The known contexts are kept as bits of one Python ``int`` per scale and grid (the context
space is bounded because quantised values are clamped to one bin beyond each side of the
range), so state does not grow with the length of the series.

The grid needs the series' range. When the caller knows it (NAB tells detectors each file's
minimum and maximum; a CPU percentage lies in 0..100), pass ``value_range``. Otherwise the
range is what the learning period saw, and when a later value leaves it by more than a
quarter of its width the grid is rebuilt over the wider range and the last learning
period's values (kept for that) are replayed onto it, so the detector stays live; the
excursion itself is then scored on the new grid, where it is novel.

Cost, measured on CPython 3.11: about 2-3 us per point in one process without a known range
(``benchmarks/nab.py`` prints the figure per corpus), about 10 us with one, the resonance's
numpy step included; state is under 1 kB pickled plus the replay buffer (``learning_period``
floats) without a known range, under 40 kB with one (the resonance's at most 128 categories).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable, Protocol

from vpool.telemetry.resonance import Resonance

__all__ = ["Detector", "ContextNoveltyDetector", "PARAMETERS", "make_detector"]

DAY_S = 86400.0
RECALL_S = 14 * DAY_S  # two weeks of each slot of the day, from the hourly means the store keeps a year


class Detector(Protocol):
    """What the control plane feeds: one point at a time, in time order."""

    learning_period: int  # points learnt before any is scored: what a restarted one is fed first
    recall_s: float  # how far back coarser stored means teach it more, before those points (0: not at all)

    def recall(self, means: Iterable[tuple[float, float]]) -> None:
        """Learn from (timestamp, mean) pairs older than anything `update` will see."""
        ...

    def update(self, timestamp: float, value: float) -> float:
        """Consume one point and return its anomaly score in [0, 1]."""
        ...

    @property
    def learnt(self) -> bool:
        """Whether its scores mean anything yet: while learning it scores 0, as NAB asks, and
        an operator must not read that as normal."""
        ...


class _Scale:
    """Novelty of the recent shape at one time scale; see the module docstring."""

    __slots__ = ("every", "context", "levels", "acc", "count", "recent", "known", "rate")

    def __init__(self, every: int, context: int, levels: int, grids: int):
        self.every = every
        self.context = context
        self.levels = levels
        self.acc = 0.0
        self.count = 0
        self.recent: list[list[int]] = [[] for _ in range(grids)]
        self.known = [0] * grids
        self.rate = 1.0  # a scale is not trusted until it has shown itself predictable

    def reset(self) -> None:
        """Forget the known contexts (the grid moved); the novelty rate is kept."""
        self.acc = 0.0
        self.count = 0
        for recent in self.recent:
            recent.clear()
        self.known = [0] * len(self.known)

    def push(self, position: float, alpha: float) -> float | None:
        """Feed one point's grid position (0..levels across the range); score each ``every``."""
        self.acc += position
        self.count += 1
        if self.count < self.every:
            return None
        mean = self.acc / self.count
        self.acc = 0.0
        self.count = 0
        return self._judge(mean, alpha)

    def _judge(self, mean: float, alpha: float, slot: int | None = None) -> float | None:
        """The surprise of `mean` after the recent means (or, given a slot of the day, in that
        slot); None until there are enough recent means to make a context."""
        top = self.levels + 1  # bins -1 .. levels, shifted to 0 .. levels + 1
        radix = self.levels + 2
        grids = len(self.known)
        novel = True
        for g in range(grids):
            q = math.floor(mean + g / grids) + 1
            q = 0 if q < 0 else top if q > top else q
            if slot is not None:
                key = slot * radix + q
            else:
                recent = self.recent[g]
                recent.append(q)
                if len(recent) > self.context:
                    del recent[0]
                elif len(recent) < self.context:
                    return None
                key = 0
                for v in recent:
                    key = key * radix + v
            bit = 1 << key
            if self.known[g] & bit:
                novel = False
            else:
                self.known[g] |= bit
        surprise = 1.0 - self.rate if novel else 0.0
        self.rate += alpha * ((1.0 if novel else 0.0) - self.rate)
        return surprise


class _DailyScale(_Scale):
    """The mean of each slot of the day (wall-clock time, so the same on any interval) against
    the levels seen in that slot before; see the module docstring."""

    __slots__ = ("slots", "slot")

    def __init__(self, levels: int, grids: int, slots: int):
        super().__init__(1, 1, levels, grids)
        self.slots = slots
        self.slot: int | None = None

    def push_at(self, position: float, alpha: float, timestamp: float) -> float | None:
        """Feed one point; the slot it ends is judged when the first point of the next arrives."""
        slot = int(timestamp // (DAY_S / self.slots))
        surprise = None
        if slot != self.slot and self.count:
            surprise = self._judge(self.acc / self.count, alpha, self.slot % self.slots)
            self.acc = 0.0
            self.count = 0
        self.slot = slot
        self.acc += position
        self.count += 1
        return surprise


class ContextNoveltyDetector:
    """Multi-scale contextual novelty with self-inhibition; see the module docstring.

    The keyword parameters exist so the benchmark can show how sensitive the score is to
    them; the control plane uses the defaults through ``make_detector``.
    """

    def __init__(
        self,
        learning_period: int = 300,
        value_range: tuple[float, float] | None = None,
        *,
        levels: int = 6,
        context: int = 2,
        scales: tuple[int, ...] = (1, 4, 16),
        grids: int = 3,
        rate_memory: int = 200,
        inhibition_decay: float = 0.98,
        regrid_margin: float = 0.25,
        fine_levels: int = 12,
        daily_slots: int = 12,
        resonance_band: float = 0.35,
        resonance_categories: int = 128,
    ):
        self.learning_period = max(1, learning_period)
        self.levels = levels
        self.scales = [_Scale(every, context, levels, grids) for every in scales]
        # The fine grid and the daily slots learn tables over weeks, so only on a grid that stays:
        # one rebuilt as a learnt range grows forgets them and meets their entries again as news.
        stays = value_range is not None
        self.fine = _Scale(1, 1, fine_levels, grids) if fine_levels and stays else None
        self.fine_ratio = fine_levels / levels
        self.daily = _DailyScale(levels, grids, daily_slots) if daily_slots and stays else None
        self.recall_s = RECALL_S if self.daily is not None else 0.0
        self.band = resonance_band
        self.resonance = (
            Resonance(*value_range, learning_period, resonance_categories) if resonance_band and stays else None
        )
        self.alpha = 1.0 / rate_memory
        self.decay = inhibition_decay
        self.inhibition = 0.0
        self.seen = 0
        self.fixed_range = value_range is not None
        self.lo, self.hi = value_range if value_range is not None else (math.inf, -math.inf)
        self.regrid_margin = regrid_margin
        self.history: deque[float] = deque(maxlen=0 if self.fixed_range else self.learning_period)

    def update(self, timestamp: float, value: float) -> float:
        if value != value:  # NaN: a missing sample is not evidence of anything
            return 0.0
        self.seen += 1
        if self.fixed_range:
            return self._score(timestamp, value)
        self.history.append(value)
        if self.seen <= self.learning_period:
            self.lo, self.hi = min(self.lo, value), max(self.hi, value)
            if self.seen == self.learning_period:
                self._relearn(including_newest=True)
            return 0.0
        margin = self.regrid_margin * (self.hi - self.lo)
        if value < self.lo - margin or value > self.hi + margin:
            self.lo, self.hi = min(self.lo, value), max(self.hi, value)
            self._relearn(including_newest=False)
        return self._score(timestamp, value)

    @property
    def learnt(self) -> bool:
        return self.seen > self.learning_period

    def recall(self, means: Iterable[tuple[float, float]]) -> None:
        """Teach the daily slots the days before the samples `update` will replay.

        A restarted control plane replays each series' last learning period of raw samples,
        under an hour at 10 s, but the slots learn each time of day over days: without this
        they would meet every slot as new again and say nothing for days after an upgrade. Only
        the slots read the clock, so only they may learn from means at another interval (the
        store's hourly rollups); the point-count scales must see the series' own.
        """
        if self.daily is None:
            return
        for timestamp, mean in means:
            self.daily.push_at(self._position(mean), self.alpha, timestamp)

    def _relearn(self, including_newest: bool) -> None:
        """Rebuild the grid on the current range and replay the recent past onto it.

        Happens once when the learning period ends and again only when a value leaves the
        grid by more than ``regrid_margin`` range-widths, so it is rare (logarithmic in the
        range's growth) and the detector stays live instead of going blind for another
        learning period. After learning, the newest value is left for the caller to score.
        """
        for scale in self.scales:
            scale.reset()
        replay = len(self.history) - (0 if including_newest else 1)
        for i in range(replay):
            self._push(0.0, self.history[i])  # no scale reads the clock on a learnt range

    def _position(self, value: float) -> float:
        """Where `value` lies on the grid: 0 at the range's bottom, ``levels`` at its top."""
        width = self.hi - self.lo
        if width > 0:
            return (value - self.lo) / width * self.levels
        return 0.0 if value == self.lo else math.copysign(self.levels + 1, value - self.lo)

    def _push(self, timestamp: float, value: float) -> float:
        position = self._position(value)
        raw = 0.0
        for scale in self.scales:
            s = scale.push(position, self.alpha)
            if s is not None and s > raw:
                raw = s
        if self.fine is not None:
            s = self.fine.push(position * self.fine_ratio, self.alpha)
            if s is not None and s > raw:
                raw = s
        if self.daily is not None:
            s = self.daily.push_at(position, self.alpha, timestamp)
            if s is not None and s > raw:
                raw = s
        return raw

    def _score(self, timestamp: float, value: float) -> float:
        raw = self._push(timestamp, value)
        heard = self.resonance.update(value) if self.resonance is not None else None
        if self.seen <= self.learning_period:
            return 0.0
        out = raw - self.inhibition if raw > self.inhibition else 0.0
        self.inhibition *= self.decay
        if out > self.inhibition:
            self.inhibition = out
        if heard is not None and out < self.band:  # below the band the resonance speaks, scaled into it
            out = self.band * heard
        return out


# vpool's one parameter set; ``benchmarks/nab.py --cv`` scores each parameter's neighbours.
PARAMETERS: dict = {
    "levels": 6,
    "context": 2,
    "scales": (1, 4, 16),
    "grids": 3,
    "rate_memory": 200,
    "inhibition_decay": 0.98,
    "fine_levels": 12,
    "daily_slots": 12,
    "resonance_band": 0.35,
    "resonance_categories": 128,
}


def make_detector(learning_period: int = 300, value_range: tuple[float, float] | None = None) -> Detector:
    """The detector the control plane runs on every series, with vpool's one parameter set.

    ``learning_period`` points are learnt before anything is scored (NAB's probation; at a
    10 s interval the default is 50 minutes). ``value_range`` is the series' known range, if
    any; see the module docstring.
    """
    return ContextNoveltyDetector(learning_period, value_range, **PARAMETERS)
