"""The CLI against a real server on loopback: exit codes, one-line errors, --json."""

import json
import socket
import threading
import time

import pytest
import uvicorn
from typer.testing import CliRunner

from vpool.api.app import create_app
from vpool.cli.main import app
from vpool.lab.simhost import write_sim_host


@pytest.fixture
def server(cp, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(cp), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    monkeypatch.setenv("VPOOL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("VPOOL_TOKEN", cp.admin_token)
    yield
    srv.should_exit = True
    thread.join(5)


def vpool(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_host_and_vm_commands(server, tmp_path):
    uri = write_sim_host(tmp_path, "cli1", cpus=4, memory_mib=4096)
    r = vpool("host", "add", uri, "--name", "cli1")
    assert r.exit_code == 0, r.output
    hosts = json.loads(vpool("host", "list", "--json").stdout)
    assert [h["name"] for h in hosts] == ["cli1"]
    r = vpool("vm", "create", "c1", "--cpus", 1, "--memory", "512M", "--disk", "1G", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "succeeded"
    r = vpool("vm", "create", "c2", "--memory", "512M", "--no-wait", "--json")
    task = json.loads(r.stdout)
    assert task["state"] in ("queued", "running", "succeeded")
    assert vpool("task", "wait", task["id"]).exit_code == 0
    assert "c1" in vpool("vm", "list").stdout
    assert json.loads(vpool("vm", "show", "c1", "--json").stdout)["host"] == "cli1"
    assert vpool("vm", "stop", "c1", "--force").exit_code == 0
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


def test_unreachable_api_says_so(monkeypatch):
    monkeypatch.setenv("VPOOL_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VPOOL_TOKEN", "x")
    r = vpool("host", "list")
    assert r.exit_code == 1 and "cannot reach vpool" in r.stderr
