"""Live migration: vpool beside raw `virsh migrate`, on a two-host lab of its own. Prints JSON.

1. An idle tiny guest (256 MiB) hops between the hosts, alternately by raw virsh
   (`virsh migrate --live --p2p --unsafe --persistent --undefinesource`, the same work vpool
   asks of libvirt) and by vpool's migration service (request, placement check, booking, task,
   progress, settling), N times each. Total = wall time of the whole call; downtime = libvirt's
   completed-job statistics (`domjobinfo --completed` on the destination for virsh, the task's
   result for vpool, which reads the same numbers).
2. A guest (512 MiB) that rewrites half its memory in a loop, behind a bandwidth cap below
   its dirty rate: plain pre-copy (virsh, the same cap) is given a time bound and aborted
   when it runs out; vpool (default policy: auto-converge, post-copy after 5 passes or 60 s)
   migrates it M times.

Targets: vpool total <= 1.1 x raw virsh; idle downtime <= 100 ms; every dirtying-guest
migration completes. The lab (prefix mb, 10.94.0/10.84.0) is brought up and taken down here.

    .venv/bin/python benchmarks/migration.py [--runs 10] [--dirty-runs 3] [--cap 20] [--plain-timeout 90]
"""

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from vpool.config import Settings
from vpool.lab.hosts import Lab
from vpool.lab.network import Topology, lease_file
from vpool.services.controlplane import ControlPlane
from vpool.services.vms import CreateRequest
from vpool.store.tables import Task

TOPOLOGY = Topology(prefix="mb", mgmt_bridge="mbmgmt0", guest_bridge="mbbr0", mgmt_subnet="10.94.0",
                    guest_subnet="10.84.0")
HOSTS = ("mb1", "mb2")
VIRSH_FLAGS = ["--live", "--p2p", "--unsafe", "--persistent", "--undefinesource"]


def wait_task(cp: ControlPlane, task, timeout: float = 900) -> Task:
    t = cp.runner.outcome(task.id, timeout)
    if t.state != "succeeded":
        raise SystemExit(f"{t.kind} {t.target}: {t.state}: {t.error}")
    return t


def status(ip: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{ip}/cgi-bin/status", timeout=3) as r:
            return dict(w.split("=", 1) for w in r.read().decode().split() if "=" in w)
    except OSError:
        return {}


def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


class Bench:
    def __init__(self, lab: Lab, cp: ControlPlane):
        self.lab, self.cp = lab, cp

    def uri(self, host: str) -> str:
        return self.lab.uri(HOSTS.index(host) + 1)

    def where(self, name: str) -> str:
        with self.cp.store.session() as s:
            vm = self.cp.vms.get(s, name)
            return vm.host.name if vm.state == "running" else ""

    def create(self, name: str, memory_mib: int) -> str:
        wait_task(self.cp, self.cp.vms.create(CreateRequest(name=name, memory_mib=memory_mib, disk_gib=1,
                                                            image="tiny", host=HOSTS[0])), 180)

        def address():
            with self.cp.store.session() as s:
                return self.cp.vms.address(self.cp.vms.get(s, name))
        ip = until(address, 120, f"{name}'s address")
        until(lambda: status(ip).get("tick"), 120, f"{name}'s web server")
        return ip

    def virsh(self, name: str, src: str, dst: str, *extra: str, timeout: float | None = None) -> dict:
        """One raw migration; with a timeout, aborted (domjobabort) when it runs out."""
        argv = ["virsh", "-q", "-c", self.uri(src), "migrate", *VIRSH_FLAGS, *extra, name, self.uri(dst)]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            job = self._jobinfo(src, name, completed=False)
            subprocess.run(["virsh", "-q", "-c", self.uri(src), "domjobabort", name], capture_output=True)
            proc.communicate()
            return {"completed": False, "gave_up_after_s": round(time.monotonic() - t0, 2),
                    "iterations": job.get("Iteration"), "dirty_rate": job.get("Dirty rate"), "memory_remaining_mib": _mib(job.get("Memory remaining")),
                    "memory_sent_mib": _mib(job.get("Memory processed"))}
        wall = time.monotonic() - t0
        if proc.returncode:
            raise SystemExit(f"virsh migrate failed: {err.strip()}")
        job = self._jobinfo(dst, name, completed=True)
        # vpool hears of the move from libvirt's events; the next vpool run starts from the store.
        until(lambda: self.where(name) == dst, 30, f"the store to see {name} on {dst}")
        return {"completed": True, "total_s": round(wall, 3), "downtime_ms": _int(job.get("Total downtime")),
                "job_ms": _int(job.get("Time elapsed"))}

    def _jobinfo(self, host: str, name: str, completed: bool) -> dict:
        argv = ["virsh", "-q", "-c", self.uri(host), "domjobinfo", name] + (["--completed"] if completed else [])
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}

    def vpool(self, name: str, dst: str, **options) -> dict:
        t0 = time.monotonic()
        task = wait_task(self.cp, self.cp.migrations.migrate(name, to=dst, **options))
        wall = time.monotonic() - t0
        r = task.result
        return {"completed": True, "total_s": round(wall, 3), "downtime_ms": r["downtime_ms"],
                "job_ms": r["duration_ms"], "iterations": r["iterations"], "postcopy": r["postcopy"],
                "memory_sent_mib": _mib(f"{r['memory_bytes']} B")}


def _int(text: str | None) -> int | None:
    return int(text.split()[0]) if text else None


