"""Durations and instants as people type them: '30s', '5m', '1h', '2d', or an ISO 8601 time."""

import re
from datetime import datetime, timezone

from vpool.model.errors import Invalid

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*")
LONGEST_S = 100 * 365 * 86400  # beyond it a time no longer fits the store's milliseconds, or means anything
_SECONDS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds; a bare number is seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = _DURATION_RE.fullmatch(str(text))
        if not m:
            raise Invalid(f"{what} {text!r} is not a duration: write it like 30s, 5m, 1h or 2d")
        seconds = float(m.group(1)) * _SECONDS[m.group(2)]
    if seconds < 0 or seconds != seconds:
        raise Invalid(f"{what} must not be negative, got {text!r}")
    if seconds > LONGEST_S:
        raise Invalid(f"{what} {text!r} is longer than vpool can mean: at most 100 years")
    return seconds


def parse_instant(text: str, now: float, what: str = "time") -> float:
    """Epoch seconds from "1h" (that long before now; a bare number is seconds before now) or an ISO 8601 time."""
    if isinstance(text, (int, float)) or _DURATION_RE.fullmatch(str(text)):
        return now - parse_duration(text, what)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{what} {text!r} is neither a duration before now (like 1h) nor an ISO 8601 time "
                      "(like 2024-05-01T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
