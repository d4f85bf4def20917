from datetime import datetime, timedelta, timezone

import pytest

from vpool.model.errors import Invalid
from vpool.model.retention import Point, keep_set

MON = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)  # a Monday


def daily_fulls(days: int) -> list[Point]:
    return [Point(i + 1, MON + timedelta(days=i), None) for i in range(days)]


def test_keep_daily_keeps_the_newest_of_each_of_the_last_days():
    points = daily_fulls(10) + [Point(11, MON + timedelta(days=9, hours=5), None)]  # two on the last day
    assert keep_set(points, daily=3, weekly=0) == {11, 9, 8}


def test_weekly_counts_weeks_the_daily_rule_did_not_cover():
    points = daily_fulls(21)  # three weeks, Monday to Sunday
    # daily keeps days 19-21 (week 3); weekly adds the newest of weeks 2 and 1
    assert keep_set(points, daily=3, weekly=2) == {21, 20, 19, 14, 7}


def test_a_kept_incremental_keeps_its_whole_chain():
    full = Point(1, MON, None)
    chain = [full] + [Point(i, MON + timedelta(days=i - 1), i - 1) for i in range(2, 6)]
    assert keep_set(chain, daily=1, weekly=0) == {1, 2, 3, 4, 5}
    newer = chain + [Point(6, MON + timedelta(days=5), None)]  # a new full chain starts
    assert keep_set(newer, daily=1, weekly=0) == {6}


def test_a_policy_that_keeps_nothing_is_refused():
    with pytest.raises(Invalid, match="at least 1"):
        keep_set(daily_fulls(2), 0, 0)
    with pytest.raises(Invalid):
        keep_set([], -1, 2)
