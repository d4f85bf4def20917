"""Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in UTC.

The classic rules: `*`, lists, ranges, steps (`*/15`, `1-5/2`), month and day names, 0 or 7
for Sunday; when both day fields are restricted a day matches either (Vixie cron).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from vpool.model.errors import Invalid

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {
    3: {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_SEARCH_DAYS = 366 * 8  # long enough for 29 February on a given weekday


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def _day_matches(self, d: datetime) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, t: datetime) -> datetime:
        """The first matching minute strictly after t."""
        t = t.astimezone(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = t.replace(hour=0, minute=0)
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        candidate = day.replace(hour=h, minute=m)
                        if candidate >= t:
                            return candidate
            day += timedelta(days=1)
        raise Invalid(f"cron expression {self.text!r} never matches a real date")

    def due_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Matching minutes in (after, until]."""
        out = []
        t = self.next_after(after)
        while t <= until:
            out.append(t)
            t = self.next_after(t)
        return out


def _field(text: str, index: int) -> frozenset[int]:
    name, lo, hi = _FIELDS[index]
    names = _NAMES.get(index, {})

    def value(v: str) -> int:
        v = v.lower()
        if v in names:
            return names[v]
        if not (v.isascii() and v.isdigit()):
            raise Invalid(f"{v!r} is not a valid {name}")
        n = int(v)
        if not lo <= n <= hi:
            raise Invalid(f"{name} {n} is out of range {lo}-{hi}")
        return n

    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise Invalid(f"step {step_text!r} in the {name} field must be a positive number")
            step = int(step_text)
        if rng == "*":
            start, end = lo, hi
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = value(a), value(b)
            if start > end:
                raise Invalid(f"range {rng!r} in the {name} field runs backwards")
        else:
            start = value(rng)
            end = hi if step_text else start
        out.update(range(start, end + 1, step))
    if index == 4 and 7 in out:
        out = (out - {7}) | {0}
    return frozenset(out)


def parse(text: str) -> Cron:
    parts = text.split()
    if len(parts) != 5:
        raise Invalid(f"cron expression {text!r} needs 5 fields (minute hour day month weekday), "
                      f"e.g. \"0 2 * * *\" for 02:00 every day; it has {len(parts)}")
    fields = [_field(p, i) for i, p in enumerate(parts)]
    cron = Cron(" ".join(parts), *fields, any_day=parts[2] == "*", any_weekday=parts[4] == "*")
    cron.next_after(datetime(2000, 1, 1, tzinfo=timezone.utc))  # refuse 31 February now, not at run time
    return cron
