"""API benchmark: VM creates through vpool's HTTP API beside raw libvirt defineXML, then list and
single-GET latency with ten thousand VMs in the pool. Prints JSON.

    .venv/bin/python benchmarks/api.py [--hosts 4] [--create 2000] [--fill 10000] [--clients 8]
                                       [--telemetry off,thread,process | --sync 10,60] [--postgres]

The control plane runs as `vpool serve` in its own process (SQLite, its own temp data dir) with
simulated hosts on libvirt's test driver, so the figures are vpool's own cost, not QEMU's.

`--telemetry` runs the whole benchmark once per mode, each on a fresh server, and compares
them in the same run: `off` (no collection), `thread` (the collection loop on a thread of the
API's process) and `process` (its own process, what `vpool serve` does). A collector process
cannot see a simulated host that lives inside the API's process, so with telemetry on the pool
is one host that the local libvirtd simulates for every client, `test+unix:///default` (its
VMs are cleared before and after), for every mode of that run; raw defines then go through
the daemon too. `--sync` instead runs once per full-sync interval of the reconciler, on that
same daemon host with collection off: what the safety-net sync costs the API's latency.
`--postgres` gives each run a throw-away PostgreSQL server (the suite's, tests/postgres.py, on
loopback and on this machine's cores) instead of SQLite.
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
from vpool.lab.procs import end_child
from vpool.lab.simhost import write_sim_host

libvirt.registerErrorHandler(lambda _c, _e: None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DAEMON_HOST = "test+unix:///default"  # the one simulated host libvirtd shares between connections


def start_server(data_dir: Path, port: int, telemetry: str, sync_s: float | None,
                 database_url: str) -> subprocess.Popen:
    env = {**os.environ, "VPOOL_DATA_DIR": str(data_dir), "VPOOL_DATABASE_URL": database_url,
           "VPOOL_TELEMETRY_PROCESS": "1" if telemetry == "process" else "0"}
    if sync_s is not None:
        env["VPOOL_SYNC_INTERVAL"] = str(sync_s)
    if telemetry == "off":
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


def clear_daemon_host() -> None:
    """The daemon keeps test:///default's domains until it restarts: leave only its own `test`."""
    conn = libvirt.open(DAEMON_HOST)
    for dom in conn.listAllDomains():
        if dom.name() != "test":
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    conn.close()


