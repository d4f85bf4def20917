"""Alarms: the state machine, the API's refusals, a threshold alarm announced to a webhook
on loopback (firing, then resolved), and an anomaly alarm fed by the detector's score."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.core.conftest import eventually
from tests.telemetry.conftest import domain, host_read
from vpool.telemetry.alarms import Rule, Status, step


def test_for_duration_then_resolve_then_fire_again():
    rule = Rule("hot", "threshold", "vm", None, "cpu_percent", ">", 90.0, for_s=30.0)
    s, said = step(rule, Status(), 95.0, now=0.0)
    assert (s.state, said) == ("ok", None) and s.breach_since == 0.0
    s, said = step(rule, s, 96.0, now=20.0)
    assert (s.state, said) == ("ok", None)
    s, said = step(rule, s, 97.0, now=30.0)
    assert (s.state, said) == ("firing", "firing")
    s, said = step(rule, s, 99.0, now=40.0)
    assert (s.state, said) == ("firing", None)  # told once, not every interval
    s, said = step(rule, s, 50.0, now=50.0)
    assert (s.state, said) == ("resolved", "resolved")
    s, _ = step(rule, s, 95.0, now=60.0)
    s, _ = step(rule, s, 10.0, now=70.0)  # a dip restarts the clock
    s, said = step(rule, s, 95.0, now=80.0)
    assert (s.state, said, s.breach_since) == ("resolved", None, 80.0)
    assert step(rule, s, 95.0, now=110.0)[1] == "firing"


@pytest.fixture
def receiver():
    """A webhook receiver on loopback; yields (url, list of received JSON bodies)."""
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def test_api_refuses_bad_rules_and_changes_nothing(tapi, tmp_path):
    tapi.add_sim_host(tmp_path, "a1")
    good = {"name": "hot", "metric": "cpu_percent", "comparison": ">", "value": 90}
    for change, status, words in (
            ({"name": "a b"}, 422, "not allowed"), ({"kind": "magic"}, 422, "kind"),
            ({"scope": "rack"}, 422, "scope"), ({"metric": "temperature"}, 422, "unknown"),
            ({"metric": "cpu_percent.anomaly"}, 422, "unknown"), ({"comparison": "=="}, 422, "comparison"),
            ({"for": "soon"}, 422, "duration"), ({"webhook": "ftp://x/y"}, 422, "webhook"),
            ({"webhook": "http://127.0.0.1/a b"}, 422, "webhook"), ({"comparison": None}, 422, "needs a comparison"),
            ({"kind": "anomaly", "comparison": None, "value": 3}, 422, "(0, 1]"), ({"kind": "anomaly", "comparison": "<"}, 422, ">="),
            ({"scope": "pool", "metric": "vms", "target": "x"}, 422, "no target"),
            ({"target": "ghost"}, 404, "no vm 'ghost'"), ({"scope": "host", "target": "ghost",
                                                         "metric": "cpu_percent"}, 404, "no host")):
        r = tapi.post("/alarms", json={**good, **change})
        assert r.status_code == status and words in r.json()["detail"], (change, r.text)
    assert tapi.get("/alarms").json()["total"] == 0
    assert tapi.post("/alarms", json=good).status_code == 201
    assert tapi.post("/alarms", json=good).status_code == 409
    assert tapi.get("/alarms/nope").status_code == 404
    assert tapi.delete("/alarms/nope").status_code == 404
    assert tapi.delete("/alarms/hot").status_code == 204
    assert tapi.get("/alarms").json()["total"] == 0


def test_threshold_alarm_fires_and_resolves_through_the_webhook(tapi, tcp, receiver):
    url, got = receiver
    r = tapi.post("/alarms", json={"name": "busy", "metric": "cpu_percent", "comparison": ">", "value": 50,
                                   "for": "20s", "webhook": url})
    assert r.status_code == 201, r.text
    t, cpu = tcp.telemetry, 0.0
    for i, busy in enumerate([0.1, 0.8, 0.8, 0.8, 0.8, 0.1]):  # CPU fraction of each 10 s interval
        cpu += busy * 10
        t.ingest(1000.0 + 10 * i, [host_read(10.0 * i, {"web": domain(cpu), "db": domain(0)})], {})
    history = tapi.get("/alarms/history", params={"alarm": "busy"}).json()["items"]
    assert [(e["subject"], e["state"]) for e in reversed(history)] == [("web", "firing"), ("web", "resolved")]
    assert history[1]["value"] == 80.0  # fired after 20 s above 50 %, not at once
    assert eventually(lambda: len(got) == 2)
    assert [(g["alarm"], g["subject"], g["state"]) for g in got] == [("busy", "web", "firing"),
                                                                    ("busy", "web", "resolved")]
    assert eventually(lambda: all(e["notified"] for e in tapi.get("/alarms/history").json()["items"]))
    assert tapi.get("/alarms/busy").json()["states"][0]["state"] == "resolved"


def test_an_unreachable_webhook_is_recorded(tapi, tcp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    tapi.post("/alarms", json={"name": "any", "scope": "host", "metric": "vms_running", "comparison": ">=",
                               "value": 0, "webhook": f"http://127.0.0.1:{port}/"})
    tcp.telemetry.ingest(1000.0, [host_read(0.0, {})], {})
    event = eventually(lambda: [e for e in tapi.get("/alarms/history").json()["items"] if e["notify_error"]])
    assert event and "could not be reached" in event[0]["notify_error"] and not event[0]["notified"]


def test_anomaly_alarm_fires_on_a_spike_the_detector_scores(tapi, tcp, receiver):
    """A VM at a steady, slightly noisy 20 % for longer than the detector's learning period,
    then a jump to 95 %: the stored score series jumps and the anomaly alarm fires then, not before."""
    url, got = receiver
    tapi.post("/alarms", json={"name": "odd", "kind": "anomaly", "metric": "cpu_percent", "value": 0.5,
                               "webhook": url})
    t, cpu = tcp.telemetry, 0.0
    levels = [0.20 + 0.01 * (i % 3) for i in range(400)] + [0.95] * 3
    start = time.time() - 10 * len(levels)  # the last 70 minutes, so "since 2h" finds them
    fired_at = None
    for i, level in enumerate(levels):
        cpu += level * 10
        said = t.ingest(start + 10 * i, [host_read(10.0 * (i + 1), {"spiky": domain(cpu)})], {})
        if said and fired_at is None:
            fired_at = i
    assert fired_at is not None and fired_at >= 400, fired_at
    scores = tapi.get("/metrics/query", params={"vm": "spiky", "metric": "cpu_percent.anomaly", "since": "2h"})
    assert scores.status_code == 200, scores.text
    values = [p[1] for p in scores.json()["series"][0]["points"]]
    # 402 CPU samples (the first interval only sets the counters), none scored while learning
    assert len(values) == 402 - 300
    assert max(values[:-3]) < 0.5 <= max(values[-3:])
    gauge = [line for line in tapi.get("/metrics").text.splitlines() if line.startswith("vpool_vm_anomaly_score{")]
    assert any('metric="cpu_percent"' in line and 'vm="spiky"' in line for line in gauge), gauge
    assert eventually(lambda: got) and got[0]["state"] == "firing" and got[0]["subject"] == "spiky"


def test_an_alarm_ends_for_a_vm_that_stops_or_goes_and_holds_for_one_unread(tapi, tcp, tmp_path):
    tapi.add_sim_host(tmp_path, "h1")
    for name in ("a", "b", "c"):
        tapi.task(tapi.post("/vms", json={"name": name, "memory": "256M", "disk": "1G", "start": False}))
    tapi.post("/alarms", json={"name": "busy", "metric": "cpu_percent", "comparison": ">", "value": 50})
    t = tcp.telemetry
    for i, cpu in enumerate((0.0, 8.0)):  # 80 % of a core over the second interval
        t.ingest(1000.0 + 10 * i, [host_read(10.0 * i, {n: domain(cpu) for n in "abc"})], {})
    assert tapi.get("/alarms/busy").json()["firing"] == ["a", "b", "c"]
    tapi.task(tapi.delete("/vms/c"))
    # a's host is not read this interval (stale), b is read stopped, c is gone from the pool
    t.ingest(1020.0, [host_read(20.0, {"b": domain(8.0, running=False)}, host="h2", host_id=2)], {})
    alarm = tapi.get("/alarms/busy").json()
    assert alarm["firing"] == ["a"] and [st["subject"] for st in alarm["states"]] == ["a", "b"]
    history = tapi.get("/alarms/history", params={"alarm": "busy"}).json()["items"]
    assert sorted((e["subject"], e["value"]) for e in history if e["state"] == "resolved") == [("b", None),
                                                                                               ("c", None)]
    t.ingest(1030.0, [host_read(30.0, {"b": domain(8.0, running=False)}, host="h2", host_id=2)], {})
    assert len(tapi.get("/alarms/history", params={"alarm": "busy"}).json()["items"]) == 5  # said once


def test_an_alarm_is_changed_disabled_and_enabled_again(tapi, tcp, receiver):
    url, got = receiver
    tapi.post("/alarms", json={"name": "busy", "metric": "cpu_percent", "comparison": ">", "value": 90,
                               "webhook": url})
    before = tapi.get("/alarms/busy").json()
    for change, status, words in (({"value": None}, 422, "value cannot be null"), ({"comparison": "=="}, 422, "=="),
                                  ({"for": "-1s"}, 422, "duration"), ({"webhook": "ftp://x"}, 422, "webhook"),
                                  ({"kind": "anomaly"}, 422, "kind"), ({"enabled": "maybe"}, 422, "enabled")):
        r = tapi.patch("/alarms/busy", json=change)
        assert r.status_code == status and words in r.text, (change, r.text)
    assert tapi.patch("/alarms/ghost", json={"value": 1}).status_code == 404
    assert tapi.get("/alarms/busy").json() == before
    t, cpu = tcp.telemetry, 0.0

    def interval(i: int, busy: float) -> None:
        nonlocal cpu
        cpu += busy * 10
        t.ingest(1000.0 + 10 * i, [host_read(10.0 * i, {"web": domain(cpu)})], {})

    interval(0, 0.0)
    interval(1, 0.8)
    assert tapi.get("/alarms/busy").json()["firing"] == []        # 80 % is not above 90
    changed = tapi.patch("/alarms/busy", json={"value": 50, "for": "10s"})
    assert changed.status_code == 200 and (changed.json()["value"], changed.json()["for_s"]) == (50, 10.0)
    interval(2, 0.8)
    interval(3, 0.8)
    assert tapi.get("/alarms/busy").json()["firing"] == ["web"]
    off = tapi.patch("/alarms/busy", json={"enabled": False}).json()
    assert (off["enabled"], off["firing"], off["states"]) == (False, [], [])
    assert eventually(lambda: [g["state"] for g in got] == ["firing", "disabled"])
    interval(4, 0.8)                                               # judged by nothing while disabled
    assert [e["state"] for e in tapi.get("/alarms/history").json()["items"]] == ["disabled", "firing"]
    on = tapi.patch("/alarms/busy", json={"enabled": True, "webhook": None}).json()
    assert on["enabled"] and on["webhook"] is None
    interval(5, 0.8)
    interval(6, 0.8)
    assert tapi.get("/alarms/busy").json()["firing"] == ["web"] and len(got) == 2  # no webhook any more
