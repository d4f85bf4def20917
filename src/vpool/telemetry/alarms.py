"""Alarm rules and their state machine, pure: a rule, the last state and a new value in;
the next state and whether people must be told out.

ok -> firing when the condition has held for the rule's `for` duration (so one noisy
sample does not page anyone); firing -> resolved when it stops holding; resolved ->
firing again like ok. An anomaly rule is a threshold rule on the detector's score series.
"""

import operator
from dataclasses import dataclass

from vpool.telemetry.collector import anomaly_metric

COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
KINDS = ("threshold", "anomaly")
STATES = ("ok", "firing", "resolved")


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    scope: str
    target: str | None
    metric: str
    comparison: str
    value: float
    for_s: float

    @property
    def series_metric(self) -> str:
        """The series the rule watches: the metric itself, or its anomaly score."""
        return anomaly_metric(self.metric) if self.kind == "anomaly" else self.metric


@dataclass(frozen=True)
class Status:
    state: str = "ok"
    breach_since: float | None = None  # when the condition started holding (epoch seconds)


def step(rule: Rule, status: Status, value: float, now: float) -> tuple[Status, str | None]:
    """The next status, and the state to announce ('firing' or 'resolved') if it changed."""
    if COMPARISONS[rule.comparison](value, rule.value):
        since = status.breach_since if status.breach_since is not None else now
        if status.state != "firing" and now - since >= rule.for_s:
            return Status("firing", since), "firing"
        return Status(status.state, since), None
    if status.state == "firing":
        return Status("resolved", None), "resolved"
    return Status(status.state, None), None


def subjects(rule: Rule, latest: dict[tuple[str, str], dict[str, float]]) -> dict[str, float]:
    """The value the rule sees for each subject it watches in this interval's latest values,
    keyed by (scope, name). A subject without the series this interval keeps its state."""
    out = {}
    for (scope, name), metrics in latest.items():
        if scope != rule.scope or (rule.target is not None and name != rule.target):
            continue
        value = metrics.get(rule.series_metric)
        if value is not None:
            out[name] = value
    return out
