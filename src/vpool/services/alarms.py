"""Alarms: rules people create, evaluated after every collection interval, announced by webhook.

A state row exists only for a (rule, subject) that has left `ok`, so a rule over a thousand
VMs writes nothing while they are all well. Webhooks are posted by a thread of their own,
one at a time so a receiver hears `firing` before `resolved`: a slow receiver delays the
notices, never the collection loop.

A firing alarm resolves for a VM that stops and for a VM or host that leaves the pool (with
no value: the subject has none), as vCenter clears the alarms of a powered-off or removed VM;
one whose host was not read this interval keeps firing, since nothing says it is well.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import urlparse

import httpx
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError

from vpool.model.errors import Conflict, Invalid, NotFound
from vpool.model.names import check_name
from vpool.store.tables import VM, Host
from vpool.store.telemetry_tables import AlarmEvent, AlarmRule, AlarmState
from vpool.telemetry.alarms import COMPARISONS, KINDS, Rule, Status, step, subjects
from vpool.telemetry.collector import ANOMALY_SUFFIX, SCOPES

WEBHOOK_TIMEOUT_S = 5.0


def _rule(row: AlarmRule) -> Rule:
    return Rule(row.name, row.kind, row.scope, row.target, row.metric, row.comparison, row.value, row.for_s)


def describe(row: AlarmRule, states: list[AlarmState]) -> dict:
    return {
        "name": row.name, "kind": row.kind, "scope": row.scope, "target": row.target, "metric": row.metric,
        "comparison": row.comparison, "value": row.value, "for_s": row.for_s, "webhook": row.webhook,
        "enabled": row.enabled, "created_at": row.created_at,
        "firing": sorted(st.subject for st in states if st.state == "firing"),
        "states": [{"subject": st.subject, "state": st.state, "value": st.value, "changed_at": st.changed_at}
                   for st in sorted(states, key=lambda x: x.subject)],
    }


def _condition(kind: str, comparison: str | None, value: float, for_s: float, webhook: str | None) -> str:
    """The comparison the alarm judges with, once its condition and webhook make sense."""
    if kind == "anomaly":
        comparison = comparison or ">="
        if comparison != ">=":
            raise Invalid("an anomaly alarm fires when the score is >= its value; leave the comparison out")
        if not 0 < value <= 1:
            raise Invalid(f"an anomaly score lies in (0, 1]; {value} can never be crossed usefully")
    elif comparison is None:
        raise Invalid(f"a threshold alarm needs a comparison: one of {', '.join(COMPARISONS)}")
    elif comparison not in COMPARISONS:
        raise Invalid(f"comparison {comparison!r} is not one of {', '.join(COMPARISONS)}")
    if not math.isfinite(value):
        raise Invalid(f"value must be a finite number, got {value}")
    if not math.isfinite(for_s) or for_s < 0:
        raise Invalid(f"for must be a duration of zero or more, got {for_s}")
    if webhook is not None:
        url = urlparse(webhook)
        if url.scheme not in ("http", "https") or not url.hostname or not webhook.isprintable() \
                or any(c.isspace() for c in webhook):
            raise Invalid(f"webhook {webhook!r} is not an http:// or https:// URL")
    return comparison


class AlarmService:
    def __init__(self, cp):
        self.cp = cp
        self._webhooks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alarm-webhook")

    def close(self) -> None:
        self._webhooks.shutdown(wait=False, cancel_futures=True)

    # --- rules ------------------------------------------------------------------------------
    def create(self, name: str, kind: str, scope: str, metric: str, comparison: str | None, value: float,
               for_s: float = 0.0, target: str | None = None, webhook: str | None = None) -> dict:
        check_name(name, "alarm name")
        if kind not in KINDS:
            raise Invalid(f"alarm kind {kind!r} is not one of {', '.join(KINDS)}")
        if scope not in SCOPES:
            raise Invalid(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        if metric.endswith(ANOMALY_SUFFIX) or metric not in SCOPES[scope]:
            raise Invalid(f"{scope} metric {metric!r} is unknown; known: {', '.join(SCOPES[scope])}")
        comparison = _condition(kind, comparison, value, for_s, webhook)
        with self.cp.store.session() as s:
            if target is not None:
                table = {"vm": VM, "host": Host}.get(scope)
                if table is None:
                    raise Invalid("a pool alarm watches the whole pool; it takes no target")
                if s.scalar(select(table.id).where(table.name == target)) is None:
                    raise NotFound(f"there is no {scope} {target!r} to watch")
            if s.scalar(select(AlarmRule.id).where(AlarmRule.name == name)) is not None:
                raise Conflict(f"an alarm named {name!r} already exists")
            row = AlarmRule(name=name, kind=kind, scope=scope, target=target, metric=metric,
                            comparison=comparison, value=value, for_s=for_s, webhook=webhook, enabled=True)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"an alarm named {name!r} was created meanwhile") from None
            return describe(row, [])

    def update(self, name: str, changes: dict) -> dict:
        """Changes an alarm's condition, webhook or whether it is enabled (vCenter's Edit and
        Disable). A changed condition is judged from the next interval on, against the states
        it had. Disabling forgets its states; a subject it was firing for gets a `disabled`
        event (and notice), so a receiver is not left waiting for a `resolved` that never comes."""
        unknown = set(changes) - {"comparison", "value", "for_s", "webhook", "enabled"}
        if unknown:
            raise Invalid(f"an alarm has no setting {', '.join(sorted(unknown))} to change")
        if nulls := [{"for_s": "for"}.get(k, k) for k, v in changes.items() if v is None and k != "webhook"]:
            raise Invalid(f"{', '.join(nulls)} cannot be null; leave it out to keep it")
        with self.cp.store.session() as s:
            row = self._row(s, name)
            merged = {"comparison": row.comparison, "value": row.value, "for_s": row.for_s, "webhook": row.webhook,
                      "enabled": row.enabled, **changes}
            merged["comparison"] = _condition(row.kind, merged["comparison"], merged["value"], merged["for_s"],
                                              merged["webhook"])
            for key, value in merged.items():
                setattr(row, key, value)
            announced = []
            if not row.enabled:
                at = datetime.now(timezone.utc)
                for st in list(s.scalars(select(AlarmState).where(AlarmState.rule_id == row.id))):
                    if st.state == "firing":
                        event = AlarmEvent(rule=row.name, subject=st.subject, state="disabled", value=None, at=at)
                        s.add(event)
                        announced.append(event)
                    s.delete(st)
            s.commit()
            for event in announced:
                self._announce(event, row)
            return describe(row, list(s.scalars(select(AlarmState).where(AlarmState.rule_id == row.id))))

    def rules(self) -> list[dict]:
        with self.cp.store.session() as s:
            states: dict[int, list[AlarmState]] = {}
            for st in s.scalars(select(AlarmState)):
                states.setdefault(st.rule_id, []).append(st)
            return [describe(r, states.get(r.id, [])) for r in s.scalars(select(AlarmRule).order_by(AlarmRule.name))]

    def get(self, name: str) -> dict:
        with self.cp.store.session() as s:
            row = self._row(s, name)
            return describe(row, list(s.scalars(select(AlarmState).where(AlarmState.rule_id == row.id))))

    def delete(self, name: str) -> None:
        with self.cp.store.session() as s:
            row = self._row(s, name)
            s.delete(row)
            s.commit()

    def history(self, rule: str | None = None, limit: int = 100) -> list[dict]:
        with self.cp.store.session() as s:
            q = select(AlarmEvent).order_by(AlarmEvent.id.desc()).limit(limit)
            if rule is not None:
                q = q.where(AlarmEvent.rule == rule)
            return [{"id": e.id, "alarm": e.rule, "subject": e.subject, "state": e.state, "value": e.value,
                     "at": e.at, "notified": e.notified, "notify_error": e.notify_error} for e in s.scalars(q)]

    def firing_counts(self) -> dict[str, int]:
        with self.cp.store.session() as s:
            rows = s.execute(select(AlarmRule.name, func.count(AlarmState.subject))
                             .outerjoin(AlarmState, and_(AlarmState.rule_id == AlarmRule.id,
                                                         AlarmState.state == "firing"))
                             .group_by(AlarmRule.name))
            return dict(rows.all())

    @staticmethod
    def _row(s, name: str) -> AlarmRule:
        row = s.scalar(select(AlarmRule).where(AlarmRule.name == name))
        if row is None:
            raise NotFound(f"there is no alarm {name!r}")
        return row

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, latest: dict[tuple[str, str], dict[str, float]], now: float) -> list[dict]:
        """One step of every rule over this interval's latest values; returns the announcements."""
        announced = []
        with self.cp.store.session() as s:
            rows = list(s.scalars(select(AlarmRule).where(AlarmRule.enabled)))
            if not rows:
                return []
            states = {(st.rule_id, st.subject): st for st in s.scalars(select(AlarmState))}
            for row in rows:
                rule = _rule(row)
                for subject, value in subjects(rule, latest).items():
                    st = states.pop((row.id, subject), None)
                    old = Status(st.state, st.breach_since) if st else Status()
                    new, announce = step(rule, old, value, now)
                    if new == old:
                        continue
                    if st is None:
                        st = AlarmState(rule_id=row.id, subject=subject)
                        s.add(st)
                    if new.state != old.state:
                        st.changed_at = datetime.fromtimestamp(now, timezone.utc)
                        st.value = value
                    st.state, st.breach_since = new.state, new.breach_since
                    if announce:
                        event = AlarmEvent(rule=row.name, subject=subject, state=announce, value=value,
                                           at=datetime.fromtimestamp(now, timezone.utc))
                        s.add(event)
                        announced.append((event, row))
            by_id = {row.id: row for row in rows}
            unjudged = [(by_id[rule_id].scope, st) for (rule_id, _), st in states.items() if rule_id in by_id]
            for st, why in _ended(s, unjudged, latest):
                if st.state == "firing":  # its subject stopped or went: nothing is wrong with it any more
                    row = by_id[st.rule_id]
                    event = AlarmEvent(rule=row.name, subject=st.subject, state="resolved", value=None,
                                       at=datetime.fromtimestamp(now, timezone.utc))
                    s.add(event)
                    announced.append((event, row))
                    st.state, st.breach_since, st.value = "resolved", None, None
                    st.changed_at = event.at
                if why == "gone":
                    s.delete(st)
            s.commit()
            return [self._announce(event, row) for event, row in announced]

    def _announce(self, event: AlarmEvent, row: AlarmRule) -> dict:
        """The notice of a committed event, posted to the alarm's webhook if it has one."""
        payload = {"alarm": row.name, "kind": row.kind, "scope": row.scope, "subject": event.subject,
                   "metric": row.metric, "comparison": row.comparison, "threshold": row.value,
                   "state": event.state, "value": event.value, "at": event.at.isoformat()}
        if row.webhook:
            self._webhooks.submit(self._notify, event.id, row.webhook, payload)
        return payload

    def _notify(self, event_id: int, url: str, payload: dict) -> None:
        error = None
        try:
            r = httpx.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S)
            if r.status_code >= 300:
                error = f"the webhook answered HTTP {r.status_code}"
        except httpx.HTTPError as e:
            error = f"the webhook could not be reached: {e.__class__.__name__}: {e}"
        with self.cp.store.session() as s:
            s.execute(update(AlarmEvent).where(AlarmEvent.id == event_id)
                      .values(notified=error is None, notify_error=error))
            s.commit()


def _ended(s, unjudged: list[tuple[str, AlarmState]], latest: dict[tuple[str, str], dict[str, float]]):
    """(state, "stopped" or "gone") for each alarm state this interval gave no value whose subject
    will not give one soon: a firing VM the collector read as not running (a stopped VM reports
    no metrics), or a VM or host deleted from the pool, whose state goes with it. A subject
    merely unread (its host went stale) keeps its state: it may well still be on fire."""
    if not unjudged:
        return []
    known = {scope: set(s.scalars(select(table.name).where(table.name.in_(
        [st.subject for sc, st in unjudged if sc == scope])))) for scope, table in (("vm", VM), ("host", Host))}
    out = []
    for scope, st in unjudged:
        if scope in known and st.subject not in known[scope]:
            out.append((st, "gone"))
        elif latest.get((scope, st.subject)) == {} and st.state == "firing":
            out.append((st, "stopped"))
    return out