def _mib(text: str | None) -> float | None:
    """virsh prints sizes like '70.123 MiB' or '123 B'."""
    if not text:
        return None
    value, unit = text.split()[:2]
    return round(float(value) * {"B": 2**-20, "KiB": 2**-10, "MiB": 1, "GiB": 1024}[unit], 1)


def summary(runs: list[dict]) -> dict:
    done = [r for r in runs if r["completed"]]
    out = {"runs": runs, "completed": f"{len(done)}/{len(runs)}"}
    for key in ("total_s", "downtime_ms", "job_ms"):
        values = [r[key] for r in done if r.get(key) is not None]
        if values:
            out[f"{key}_median"] = round(statistics.median(values), 3)
            out[f"{key}_max"] = max(values)
    return out


def run(args) -> dict:
    root = Path(tempfile.gettempdir()) / "vpool-migration-bench-lab"
    Lab(root, TOPOLOGY).down(fence=False)  # what a run that died left behind...
    shutil.rmtree(root)  # ...down to the hosts' domain definitions: each run starts empty
    lab = Lab(root, TOPOLOGY)
    data = Path(tempfile.mkdtemp(prefix="vpool-migration-bench-data-"))
    lab.up(len(HOSTS))
    cp = ControlPlane(dataclasses.replace(Settings(data_dir=data), dhcp_lease_files=(lease_file(lab.root),),
                                          sync_interval_s=5.0, reconnect_interval_s=2.0, telemetry_interval_s=0))
    try:
        cp.start()
        for n, host in enumerate(HOSTS, start=1):
            wait_task(cp, cp.hosts.add(lab.uri(n), host, "qemu", f"bridge:{TOPOLOGY.guest_bridge}"))
        wait_task(cp, cp.images.build_tiny("tiny"), 900)
        bench = Bench(lab, cp)
        return {"idle": idle(bench, args), "dirtying": dirtying(bench, args)}
    finally:
        cp.stop()
        lab.down(fence=False)
        shutil.rmtree(data, ignore_errors=True)


def idle(bench: Bench, args) -> dict:
    ip = bench.create("idle", 256)
    boots = status(ip)["boots"]
    raw, ours = [], []
    for i in range(args.runs):
        for who in (("virsh", "vpool") if i % 2 == 0 else ("vpool", "virsh")):
            src = bench.where("idle")
            dst = HOSTS[1] if src == HOSTS[0] else HOSTS[0]
            if who == "virsh":
                raw.append(bench.virsh("idle", src, dst))
            else:
                ours.append(bench.vpool("idle", dst))
            time.sleep(args.settle)
    raw_s, ours_s = summary(raw), summary(ours)
    ratio = round(ours_s["total_s_median"] / raw_s["total_s_median"], 3)
    return {"guest": "tiny, 256 MiB, idle", "virsh": raw_s, "vpool": ours_s,
            "ratio_total_vpool_over_virsh_median": ratio,
            "ratio_total_vpool_over_virsh_mean": round(statistics.mean(r["total_s"] for r in ours)
                                                       / statistics.mean(r["total_s"] for r in raw), 3),
            "guest_rebooted": status(ip).get("boots") != boots,
            "targets": {"total_ratio_le_1.1": ratio <= 1.1, "downtime_le_100ms": ours_s["downtime_ms_max"] <= 100}}


def dirtying(bench: Bench, args) -> dict:
    ip = bench.create("busy", 512)
    boots = status(ip)["boots"]
    # Half the RAM: the dirtier's tmpfs cannot be reclaimed, and a guest short of memory would
    # OOM-kill it. Under TCG its rate is bound by the vCPU, not the size (about 70 MB/s here).
    free_before = int(status(ip)["memfree_kb"])
    with urllib.request.urlopen(f"http://{ip}/cgi-bin/dirty?MB=256&seconds=3600", timeout=10) as r:
        started = r.read().decode().strip()
    until(lambda: free_before - int(status(ip).get("memfree_kb") or free_before) > 200 * 1024, 120,
          "the dirtier to fill its memory")
    src = bench.where("busy")
    plain = bench.virsh("busy", src, HOSTS[1] if src == HOSTS[0] else HOSTS[0], "--bandwidth", str(args.cap),
                        timeout=args.plain_timeout)
    time.sleep(args.settle)
    ours = []
    for _ in range(args.dirty_runs):
        src = bench.where("busy")
        ours.append(bench.vpool("busy", HOSTS[1] if src == HOSTS[0] else HOSTS[0], bandwidth_mib_s=args.cap))
        time.sleep(args.settle)
    after = status(ip)
    return {"guest": f"tiny, 512 MiB, {started}", "bandwidth_cap_mib_s": args.cap,
            "plain_precopy_virsh": plain, "vpool": summary(ours), "policy": dataclasses.asdict(bench.cp.migrations.policy()),
            "guest_rebooted": after.get("boots") != boots,
            "targets": {"every_vpool_migration_completed": all(r["completed"] for r in ours),
                        "plain_precopy_ran_on": not plain["completed"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="idle migrations by each of virsh and vpool")
    ap.add_argument("--dirty-runs", type=int, default=3, help="vpool migrations of the dirtying guest")
    ap.add_argument("--cap", type=int, default=20, help="MiB/s for both peers on the dirtying guest")
    ap.add_argument("--plain-timeout", type=float, default=90.0, help="seconds plain pre-copy is given")
    ap.add_argument("--settle", type=float, default=1.0, help="pause between migrations (s)")
    args = ap.parse_args()
    started = time.time()
    result = run(args)
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
