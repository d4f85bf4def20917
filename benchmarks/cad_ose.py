"""CAD OSE (Contextual Anomaly Detector, open-source edition), restated as NAB scored it.

Why it is here: it is the published detector closest to vpool's own (both learn which
contexts of quantised values a series has shown and call a new one news), and NAB's
scoreboard gives its full-corpus score (69.9 standard). Run on the development subset in the
same run as vpool, it turns "vpool scores X on the subset" into a comparison with a detector
whose full-corpus score is known, instead of an unanchored guess.

Restated in our own words from the algorithm in NAB's ``nab/detectors/context_ose`` (the
version whose results give the published 69.9; no code copied). On the subset it reproduces
NAB's published per-file results of contextOSE at its published threshold (a test checks
this on realTraffic files). Four details matter for that:

- each value becomes three facts, one per bit of its level among 8;
- a step is news only where the value has a fact the previous step did not predict (the
  right halves of the best-scoring contexts whose left half it completed); elsewhere it
  scores 0;
- a context's place among equally active contexts is decided by the Python 2 hash of its two
  fact tuples (NAB ran under Python 2), so that hash is restated in ``_py2_tuple_hash``;
- a context whose id equals the step's "new context" marker is skipped, and when no context
  is new that marker is ``False``, which Python takes for id 0: context 0 is skipped then.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1
_SENSOR = 65536  # sensor facts are numbered from here, the active contexts' from 2**31


def _py2_tuple_hash(items: tuple[int, ...]) -> int:
    """CPython 2's 64-bit hash of a tuple of small non-negative ints (an int hashes to itself)."""
    x, mult, n = 0x345678, 1000003, len(items)
    for item in items:
        n -= 1
        x = ((x ^ item) * mult) & _MASK
        mult = (mult + 82520 + 2 * n) & _MASK
    x = (x + 97531) & _MASK
    x = x - (1 << 64) if x >> 63 else x
    return -2 if x == -1 else x


class _Py2IntDict:
    """An insert-only int-keyed dict that iterates in CPython 2's order (open addressing over
    a table of 8, 32, 128... slots), because the order in which NAB met a left half's contexts
    decided the ids of the contexts it stored next."""

    __slots__ = ("slots", "used", "index", "ordered")

    def __init__(self):
        self.slots: list = [None] * 8
        self.used = 0
        self.index: dict[int, int] = {}
        self.ordered: list | None = []

    def get(self, key: int):
        return self.index.get(key)

    def __setitem__(self, key: int, value: int) -> None:
        self.index[key] = value
        self.ordered = None
        self._place(self.slots, key, value)
        self.used += 1
        if self.used * 3 >= len(self.slots) * 2:
            size = 8
            while size <= 4 * self.used:
                size <<= 1
            table: list = [None] * size
            for entry in self.slots:
                if entry is not None:
                    self._place(table, *entry)
            self.slots = table

    @staticmethod
    def _place(table: list, key: int, value: int) -> None:
        mask = len(table) - 1
        i = perturb = key
        while table[i & mask] is not None:
            i = 5 * i + perturb + 1
            perturb >>= 5
        table[i & mask] = (key, value)

    def items(self) -> list:
        if self.ordered is None:
            self.ordered = [entry for entry in self.slots if entry is not None]
        return self.ordered

    def values(self):
        return [value for _, value in self.items()]


class _Half:
    """One side of stored contexts: a set of facts, and how many of them the last input had."""

    __slots__ = ("facts_seen", "size", "contexts")

    def __init__(self, size: int):
        self.facts_seen: list[int] = []
        self.size = size
        self.contexts = _Py2IntDict()  # right half's id -> context id (left halves only)

    @property
    def complete(self) -> bool:
        return len(self.facts_seen) == self.size


class _Context:
    __slots__ = ("expected", "met", "activations", "right", "first_order", "order_key")

    def __init__(self, first_order: bool, left: tuple[int, ...], right: tuple[int, ...]):
        self.expected = self.met = self.activations = 0
        self.right = right
        self.first_order = first_order
        self.order_key = (_py2_tuple_hash(left), _py2_tuple_hash(right))