def latencies(client: httpx.Client, paths: list[str], seconds: float) -> dict:
    """Requests spread evenly over `seconds`, so that they meet every phase of the collection
    intervals that pass meanwhile, not just whichever one a burst happens to fall in."""
    samples = []
    start = time.perf_counter()
    for k, path in enumerate(paths):
        time.sleep(max(0.0, start + k * seconds / len(paths) - time.perf_counter()))
        t0 = time.perf_counter()
        r = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    samples.sort()
    return {"requests": len(samples), "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2)}


def run(args, telemetry: str, daemon_host: bool, sync_s: float | None = None) -> dict:
    if not args.postgres:
        return run_on(args, telemetry, daemon_host, sync_s, os.environ.get("VPOOL_DATABASE_URL", ""))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests/
    from tests.postgres import postgres_server

    with postgres_server() as url:
        return run_on(args, telemetry, daemon_host, sync_s, url)


def run_on(args, telemetry: str, daemon_host: bool, sync_s: float | None, database_url: str) -> dict:
    """One fresh server and pool, the whole benchmark against it."""
    tmp = Path(tempfile.mkdtemp(prefix="vpool-bench-api-"))
    port = free_port()
    server = start_server(tmp / "data", port, telemetry, sync_s, database_url)
    token = (tmp / "data" / "admin.token").read_text().strip()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=120, limits=httpx.Limits(max_connections=args.clients * 2))
    try:
        if not daemon_host:
            # Thin disks are overcommitted here on purpose: the test driver's pool reports 100 GiB.
            client.patch("/pool/defaults", json={"disk_ratio": 100.0}).raise_for_status()
            for h in range(args.hosts):
                uri = write_sim_host(tmp / "hosts", f"sim{h}", cpus=1024, memory_mib=4 * 1024 * 1024)
                wait_task(client, client.post("/hosts", json={"uri": uri, "name": f"sim{h}"}).json()["id"])
            raw = raw_define_rate(write_sim_host(tmp / "hosts", "raw", cpus=1024), args.create)
        else:
            clear_daemon_host()  # 16 simulated CPUs and 3 GiB: ratios make room for 10,000 small VMs
            client.patch("/pool/defaults", json={"disk_ratio": 1000.0, "cpu_ratio": 1000.0,
                                                 "ram_ratio": 1000.0}).raise_for_status()
            wait_task(client, client.post("/hosts", json={"uri": DAEMON_HOST, "name": "sim0"}).json()["id"])
            raw = raw_define_rate(DAEMON_HOST, args.create)
            clear_daemon_host()
            time.sleep(12)  # the collector sees the empty host before the creates start
        created = create_many(client, [f"vm{i:05d}" for i in range(args.create)], args.clients)
        fill = create_many(client, [f"vm{i:05d}" for i in range(args.create, args.fill)], args.clients)
        total = client.get("/vms", params={"limit": 1}).json()["total"]
        if telemetry != "off":
            time.sleep(25)  # two intervals over all 10,000 VMs before latency is sampled
            top = client.get("/metrics/latest").json()
            collected = {"vms_in_last_interval": len(top["vms"]),
                         "host_read_s": [h["duration_s"] for h in top["hosts"]]}
        rng = random.Random(1)
        list_lat = latencies(client, [f"/vms?limit=100&offset={rng.randrange(0, total - 100)}"
                                      for _ in range(args.samples)], args.sample_seconds)
        get_lat = latencies(client, [f"/vms/vm{rng.randrange(args.fill):05d}" for _ in range(args.samples)],
                            args.sample_seconds)
    finally:
        client.close()
        end_child(server, 30)
        if daemon_host:
            clear_daemon_host()
    out = {"telemetry": telemetry, "create_through_api": created, "raw_libvirt_define": raw,
           "api_vs_raw_define": round(created["vms_per_s"] / raw["defines_per_s"], 4),
           "fill": fill, "vms_in_pool": total, "list_page_100": list_lat, "single_get": get_lat,
           "met": {"create": created["vms_per_s"] >= 50, "list_p99": list_lat["p99_ms"] < 50}}
    if telemetry != "off":
        out["collected"] = collected
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--create", type=int, default=2000)
    ap.add_argument("--fill", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--sample-seconds", type=float, default=30.0,
                    help="spread each latency test over this long (three collection intervals)")
    ap.add_argument("--telemetry", default="off",
                    help="comma-separated modes to run and compare: off, thread, process")
    ap.add_argument("--sync", default="",
                    help="comma-separated full-sync intervals in seconds to run and compare (with "
                         "--telemetry off, on the daemon's host); default: vpool's own")
    ap.add_argument("--postgres", action="store_true",
                    help="each run on a throw-away PostgreSQL server instead of SQLite")
    args = ap.parse_args()
    modes = args.telemetry.split(",")
    if any(m not in ("off", "thread", "process") for m in modes):
        raise SystemExit(f"--telemetry takes off, thread and process, got {args.telemetry!r}")
    try:
        syncs = [float(x) for x in args.sync.split(",") if x]
    except ValueError:
        raise SystemExit(f"--sync takes seconds like 10,60, got {args.sync!r}") from None
    if syncs and modes != ["off"]:
        raise SystemExit("--sync compares full-sync intervals with --telemetry off only")
    daemon_host = modes != ["off"] or bool(syncs)  # every run on the same kind of host
    if syncs:
        runs = {f"sync every {s:g} s": run(args, "off", daemon_host, s) for s in syncs}
    else:
        runs = {m: run(args, m, daemon_host) for m in modes}
    report = {"benchmark": "api", "database": "postgresql" if args.postgres else "sqlite",
              "hosts": 1 if daemon_host else args.hosts, "clients": args.clients, "runs": runs,
              "targets": {"create_vms_per_s": 50, "list_p99_ms": 50}}
    if "thread" in runs and "process" in runs:
        report["process_vs_thread"] = {
            "create_rate": round(runs["process"]["create_through_api"]["vms_per_s"]
                                 / runs["thread"]["create_through_api"]["vms_per_s"], 3),
            "list_p99": round(runs["process"]["list_page_100"]["p99_ms"] / runs["thread"]["list_page_100"]["p99_ms"], 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
