"""/metrics: Prometheus naming, the token, the latency histogram by route template; then a
REAL Prometheus (Debian package) on loopback scrapes vpool under uvicorn with the shipped
prometheus.yml, answers PromQL with vpool's series, and accepts every Grafana dashboard query."""

import json
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.core.conftest import eventually
from vpool.api.app import create_app
from vpool.lab.procs import end_child

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def _pool_with_a_vm(api, cp, tmp_path):
    api.add_sim_host(tmp_path, "p1")
    api.task(api.post("/vms", json={"name": "pv1", "cpus": 2, "memory": "1G", "disk": "1G"}))
    api.post("/alarms", json={"name": "hot", "metric": "cpu_percent", "comparison": ">", "value": 10})
    cp.telemetry.collect_once()
    cp.telemetry.collect_once()


def test_metrics_names_token_and_latency(tapi, tcp, tmp_path):
    _pool_with_a_vm(tapi, tcp, tmp_path)
    assert tapi.client.get("/metrics").status_code == 401
    tapi.get("/vms/pv1")
    text = tapi.get("/metrics").text
    names = _names(text)
    for name in ("vpool_host_up", "vpool_vm_cpu_seconds_total", "vpool_vm_memory_used_bytes", "vpool_vm_vcpus",
                 "vpool_pool_utilisation_ratio", "vpool_pool_capacity_memory_bytes", "vpool_tasks",
                 "vpool_alarm_firing_subjects", "vpool_api_request_duration_seconds_bucket"):
        assert name in names, name
    assert "# TYPE vpool_vm_anomaly_score gauge" in text and "vpool_vm_anomaly_score" not in names  # still learning
    assert 'vpool_vm_running{host="p1",tenant="",vm="pv1"} 1.0' in text
    assert 'vpool_alarm_firing_subjects{alarm="hot"} 1.0' in text
    assert re.search(r'vpool_api_request_duration_seconds_count\{method="GET",route="/vms/\{ref\}",status="200"\} 1\.0',
                     text)
    counters = {n for n in names if re.search(r"_(seconds|bytes|requests)_total$", n)}
    assert counters and all(f"# TYPE {n.removesuffix('_total')} counter" in text or f"# TYPE {n} counter" in text
                            for n in counters)


def test_dashboard_uses_only_series_vpool_exports(tapi, tcp, tmp_path):
    _pool_with_a_vm(tapi, tcp, tmp_path)
    declared = re.findall(r"^# TYPE (\S+) (\S+)$", tapi.get("/metrics").text, re.M)  # also families without samples
    exported = {f"{n}_total" if kind == "counter" and not n.endswith("_total") else n for n, kind in declared}
    dashboard = json.loads((DEPLOY / "grafana/vpool-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"vpool_[a-z_]+", e)}
    assert used and used <= exported, used - exported


@pytest.fixture
def served(tcp):
    """The API under uvicorn on a free loopback port."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tcp), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert eventually(lambda: server.started)
    yield port
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def prometheus(served, tcp, tmp_path):
    """A real Prometheus scraping `served` every second with deploy/prometheus/prometheus.yml."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("Prometheus is not installed (Debian package 'prometheus'; make test installs it)")
    token = tmp_path / "vpool.token"
    token.write_text(tcp.admin_token)
    config = (DEPLOY / "prometheus/prometheus.yml").read_text()
    for shipped, ours in (("/etc/prometheus/vpool.token", str(token)), ("127.0.0.1:8080", f"127.0.0.1:{served}"),
                          ("scrape_interval: 15s", "scrape_interval: 1s")):
        assert shipped in config
        config = config.replace(shipped, ours)
    path = tmp_path / "prometheus.yml"
    path.write_text(config)
    subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "config", str(path)],
                   check=True, capture_output=True)
    port = _free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        end_child(proc)
        log.close()


def _query(base: str, promql: str) -> dict:
    try:
        return httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}


def test_a_real_prometheus_scrapes_vpool(tapi, tcp, tmp_path, prometheus):
    _pool_with_a_vm(tapi, tcp, tmp_path)
    result = eventually(lambda: _query(prometheus, 'vpool_vm_running{vm="pv1"}').get("data", {}).get("result"),
                        timeout=60)
    assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
    assert result[0]["metric"]["host"] == "p1" and result[0]["metric"]["job"] == "vpool"
    assert _query(prometheus, 'up{job="vpool"}')["data"]["result"][0]["value"][1] == "1"
    capacity = _query(prometheus, "vpool_pool_capacity_vcpus")["data"]["result"]
    assert float(capacity[0]["value"][1]) > 0
    dashboard = json.loads((DEPLOY / "grafana/vpool-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$host", ".*").replace("$vm", ".*")
            answer = _query(prometheus, expr)
            assert answer.get("status") == "success", (panel["title"], expr, answer)
