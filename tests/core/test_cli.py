"""The CLI against a real server on loopback: exit codes, one-line errors, --json."""

import io
import json
import threading
import time
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vpool.cli import console
from vpool.cli.main import app
from vpool.lab.simhost import write_sim_host

from ..serving import cli_env


@pytest.fixture
def server(cp, monkeypatch):
    with cli_env(cp, monkeypatch):
        yield


def vpool(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_host_and_vm_commands(server, tmp_path):
    uri = write_sim_host(tmp_path, "cli1", cpus=4, memory_mib=4096)
    r = vpool("host", "add", uri, "--name", "cli1")
    assert r.exit_code == 0, r.output
    hosts = json.loads(vpool("host", "list", "--json").stdout)
    assert [h["name"] for h in hosts] == ["cli1"]
    facts = dict(line.split(None, 1) for line in vpool("host", "show", "cli1").stdout.splitlines()[:15])
    assert facts["name"] == "cli1" and "shared with no other host" in facts["storage"]
    r = vpool("vm", "create", "c1", "--cpus", 1, "--memory", "512M", "--disk", "1G", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "succeeded"
    r = vpool("vm", "create", "c2", "--memory", "512M", "--no-wait", "--json")
    task = json.loads(r.stdout)
    assert task["state"] in ("queued", "running", "succeeded")
    assert vpool("task", "wait", task["id"]).exit_code == 0
    assert "c1" in vpool("vm", "list").stdout
    assert json.loads(vpool("vm", "show", "c1", "--json").stdout)["host"] == "cli1"
    shown = dict(line.split(None, 1) for line in vpool("vm", "show", "c1").stdout.splitlines())
    assert shown["hotplug"] == "up to 8 vCPUs; memory grows while stopped"
    assert (shown["host"], shown["image"], shown["flavor"]) == ("cli1", "-", "-")  # no Python None for people
    r = vpool("vm", "migrate", "c1", "cli1")  # the destination as an argument, as --to
    assert r.exit_code == 1 and "VM c1 already runs on cli1" in r.stderr, r.output
    r = vpool("vm", "migrate", "c1", "cli1", "--to", "elsewhere")
    assert r.exit_code == 1 and "name the destination once" in r.stderr
    r = vpool("host", "maintenance", "cli1", "on")  # the host first, as one says it, works too
    assert r.exit_code == 1 and "0 of 2 VMs left cli1" in r.stderr, r.output  # the pool's only host
    assert vpool("host", "maintenance", "off", "cli1").exit_code == 0
    assert vpool("host", "set", "cli1", "--cpu-ratio", 8, "--reserved-memory", 256).exit_code == 0
    r = vpool("host", "set", "cli1", "--default", "cpu_ratio", "--json")
    policy = json.loads(r.stdout)["policy"]
    assert (policy["cpu_ratio"], policy["reserved_memory_mib"]) == (4.0, 256)
    r = vpool("host", "set", "cli1", "--cpu-ratio", 2, "--default", "cpu_ratio")
    assert r.exit_code == 1 and "choose one" in r.stderr
    r = vpool("vm", "resize", "c1", "--memory", "256M")
    assert r.exit_code == 1 and "stop it first" in r.stderr
    assert vpool("vm", "stop", "c1", "--force").exit_code == 0
    r = vpool("vm", "resize", "c1", "--cpus", 2, "--memory", "1G", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["result"]["memory_mib"] == 1024, r.output
    r = vpool("vm", "resize", "c1", "--disk", "2G")  # libvirt's test driver cannot grow a volume
    assert r.exit_code == 1 and "cannot grow the VM's disk" in r.stderr, r.output
    assert vpool("group", "create", "pair", "--policy", "anti-affinity").exit_code == 0
    r = vpool("group", "add", "pair", "c1", "c2")  # both on cli1
    assert r.exit_code == 1 and "c2 is on cli1, where c1 of the anti-affinity group already runs" in r.stderr
    assert "c1 (cli1)" in vpool("group", "add", "pair", "c1").stdout
    shown = dict(line.split(None, 1) for line in vpool("group", "show", "pair").stdout.splitlines())
    assert (shown["VMs"], shown["rule"]) == ("c1 (cli1)", "holds")
    assert "holds" in vpool("group", "list").stdout
    r = vpool("group", "delete", "pair")
    assert r.exit_code == 1 and "vpool group remove pair" in r.stderr
    assert "no VMs" in vpool("group", "remove", "pair", "c1").stdout
    assert vpool("group", "delete", "pair").exit_code == 0
    assert vpool("vm", "delete", "c1").exit_code == 0


def test_errors_are_one_line_and_exit_non_zero(server, tmp_path):
    vpool("host", "add", write_sim_host(tmp_path, "cli2", cpus=2, memory_mib=2048), "--name", "cli2")
    for args, words in ((["vm", "create", "a b"], "not allowed"),
                        (["vm", "create", "big", "--memory", "1T"], "no host"),
                        (["vm", "show", "nope"], "no VM"),
                        (["host", "maintenance", "sideways", "cli2"], "'on' or 'off'")):
        r = vpool(*args)
        assert r.exit_code == 1, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
    assert json.loads(vpool("vm", "list", "--json").stdout)["total"] == 0


def test_a_dry_run_create_shows_each_hosts_verdict(server, tmp_path):
    for name, memory in (("d1", 4096), ("d2", 2048)):
        vpool("host", "add", write_sim_host(tmp_path, name, cpus=4, memory_mib=memory), "--name", name)
    r = vpool("vm", "create", "n1", "--memory", "1G", "--dry-run")
    assert r.exit_code == 0, r.output
    lines = [line.strip("│").split("│") for line in r.stdout.splitlines() if line.startswith("│")]
    rows = {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in lines}
    assert rows["d1"][0] == "chosen" and float(rows["d1"][-1]) > float(rows["d2"][-1])
    assert "n1 would go to d1 (a dry run: nothing changed)." in r.stdout
    assert json.loads(vpool("vm", "create", "n1", "--dry-run", "--json").stdout)["host"] == "d1"
    r = vpool("vm", "create", "n1", "--memory", "5G", "--dry-run")
    assert r.exit_code == 1 and r.stderr.startswith("error: no host has room for 1 vCPU / 5120 MiB")
    assert "removed by CapacityFilter: short" in r.stdout and "d2" in r.stdout
    assert json.loads(vpool("vm", "list", "--json").stdout)["total"] == 0
    assert vpool("vm", "create", "n1", "--memory", "512M").exit_code == 0  # on d1
    r = vpool("vm", "migrate", "n1", "--copy-storage", "--dry-run")
    assert r.exit_code == 0 and "n1 would go to d2 (a dry run: nothing changed)." in r.stdout, r.output
    assert "removed by TagFilter: the VM's own host" in r.stdout
    r = vpool("vm", "migrate", "n1", "--dry-run")  # sim hosts share no storage
    assert r.exit_code == 1 and "cannot see its disk" in r.stderr, r.output
    assert json.loads(vpool("vm", "migrations", "n1", "--json").stdout) == []
    r = vpool("host", "maintenance", "d1", "on", "--dry-run")
    assert r.exit_code == 1 and "1 of 1 VMs would stay on d1" in r.stderr and "cannot see its disk" in r.stdout
    assert not json.loads(vpool("host", "show", "d1", "--json").stdout)["maintenance"]


def test_names_stay_names_in_paths_and_messages(server, tmp_path):
    """A name is one path segment, whatever it holds, and is printed as given (no Rich markup)."""
    vpool("host", "add", write_sim_host(tmp_path, "cli3", cpus=2, memory_mib=2048), "--name", "cli3")
    assert vpool("vm", "create", "c3", "--memory", "256M").exit_code == 0
    for args, words in ((["vm", "show", ".."], "no VM '..'"), (["vm", "show", "c3?x=1"], "no VM 'c3?x=1'"),
                        (["vm", "show", "a[b]c"], "no VM 'a[b]c'"), (["vm", "delete", "[/]"], "never contain '/'"),
                        (["vm", "delete", "../hosts/cli3"], "never contain '/'"),
                        (["host", "remove", "%2e%2e"], "no host '%2e%2e'")):
        r = vpool(*args)
        assert r.exit_code == 1 and words in r.stderr, (args, r.output)
    assert [h["name"] for h in json.loads(vpool("host", "list", "--json").stdout)] == ["cli3"]
    assert vpool("vm", "delete", "c3").exit_code == 0


def test_unreachable_api_says_so(monkeypatch):
    monkeypatch.setenv("VPOOL_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VPOOL_TOKEN", "x")
    r = vpool("host", "list")
    assert r.exit_code == 1 and "cannot reach vpool" in r.stderr


def test_several_urls_are_tried_in_turn_until_one_answers(server, monkeypatch):
    """A control plane and its standby: the standby refuses connections until it takes over."""
    from vpool.cli import client
    monkeypatch.setattr(client, "_answered", {})
    serving = client.api_urls()[0]
    monkeypatch.setenv("VPOOL_URL", f"http://127.0.0.1:9, {serving}")
    r = vpool("host", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == [], r.output
    assert client.api_urls() == [serving, "http://127.0.0.1:9"]  # asked first from then on
    monkeypatch.setenv("VPOOL_URL", "http://127.0.0.1:9,http://127.0.0.1:7")
    r = vpool("host", "list")
    assert r.exit_code == 1
    assert "cannot reach vpool at http://127.0.0.1:9, http://127.0.0.1:7" in r.stderr


def test_a_console_without_an_api_is_one_line(monkeypatch):
    monkeypatch.setenv("VPOOL_URL", "http://127.0.0.1:1")
    r = vpool("vm", "console", "web1")
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot reach vpool's console at http://127.0.0.1:1")


def test_a_piped_console_waits_for_a_slow_guests_answer(monkeypatch):
    """`echo cmd | vpool vm console` must not end in the quiet before a busy guest echoes."""
    sent = []
    session = SimpleNamespace(last=time.monotonic(), thread=threading.Thread(target=time.sleep, args=(30,), daemon=True))
    session.thread.start()
    ws = SimpleNamespace(send=lambda data: sent.append((time.monotonic(), data)))
    monkeypatch.setattr(console.sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(io.BytesIO(b"uptime\n"))))

    answered = []

    def answer_late():
        time.sleep(console.QUIET_S * 1.5)
        session.last = time.monotonic()
        answered.append(session.last)
    threading.Thread(target=answer_late, daemon=True).start()
    console._pipe(ws, session)
    assert sent == [(sent[0][0], b"uptime\n")]
    assert answered  # it waited for the answer before the quiet that ends it
