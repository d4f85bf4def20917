"""`vpool top`, `vpool stats` and `vpool alarm` against a real server on loopback."""

import json

import pytest
from typer.testing import CliRunner

from tests.serving import cli_env
from vpool.cli.main import app


@pytest.fixture
def server(tcp, monkeypatch):
    with cli_env(tcp, monkeypatch):
        yield


def vpool(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_top_stats_and_alarms(server, tapi, tcp, tmp_path):
    tapi.add_sim_host(tmp_path, "c1")
    tapi.task(tapi.post("/vms", json={"name": "web1", "cpus": 1, "memory": "512M", "disk": "1G"}))
    tcp.telemetry.collect_once()
    tcp.telemetry.collect_once()
    r = vpool("top", "--once")
    assert r.exit_code == 0 and "web1" in r.stdout and "c1" in r.stdout, r.output
    top = json.loads(vpool("top", "--json").stdout)
    assert [v["name"] for v in top["vms"]] == ["web1"] and top["vms"][0]["metrics"]["cpu_percent"] > 0
    r = vpool("stats", "web1", "--since", "1h")
    assert r.exit_code == 0 and "cpu_percent" in r.stdout and "memory_used_bytes" in r.stdout, r.output
    assert json.loads(vpool("stats", "web1", "--json").stdout)["scope"] == "vm"

    r = vpool("alarm", "create", "hot", "--metric", "cpu_percent", "-c", ">", "--value", 10, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["comparison"] == ">", r.output
    tcp.telemetry.collect_once()
    assert "web1" in vpool("alarm", "list").stdout
    history = json.loads(vpool("alarm", "history", "hot", "--json").stdout)
    assert [(e["subject"], e["state"]) for e in history] == [("web1", "firing")]
    assert vpool("alarm", "delete", "hot").exit_code == 0
    assert json.loads(vpool("alarm", "list", "--json").stdout) == []


def test_errors_are_one_line(server):
    for args, words in ((["stats", "ghost"], "no VM 'ghost'"),
                        (["stats", "ghost", "--since", "yesterday"], "ISO 8601"),
                        (["top", "--sort", "colour"], "cannot sort"),
                        (["alarm", "create", "x", "--metric", "nope", "--value", 1], "unknown"),
                        (["alarm", "delete", "ghost"], "no alarm")):
        r = vpool(*args)
        assert r.exit_code == 1 and words in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
