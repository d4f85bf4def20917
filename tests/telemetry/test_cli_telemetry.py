"""`vpool top`, `vpool stats`, `vpool forecast` and `vpool alarm` against a real server on loopback."""

import json
import time

import pytest
from typer.testing import CliRunner

from tests.serving import cli_env
from tests.telemetry.conftest import feed_cpu
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
    assert "learning" in next(line for line in r.stdout.splitlines() if "cpu_percent" in line)  # not a score of 0
    assert json.loads(vpool("stats", "web1", "--json").stdout)["scope"] == "vm"

    r = vpool("alarm", "create", "hot", "--metric", "cpu_percent", "-c", ">", "--value", 10, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["comparison"] == ">", r.output
    tcp.telemetry.collect_once()
    assert "web1" in vpool("alarm", "list").stdout
    history = json.loads(vpool("alarm", "history", "hot", "--json").stdout)
    assert [(e["subject"], e["state"]) for e in history] == [("web1", "firing")]
    shown = vpool("alarm", "show", "hot").stdout.splitlines()
    assert "cpu_percent > 10 on any vm" in shown[0] and shown[-2].split()[1:4:2] == ["web1", "firing"], shown
    r = vpool("alarm", "set", "hot", "--value", 20, "--for", "1m", "--disable")
    assert r.exit_code == 0 and "cpu_percent > 20 on any vm for 60 s (disabled)" in r.stdout, r.output
    assert "disabled" in vpool("alarm", "list").stdout
    assert json.loads(vpool("alarm", "set", "hot", "--enable", "--json").stdout)["enabled"] is True
    assert vpool("alarm", "delete", "hot").exit_code == 0
    assert json.loads(vpool("alarm", "list", "--json").stdout) == []


def test_forecast_table(server, tcp):
    tcp.telemetry.interval_s = 10.0
    feed_cpu(tcp, time.time() - 10 * 120, [0.30 + 0.01 * (i % 4) for i in range(120)])
    r = vpool("forecast", "web", "--metric", "cpu_percent", "--horizon", "5m", "--history", "1h")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "web cpu_percent: fitted on" in lines[0] and "now" in r.stdout and "+5m" in lines[-2], r.stdout
    one = vpool("forecast", "web", "--metric", "cpu_percent", "--horizon", "10s", "--history", "1h").stdout
    assert [line.split()[1] for line in one.splitlines() if "│" in line] == ["now", "+10s"], one  # one step: one row
    f = json.loads(vpool("forecast", "web", "--metric", "cpu_percent", "--json").stdout)
    assert (f["step_s"], len(f["points"])) == (10, 180)  # 6 h asked, 20 min there: its 10 s steps; 30 min ahead


def test_errors_are_one_line(server):
    for args, words in ((["stats", "ghost"], "no VM 'ghost'"),
                        (["stats", "ghost", "--since", "yesterday"], "ISO 8601"),
                        (["top", "--sort", "colour"], "cannot sort"),
                        (["alarm", "create", "x", "--metric", "nope", "--value", 1], "unknown"),
                        (["alarm", "delete", "ghost"], "no alarm"),
                        (["alarm", "set", "ghost", "--value", 1], "no alarm"),
                        (["alarm", "set", "ghost"], "say what to change"),
                        (["alarm", "set", "ghost", "--webhook", "http://127.0.0.1/", "--no-webhook"], "not both"),
                        (["forecast", "ghost", "--metric", "cpu_percent"], "no VM 'ghost'")):
        r = vpool(*args)
        assert r.exit_code == 1 and words in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)


def test_top_fits_a_vm_on_one_line_of_80_columns():
    """virt-top's promise: an 80-column terminal shows one line per VM, however busy it is."""
    from rich.console import Console

    from vpool.cli.telemetry import toptable

    busy = {"cpu_percent": 812.5, "memory_used_bytes": 15.5 * 2**30, "disk_read_bytes_per_s": 987.6 * 2**20,
            "disk_write_bytes_per_s": 1000.0 * 2**20, "disk_read_iops": 123456, "disk_write_iops": 98765,
            "net_rx_bytes_per_s": 1.2 * 2**30, "net_tx_bytes_per_s": 999.9 * 2**10, "cpu_percent.anomaly": 0.97}
    data = {"interval_s": 10, "hosts": [{"name": "compute-07", "stale": False, "vms": 2, "metrics": {}}],
            "vms": [{"name": "db-primary-01", "host": "compute-07", "metrics": busy},
                    {"name": "a-name-longer-than-what-is-left-of-the-line", "host": "compute-07", "metrics": {}}]}
    console = Console(width=80, record=True, file=open("/dev/null", "w"))
    console.print(toptable(data))
    lines = console.export_text().splitlines()
    assert len(lines) == 4 and max(map(len, lines)) <= 80  # title, header, two VMs
    assert lines[2].split() == ["812.5", "15.5G", "988M", "0.98G", "123K", "98.8K", "1.20G", "0.98M", "0.97",
                                "compute-07", "db-primary-01"]
    assert lines[3].split()[-1].startswith("a-name-longer") and lines[3].rstrip().endswith("…")
