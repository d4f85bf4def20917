"""API benchmark: VM creates through vpool's HTTP API beside raw libvirt defineXML, then list and
single-GET latency with ten thousand VMs in the pool. Prints JSON.

    .venv/bin/python benchmarks/api.py [--hosts 4] [--create 2000] [--fill 10000] [--clients 8]

The control plane runs as `vpool serve` in its own process (SQLite, its own temp data dir) with
simulated hosts on libvirt's test driver, so the figures are vpool's own cost, not QEMU's.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import libvirt

from vpool.hypervisor.domain_xml import DomainSpec, domain_xml
from vpool.lab.simhost import write_sim_host

libvirt.registerErrorHandler(lambda _c, _e: None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, telemetry: bool) -> subprocess.Popen:
    env = {**os.environ, "VPOOL_DATA_DIR": str(data_dir)}
    if not telemetry:
        env["VPOOL_TELEMETRY_INTERVAL"] = "0"
    proc = subprocess.Popen([sys.executable, "-m", "vpool.cli.main", "serve", "--port", str(port),
                             "--no-register-local"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"vpool serve did not start: {proc.stderr.read().decode()[-2000:]}")


def wait_task(client: httpx.Client, task_id: int) -> dict:
    while True:
        task = client.get(f"/tasks/{task_id}", params={"wait": 10}).json()
        if task["state"] in ("succeeded", "failed", "cancelled"):
            return task


def create_many(client: httpx.Client, names: list[str], clients: int) -> dict:
    """Posts all creates from `clients` threads, then waits for every task; the clock covers both."""
    def one(name: str) -> int:
        r = client.post("/vms", json={"name": name, "cpus": 1, "memory": "64M", "disk": "1G"})
        if r.status_code != 202:
            raise SystemExit(f"create {name} refused: {r.text}")
        return r.json()["id"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        task_ids = list(pool.map(one, names))
    accepted = time.perf_counter() - started
    with ThreadPoolExecutor(clients) as pool:
        tasks = list(pool.map(lambda t: wait_task(client, t), task_ids))
    elapsed = time.perf_counter() - started
    failed = [t for t in tasks if t["state"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} creates failed, e.g. {failed[0]['error']}")
    return {"vms": len(names), "seconds": round(elapsed, 3), "vms_per_s": round(len(names) / elapsed, 1),
            "accepted_per_s": round(len(names) / accepted, 1)}


def raw_define_rate(uri: str, n: int) -> dict:
    conn = libvirt.open(uri)
    xmls = [domain_xml(DomainSpec(f"raw{i}", str(uuid.uuid4()), 1, 64, "test", f"/default-pool/raw{i}.qcow2",
                                  "network:default")) for i in range(n)]
    started = time.perf_counter()
    for xml in xmls:
        conn.defineXML(xml)
    elapsed = time.perf_counter() - started
    conn.close()
    return {"domains": n, "seconds": round(elapsed, 3), "defines_per_s": round(n / elapsed, 1)}


def latencies(client: httpx.Client, paths: list[str]) -> dict:
    samples = []
    for path in paths:
        t0 = time.perf_counter()
        r = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    samples.sort()
    return {"requests": len(samples), "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--create", type=int, default=2000)
    ap.add_argument("--fill", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--telemetry", action="store_true",
                    help="keep the stats collector on (it shares the API's process and its CPU)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vpool-bench-api-"))
    port = free_port()
    server = start_server(tmp / "data", port, args.telemetry)
    token = (tmp / "data" / "admin.token").read_text().strip()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=120, limits=httpx.Limits(max_connections=args.clients * 2))
    try:
        # Thin disks are overcommitted here on purpose: the test driver's pool reports 100 GiB.
        client.patch("/pool/defaults", json={"disk_ratio": 100.0}).raise_for_status()
        for h in range(args.hosts):
            uri = write_sim_host(tmp / "hosts", f"sim{h}", cpus=1024, memory_mib=4 * 1024 * 1024)
            wait_task(client, client.post("/hosts", json={"uri": uri, "name": f"sim{h}"}).json()["id"])
        raw = raw_define_rate(write_sim_host(tmp / "hosts", "raw", cpus=1024), args.create)
        created = create_many(client, [f"vm{i:05d}" for i in range(args.create)], args.clients)
        fill = create_many(client, [f"vm{i:05d}" for i in range(args.create, args.fill)], args.clients)
        total = client.get("/vms", params={"limit": 1}).json()["total"]
        rng = random.Random(1)
        list_lat = latencies(client, [f"/vms?limit=100&offset={rng.randrange(0, total - 100)}"
                                      for _ in range(args.samples)])
        get_lat = latencies(client, [f"/vms/vm{rng.randrange(args.fill):05d}" for _ in range(args.samples)])
    finally:
        client.close()
        server.terminate()
        server.wait(10)
    print(json.dumps({
        "benchmark": "api", "hosts": args.hosts, "clients": args.clients, "telemetry": args.telemetry,
        "create_through_api": created, "raw_libvirt_define": raw,
        "api_vs_raw_define": round(created["vms_per_s"] / raw["defines_per_s"], 4),
        "fill": fill, "vms_in_pool": total,
        "list_page_100": list_lat, "single_get": get_lat,
        "targets": {"create_vms_per_s": 50, "list_p99_ms": 50},
        "met": {"create": created["vms_per_s"] >= 50, "list_p99": list_lat["p99_ms"] < 50},
    }, indent=2))


if __name__ == "__main__":
    main()