class _Memory:
    """Contexts stored as pairs of halves, so that halves shared by many contexts are matched once."""

    def __init__(self, max_left: int):
        self.max_left = max_left
        self.ids: tuple[dict, dict] = ({}, {})
        self.halves: tuple[list[_Half], list[_Half]] = ([], [])
        self.holders: tuple[dict, dict] = ({}, {})  # fact -> halves that contain it
        self.touched: list[list[_Half]] = [[], []]
        self.contexts: list[_Context] = []
        self.new_context: int | bool = False

    def _half(self, side: int, facts: tuple[int, ...]) -> int:
        ident = self.ids[side].get(facts)
        if ident is None:
            ident = self.ids[side][facts] = len(self.halves[side])
            half = _Half(len(facts))
            self.halves[side].append(half)
            for fact in facts:
                self.holders[side].setdefault(fact, []).append(half)
        return ident

    def store(self, pairs: list[tuple[tuple, tuple]], first_order: bool = False) -> int | bool:
        """Store contexts; for a first-order context, whether it was new; else how many were."""
        added = 0
        for left, right in pairs:
            left_half = self.halves[0][self._half(0, left)]
            right_id = self._half(1, right)
            ident = left_half.contexts.get(right_id)
            if ident is None:
                ident = left_half.contexts[right_id] = len(self.contexts)
                self.contexts.append(_Context(first_order, left, right))
                added += 1
                if first_order:
                    self.new_context = ident
                    return True
            elif first_order:
                self.contexts[ident].first_order = True
                return False
        return added

    def match(self, side: int, facts: tuple[int, ...]) -> None:
        for half in self.touched[side]:
            half.facts_seen = []
        for fact in facts:
            for half in self.holders[side].get(fact, ()):
                half.facts_seen.append(fact)
        self.touched[side] = [h for h in self.halves[side] if h.facts_seen]

    def predict(self) -> set[int]:
        """The right halves of the contexts, among those whose left half is complete, that
        most often met what they expected (all of them while none has met anything)."""
        best, chosen = 0.0, []
        for half in self.touched[0]:
            if not half.complete:
                continue
            for ident in half.contexts.values():
                context = self.contexts[ident]
                rate = context.met / context.expected if context.expected else 0.0
                if rate > best:
                    best, chosen = rate, [context]
                elif rate == best:
                    chosen.append(context)
        return {fact for context in chosen for fact in context.right}

    def activate(self, new_context_stored: bool) -> tuple[list, int, list]:
        """The contexts whose left half the previous step completed and whose right half this
        step completes (active), how many had a complete left half, and the partial overlaps
        worth storing as contexts of their own."""
        active, selected, candidates = [], 0, []
        for left in self.touched[0]:
            complete = left.complete
            may_store = new_context_stored and len(left.facts_seen) <= self.max_left
            if not (complete or may_store):
                continue  # a left half neither complete nor small enough to store from changes nothing
            for right_id, ident in left.contexts.items():
                if ident == self.new_context:  # False == 0: see the module docstring
                    continue
                context, right = self.contexts[ident], self.halves[1][right_id]
                overlap = len(right.facts_seen)
                if complete:
                    selected += 1
                    context.expected += right.size
                    context.met += overlap
                    if overlap and overlap == right.size:
                        context.activations += 1
                        active.append((context.activations, *context.order_key, ident))
                        continue
                if overlap and may_store and context.first_order:
                    candidates.append((tuple(left.facts_seen), tuple(right.facts_seen)))
        self.new_context = False
        return active, selected, candidates


class CadOse:
    """One series. Told the range and the probation as NAB tells every detector."""

    def __init__(self, low: float, high: float, probation: int, threshold: float = 0.75,
                 max_left: int = 7, neurons: int = 15, bits: int = 3):
        top = 2**bits - 1.0
        self.low, self.bits, self.neurons, self.threshold = low, bits, neurons, threshold
        self.step = ((high - low) or top) / top
        self.rest = int(probation / 5.0)
        self.memory = _Memory(max_left)
        self.left: tuple[int, ...] = ()
        self.history = [1.0]
        self.predicted: set[int] = set()

    def update(self, value: float) -> float:
        level = int((value - self.low) / self.step)
        facts = tuple(sorted(_SENSOR + 2 * bit + ((level >> bit) & 1) for bit in range(self.bits)))
        surprised = any(fact not in self.predicted for fact in facts)
        memory = self.memory
        stored = memory.store([(self.left, facts)], first_order=True) if self.left else False
        memory.match(1, facts)
        active, selected, candidates = memory.activate(stored)
        share_active = len(active) / selected if selected else 0.0
        distinct = len({(self.left, facts), *candidates}) if self.left else len(set(candidates))
        active.sort(key=lambda a: a[:3])
        neurons = {2**31 + a[3] for a in active[-self.neurons:]}
        self.left = tuple(sorted(set(facts) | neurons))
        added = memory.store(candidates) if candidates else 0
        memory.match(0, self.left)
        self.predicted = memory.predict()
        share_new = (added + 1) / distinct if stored and distinct else 0.0
        score = (1.0 - share_active + share_new) / 2.0 if surprised else 0.0
        quiet = max(self.history[-self.rest:]) < self.threshold
        self.history.append(score)
        return score if quiet else 0.0


def run(epoch: list[float], values: list[float], probation: int) -> list[float]:
    detector = CadOse(min(values), max(values), probation)
    return [detector.update(v) for v in values]
