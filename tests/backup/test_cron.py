from datetime import datetime, timezone

import pytest

from vpool.model.cron import parse
from vpool.model.errors import Invalid


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


def test_daily_at_two():
    c = parse("0 2 * * *")
    assert c.next_after(utc(2026, 11, 26, 1, 59)) == utc(2026, 11, 26, 2, 0)
    assert c.next_after(utc(2026, 11, 26, 2, 0)) == utc(2026, 11, 27, 2, 0)  # strictly after


def test_steps_ranges_lists_and_names():
    assert parse("*/15 * * * *").due_between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 1, 0)) == [
        utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 0, 45), utc(2026, 1, 1, 1, 0)]
    weekdays = parse("30 22 * * mon-fri")
    assert weekdays.next_after(utc(2026, 11, 27, 23, 0)) == utc(2026, 11, 30, 22, 30)  # Friday night -> Monday
    assert parse("0 0 1,15 feb *").next_after(utc(2026, 2, 1, 0, 0)) == utc(2026, 2, 15)
    assert parse("0 0 * * 7").next_after(utc(2026, 11, 26)) == utc(2026, 11, 29)  # 7 is Sunday too


def test_both_day_fields_restricted_match_either():
    c = parse("0 0 13 * fri")  # the 13th, or any Friday
    assert c.next_after(utc(2026, 11, 1)) == utc(2026, 11, 6)  # a Friday
    assert utc(2026, 11, 13) in c.due_between(utc(2026, 11, 1), utc(2026, 11, 30))


def test_leap_day_is_found_years_ahead():
    assert parse("0 0 29 2 *").next_after(utc(2026, 3, 1)) == utc(2028, 2, 29)


@pytest.mark.parametrize("text, words", [
    ("0 2 * *", "5 fields"), ("60 * * * *", "out of range"), ("* * * * mon-sun-x", "not a valid"),
    ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"), ("0 0 31 2 *", "never matches"), ("a * * * *", "not a valid"),
    ("² * * * *", "not a valid"), ("*/² * * * *", "step"),  # digits to Python, not to int()
])
def test_bad_expressions_say_what_is_wrong(text, words):
    with pytest.raises(Invalid, match=words):
        parse(text)
