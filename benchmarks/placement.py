"""Placement beside Ganeti's htools, in the same run; prints JSON.

    .venv/bin/python benchmarks/placement.py            # minutes: hbal/hspace on 10-12 nodes only
    .venv/bin/python benchmarks/placement.py --slow     # + hbal at 100 and 1,000 nodes, hail
                                                        #   at 10,000, hcheck at 1,000 (about
                                                        #   an hour)
    .venv/bin/python benchmarks/placement.py --cluster FILE [--only capacity] [--hbal-timeout CPU_SECONDS]
    .venv/bin/python benchmarks/placement.py --only capacity   # one section (repeatable)

Balance: vpool's `balance` and `hbal` on the same htools file; both final scores are hbal's
formula (vpool's is also re-checked with `hinfo` on the file rewritten with vpool's moves).
Place: decisions per second at 1,000 and 10,000 hosts beside `hail` on the same request.
Pack: hosts used by `place_many` and `consolidate` beside a lower bound for vector packing.
HA: N+1 on each file as it is, `ha_admission` beside `hcheck --no-simulation` (global N+1),
with an exact CP-SAT check as referee up to 100 nodes.
Capacity: how many more medium VMs fit keeping N+1, `capacity` beside `hspace --standard-alloc`
on the same file and disk template; Ganeti's own `hcheck` and an exact CP-SAT N+1 check then
judge the pool with vpool's VMs added (and hspace's, from its `-S` file), so neither count is
taken on trust.

Clusters come from ../shared/ganeti/gen_cluster.py, written into a temporary directory. The
Debian packages ganeti-htools-3.0 and ganeti-htools are installed with apt-get if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vpool.placement import (BalancePolicy, ClusterState, ConsolidationPolicy, PlacementRequest,
                             VMRecord, balance, consolidate, place, place_many)
from vpool.placement.capacity import DEFAULT_FLAVORS, capacity
from vpool.placement.ha import ha_admission
from vpool.placement.htools import HtoolsInstance, new_disks, read_htools
from vpool.placement.packing import lower_bound
from vpool.placement.report import placement_report
from vpool.placement.score import hbal_score
from vpool.placement.state import Workspace

GANETI = Path(os.environ.get("VPOOL_GANETI_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "ganeti")
HTOOLS_BIN = Path("/usr/lib/ganeti/3.0/usr/bin")
HAIL = Path("/usr/lib/ganeti/3.0/usr/lib/ganeti/iallocators/hail")
SECTIONS = ("balance", "place", "capacity", "ha", "pack")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ peers
def ensure_ganeti() -> bool:
    """hbal/hail present, installing the Debian packages if needed."""
    if (HTOOLS_BIN / "hbal").exists() and HAIL.exists():
        return True
    log("installing ganeti-htools-3.0 ganeti-htools with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "ganeti-htools-3.0", "ganeti-htools"]):
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            log(f"could not run {' '.join(cmd)}; the peer columns stay empty")
            return False
    return (HTOOLS_BIN / "hbal").exists()


def run_peer(cmd: list[str], cpu_limit: float) -> dict:
    """Run a Ganeti tool under a CPU-time limit (fair on a shared machine, where wall time
    depends on the neighbours); its wall and CPU seconds, its output, and whether it ended
    by itself. Wall time is capped too, at four times the CPU limit."""
    limit = int(cpu_limit)

    def cap():
        resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 5))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=cap)
    try:
        out, _ = proc.communicate(timeout=4 * cpu_limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    finished = proc.returncode == 0
    result = {"finished": finished, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
              "output": out, "cpu_limit_s": cpu_limit}
    if not finished:
        result["note"] = (f"did not finish within {cpu_limit:.0f} CPU seconds"
                          if cpu >= cpu_limit - 1 or wall >= 4 * cpu_limit else
                          f"exited with code {proc.returncode}: "
                          f"{(out.strip().splitlines() or [''])[-1][:200]}")
    return result


def hbal(path: Path, dynamic: bool, timeout: float) -> dict:
    cmd = [str(HTOOLS_BIN / "hbal"), "-t", str(path)] + ([] if dynamic else ["--ignore-dynu"])
    run = run_peer(cmd, timeout)
    out = run.pop("output")
    result = {"ran": " ".join(["hbal", "-t", path.name] + cmd[3:]), **run}
    initial = re.search(r"Initial score: ([\d.]+)", out)
    result["score_before"] = float(initial.group(1)) if initial else None
    if not run["finished"]:
        result.update(score_after=None, moves=None)
        return result
    improved = re.search(r"Cluster score improved from [\d.]+ to ([\d.]+)", out)
    length = re.search(r"Solution length=(\d+)", out)
    result["score_after"] = float(improved.group(1)) if improved else result["score_before"]
    result["moves"] = int(length.group(1)) if length else 0
    return result


def hinfo_score(path: Path) -> float | None:
    out = run_peer([str(HTOOLS_BIN / "hinfo"), "-t", str(path)], 300)["output"]
    found = re.search(r"Cluster score: ([\d.]+)", out)
    return float(found.group(1)) if found else None


# ------------------------------------------------------------------------------ inputs
def generate(directory: Path, nodes: int, instances: int, seed: int, *extra: str,
             request: bool = False) -> Path:
    name = f"c{nodes}x{instances}s{seed}{''.join(extra).replace('-', '')}.txt"
    path = directory / name
    if not path.exists() or (request and not path.with_suffix(".req.json").exists()):
        args = [sys.executable, str(GANETI / "gen_cluster.py"), "-n", str(nodes), "-i",
                str(instances), "--seed", str(seed), "-o", str(path), *extra]
        if request:
            args += ["--hail-request", str(path.with_suffix(".req.json"))]
        subprocess.run(args, check=True, capture_output=True)
    return path


def load(path: Path) -> ClusterState:
    return read_htools(path.read_text()).to_state()


# ------------------------------------------------------------------------------ balance
def bench_balance(path: Path, dynamic: bool, peer: bool, timeout: float,
                  directory: Path) -> dict:
    cluster = read_htools(path.read_text())
    state = cluster.to_state()
    start_cpu, start = time.process_time(), time.perf_counter()
    plan = balance(state, BalancePolicy(dynamic_load=dynamic))
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    moved_gib = sum(state.vms[state.vm_index[m.vm]].memory_mib for m in plan.moves) / 1024
    ours = {"score_before": round(plan.score_before, 8), "score_after": round(plan.score_after, 8),
            "moves": len(plan.moves), "stages": plan.stages, "ram_moved_gib": moved_gib,
            "cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}
    row = {"cluster": path.name, "nodes": state.n_hosts, "vms": len(state.vms),
           "score": "hbal default" if dynamic else "hbal --ignore-dynu", "vpool": ours}
    if peer:
        rewritten = directory / f"vpool-{path.stem}-{'d' if dynamic else 'i'}.txt"
        rewritten.write_text(cluster.with_moves((m.vm, m.dst, m.dst_secondary) for m in plan.moves).render())
        if dynamic:
            ours["score_after_by_hinfo"] = hinfo_score(rewritten)
        theirs = hbal(path, dynamic, timeout)
        row["hbal"] = theirs
        if theirs["finished"]:
            row["ratio"] = {
                "score_after": _ratio(ours["score_after"], theirs["score_after"]),
                "moves": _ratio(ours["moves"], theirs["moves"]),
                "cpu_s": _ratio(ours["cpu_s"], theirs["cpu_s"]),
                "wall_s": _ratio(ours["wall_s"], theirs["wall_s"])}
            row["score_not_worse_and_no_more_moves"] = (
                ours["score_after"] <= theirs["score_after"] + 1e-8
                and ours["moves"] <= theirs["moves"])
    log(f"balance {path.name} {row['score']}: vpool {ours['score_before']} -> "
        f"{ours['score_after']} in {ours['moves']} moves, {ours['cpu_s']} s"
        + (f"; hbal {row['hbal'].get('score_after')} in {row['hbal'].get('moves')} moves, "
           f"{row['hbal']['cpu_s']} s" if peer else ""))
    return row


def _ratio(a, b):
    return round(a / b, 6) if b else None


# ------------------------------------------------------------------------------ place
def bench_place(path: Path, peer: bool, timeout: float, decisions: int) -> dict:
    state = load(path)
    flavors = list(DEFAULT_FLAVORS.values())
    requests = [PlacementRequest(f"new-{i}", cpus=f.cpus, memory_mib=f.memory_mib,
                                 disk_gib=0) for i, f in
                ((i, flavors[i % len(flavors)]) for i in range(decisions))]
    start = time.perf_counter()
    answers = [place(state, r) for r in requests]
    one_off = time.perf_counter() - start
    work = Workspace(state)
    start = time.perf_counter()
    placed = 0
    for r in requests:
        decision = place(work, r)
        if decision.ok:
            work.add(state.host_index[decision.host], r.demand)
            placed += 1
    sequential = time.perf_counter() - start
    row = {"cluster": path.name, "hosts": state.n_hosts, "vms": len(state.vms),
           "vpool": {"decisions": decisions, "decisions_per_s": round(decisions / one_off),
                     "decisions_per_s_committing": round(decisions / sequential),
                     "refused": sum(not a.ok for a in answers)}}
    # the hail request: one VM of 2 vCPU / 4 GiB (shared storage: no node disk)
    request = PlacementRequest("new-vm-1", cpus=2, memory_mib=4096)
    start = time.perf_counter()
    ours = place(state, request)
    row["vpool"]["one_decision_s"] = round(time.perf_counter() - start, 6)
    row["vpool"]["host"] = ours.host
    row["vpool"]["score_after"] = round(hbal_score(state.add(_vm(request, ours.host))), 8)
    if peer:
        req = path.with_suffix(".req.json")
        run = run_peer([str(HAIL), "-t", str(path), "--no-capacity-checks", str(req)], timeout)
        out = run.pop("output")
        theirs = {"ran": f"hail -t {path.name} --no-capacity-checks {req.name}", **run}
        found = re.search(r'"result":\["([^"]+)"\]', out)
        if run["finished"] and found:
            theirs["host"] = found.group(1)
            theirs["score_after"] = round(hbal_score(state.add(_vm(request, found.group(1)))), 8)
            theirs["decisions_per_s"] = round(1 / run["wall_s"], 3)
            row["ratio"] = {"decisions_per_s": round(row["vpool"]["decisions_per_s"]
                                                     * run["wall_s"])}
        row["hail"] = theirs
    log(f"place {path.name}: {row['vpool']['decisions_per_s']} decisions/s"
        + (f"; hail {row['hail'].get('wall_s')} s for one" if peer else ""))
    return row


def _vm(request, host, secondary=None):
    return VMRecord(request.name, host, request.cpus, request.memory_mib, request.disk_gib, secondary=secondary)


def bench_place_mirrored(directory: Path, peer: bool, clusters: int = 15) -> dict:
    """One DRBD VM, the generator's hail request, on small drbd clusters: the primary and
    mirror `vpool plan place` gives (`placement_report`) beside hail's pair, each judged by the
    hbal score it leaves. hail weighs every pair by that score; vpool takes the primary by its
    weighers and weighs only the mirror."""
    rows = []
    for seed in range(1, 100):
        if len(rows) == clusters:
            break
        try:
            path = generate(directory, 12, 60, seed, "--template", "drbd", request=True)
        except subprocess.CalledProcessError:
            continue  # the generator found no room for some instance's mirror on this seed
        state, asked = load(path), path.with_suffix(".req.json")
        req = json.loads(asked.read_text())["request"]
        request = PlacementRequest("new-vm-1", cpus=req["vcpus"], memory_mib=req["memory"],
                                   disk_gib=sum(d["size"] for d in req["disks"]) / 1024)
        ours = placement_report(state, request, "mirrored")
        row = {"seed": seed, "score_before": round(hbal_score(state), 6), "vpool": [ours["host"], ours.get("mirror")],
               "vpool_score_after": round(hbal_score(state.add(_vm(request, ours["host"], ours.get("mirror")))), 6)}
        if peer:
            out = run_peer([str(HAIL), "-t", str(path), "--no-capacity-checks", str(asked)], 300)["output"]
            found = re.search(r'"result":\["([^"]+)","([^"]+)"\]', out)
            if found:
                row["hail"] = list(found.groups())
                row["hail_score_after"] = round(hbal_score(state.add(_vm(request, *found.groups()))), 6)
        rows.append(row)
    out = {"clusters": len(rows), "nodes": 12, "instances": 60, "rows": rows}
    judged = [r for r in rows if "hail" in r]
    if judged:
        mean = {k: sum(r[k] for r in judged) / len(judged) for k in ("score_before", "vpool_score_after",
                                                                       "hail_score_after")}
        out["summary"] = {
            "same_pair": sum(r["vpool"] == r["hail"] for r in judged),
            "same_primary": sum(r["vpool"][0] == r["hail"][0] for r in judged),
            "vpool_score_no_higher": sum(r["vpool_score_after"] <= r["hail_score_after"] + 1e-9 for r in judged),
            "mean_score": {k: round(v, 4) for k, v in mean.items()},
            "share_of_hails_gain": round((mean["score_before"] - mean["vpool_score_after"])
                                         / (mean["score_before"] - mean["hail_score_after"]), 3)}
    log(f"place on drbd: {out.get('summary', {}).get('same_pair')} of {len(judged)} pairs as hail's")
    return out


# ------------------------------------------------------------------------------ capacity
def hcheck(path: Path) -> dict:
    """Ganeti's verdict on a file: nodes failing N+1 (DRBD's r_mem) and the groups failing
    global N+1 (every node's instances can move elsewhere)."""
    out = run_peer([str(HTOOLS_BIN / "hcheck"), "-t", str(path), "--machine-readable"], 600)["output"]
    found = dict(re.findall(r"HCHECK_INIT_CLUSTER_(N1_FAIL|GN1_FAIL)=(\d+)", out))
    return {k.lower(): int(v) for k, v in found.items()}


def exact_n1(state: ClusterState) -> list[str]:
    """The hosts whose failure leaves some of their VMs nowhere to restart, decided exactly
    (CP-SAT, per failed host) rather than by a greedy pass: the referee for both counts. A
    mirrored VM may restart on its mirror only, needing no disk there; others anywhere on
    their storage, with their disk. Hosts already down have nothing left to lose."""
    from ortools.sat.python import cp_model
    failing = []
    for failed in np.flatnonzero(state.up):
        victims = [v for v in range(len(state.vms)) if state.vm_host[v] == failed]
        targets = [h for h in range(state.n_hosts) if h != failed and state.accepts_vms[h]]
        if not victims:
            continue
        model = cp_model.CpModel()
        where = {}
        for v in victims:
            mirror = state.vm_secondary[v]
            options = [h for h in targets if (h == mirror if mirror >= 0 else
                                              state.storage[h] == state.vm_storage[v])]
            where[v] = {h: model.NewBoolVar(f"{v}@{h}") for h in options}
            model.AddExactlyOne(where[v].values())
        for h in targets:
            for r, unit in enumerate((100, 1, 1)):   # vCPU in hundredths, MiB, GiB
                terms = [(int(np.ceil(state.demand[v, r] * unit)) if not (r == 2 and state.vm_secondary[v] >= 0)
                          else 0, where[v][h]) for v in victims if h in where[v]]
                if terms:    # an overcommitted host takes nothing, but is no failure in itself
                    room = max(0, int(np.floor(state.free[h, r] * unit + 1e-6)))
                    model.Add(sum(d * x for d, x in terms) <= room)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = 30
        if solver.Solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            failing.append(state.host_names[failed])
    return failing


def _judged(cluster, added, directory: Path, name: str) -> dict:
    """hcheck on `cluster` with `added` instances. Instances are written smallest first: a
    node's instances load last-first, and hcheck's evacuation check is greedy in that order,
    so this gives it its best chance (the other order fails pools it passes this way)."""
    grown = cluster.with_instances(added)
    grown = replace(grown, instances=tuple(sorted(grown.instances, key=lambda i: i.mem)))
    path = directory / name
    path.write_text(grown.render())
    return {**hcheck(path), "exact_n1_fail": len(exact_n1(grown.to_state()))}


def bench_capacity(path: Path, template: str, peer: bool, timeout: float, directory: Path) -> dict:
    cluster = read_htools(path.read_text())
    state = cluster.to_state()
    medium = DEFAULT_FLAVORS["medium"]
    start = time.perf_counter()
    ours = capacity(state, {"medium": 1}, failures=1, disks=new_disks(template))
    elapsed = time.perf_counter() - start
    row = {"cluster": path.name, "template": template, "hosts": state.n_hosts, "vms": len(state.vms),
           "vpool": {"fits": ours.fits, "by_room": ours.fits_without_ha, "wall_s": round(elapsed, 3),
                     "limited_by": ours.limited_by[:160]}}
    if peer:
        added = (HtoolsInstance((f"capacity-probe-{i}", str(medium.memory_mib), str(medium.disk_gib * 1024),
                                 str(medium.cpus), "running", "Y", host, mirror or "", template, "", "1",
                                 "-", "N"), 0)
                 for i, (_, host, mirror) in enumerate(ours.placements))
        row["vpool"]["hcheck"] = _judged(cluster, added, directory, f"vpool-{path.name}")
        saved = directory / f"hspace-{path.name}"
        spec = ["--disk-template", template,
                f"--standard-alloc={medium.disk_gib * 1024},{medium.memory_mib},{medium.cpus}"]
        run = run_peer([str(HTOOLS_BIN / "hspace"), "-t", str(path), *spec, "--machine-readable",
                        "-S", str(saved)], timeout)
        out = run.pop("output")
        theirs = {"ran": " ".join(["hspace", "-t", path.name, *spec]), **run}
        found = re.search(r"HTS_ALLOC_INSTANCES=(\d+)", out)
        reason = re.search(r"HTS_ALLOC_FAIL_REASON=(\w+)", out)
        if run["finished"] and found:
            theirs.update(fits=int(found.group(1)), limited_by=reason.group(1) if reason else None)
            final = saved.with_name(saved.name + ".standard")   # -S writes .standard and .tiered
            if final.exists():
                done = read_htools(final.read_text())
                fresh = [i for i in done.instances if i.name not in {j.name for j in cluster.instances}]
                theirs["hcheck"] = _judged(cluster, fresh, directory, f"hspace-judged-{path.name}")
            row["ratio"] = {"fits": _ratio(ours.fits, theirs["fits"]),
                            "wall_s": _ratio(elapsed, run["wall_s"])}
        row["hspace"] = theirs
    log(f"capacity {path.name} {template}: vpool {ours.fits} in {elapsed:.2f} s"
        + (f"; hspace {row['hspace'].get('fits')} in {row['hspace'].get('wall_s')} s" if peer else ""))
    return row


# ------------------------------------------------------------------------------ ha
def bench_ha(path: Path, peer: bool, timeout: float, exact: bool) -> dict:
    """N+1 on the file as it is: `ha_admission` beside `hcheck --no-simulation` (its global
    N+1: can each node's instances move elsewhere), with the exact per-host check as referee
    on small pools (CP-SAT; a greedy plan that fits proves N+1, one that does not may be wrong)."""
    state = load(path)
    start = time.perf_counter()
    ours = ha_admission(state, 1)
    elapsed = time.perf_counter() - start
    row = {"cluster": path.name, "hosts": state.n_hosts, "vms": len(state.vms),
           "vpool": {"n1_holds": ours.ok, "bottlenecks": len(ours.bottlenecks), "wall_s": round(elapsed, 3)}}
    if exact:
        row["exact_n1_fail"] = len(exact_n1(state))
    if peer:
        run = run_peer([str(HTOOLS_BIN / "hcheck"), "-t", str(path), "--machine-readable",
                        "--no-simulation"], timeout)
        out = run.pop("output")
        theirs = {"ran": f"hcheck -t {path.name} --no-simulation", **run}
        found = re.search(r"HCHECK_INIT_CLUSTER_GN1_FAIL=(\d+)", out)
        if run["finished"] and found:
            theirs["gn1_fail_groups"] = int(found.group(1))
            row["ratio"] = {"wall_s": _ratio(elapsed, run["wall_s"])}
        row["hcheck"] = theirs
    log(f"ha {path.name}: vpool {'holds' if ours.ok else 'fails'} in {elapsed:.2f} s"
        + (f"; hcheck {row['hcheck'].get('gn1_fail_groups')} in {row['hcheck']['wall_s']} s" if peer else ""))
    return row


# ------------------------------------------------------------------------------ pack
def bench_pack(path: Path, time_budget: float | None) -> dict:
    state = load(path)
    empty = ClusterState.from_records(state.hosts, ())
    requests = [PlacementRequest(v.name, cpus=v.cpus, memory_mib=v.memory_mib,
                                 disk_gib=v.disk_gib) for v in state.vms]
    start = time.process_time()
    batch = place_many(empty, requests, time_budget=time_budget)
    many_cpu = time.process_time() - start
    many_bound = lower_bound(empty.usable[empty.accepts_vms], state.demand)
    policy = ConsolidationPolicy()
    start = time.process_time()
    plan = consolidate(state, policy)
    cons_cpu = time.process_time() - start
    on = state.accepts_vms
    cons_bound = lower_bound(state.usable[on] * policy.targets, state.demand[state.vm_host >= 0])
    cons_used = int(on.sum()) - len(plan.power_off)
    row = {"cluster": path.name, "hosts": state.n_hosts, "vms": len(state.vms),
           "place_many": {"hosts_used": batch.hosts_used, "lower_bound": many_bound,
                          "ratio": _ratio(batch.hosts_used, many_bound), "method": batch.method,
                          "cpu_s": round(many_cpu, 3)},
           "consolidate": {"hosts_on": cons_used, "lower_bound": cons_bound,
                           "ratio": _ratio(cons_used, cons_bound),
                           "targets": {"cpu": policy.cpu_target, "memory": policy.memory_target},
                           "power_off": len(plan.power_off), "moves": len(plan.moves),
                           "stages": plan.stages, "cpu_s": round(cons_cpu, 3)}}
    log(f"pack {path.name}: place_many {row['place_many']['ratio']} x bound, "
        f"consolidate {row['consolidate']['ratio']} x bound")
    return row


# ------------------------------------------------------------------------------ main
def bench_balances(directory: Path, peer: bool, args) -> list[dict]:
    """The balance rows: hbal beside vpool on shared-storage and DRBD clusters, 10 to 1,000 nodes."""
    rows = []
    for seed in (1, 2, 3, 42):
        path = generate(directory, 10, 60, seed)
        rows += [bench_balance(path, d, peer, args.hbal_timeout, directory)
                 for d in (True, False)]
    for seed in (1, 2, 3, 42):   # DRBD: failovers and disk replacements
        path = generate(directory, 12, 60, seed, "--template", "drbd")
        rows += [bench_balance(path, d, peer, args.hbal_timeout, directory)
                 for d in (True, False)]
    rows.append(bench_balance(generate(directory, 100, 600, 42, "--template", "drbd"), True,
                              peer and args.slow, args.hbal_timeout, directory))
    path = generate(directory, 100, 1000, 42)
    rows += [bench_balance(path, d, peer and args.slow, args.hbal_timeout, directory)
             for d in (True, False)]
    for seed in (1, 2):
        rows.append(bench_balance(generate(directory, 100, 1000, seed), True, False, 0,
                                  directory))
    path = generate(directory, 1000, 10000, 42)
    rows.append(bench_balance(path, True, peer and args.slow, args.hbal_timeout_1000,
                              directory))
    rows.append(bench_balance(path, False, False, 0, directory))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", type=Path, help="run the balance and capacity comparisons "
                                                     "on this htools file only (--only to pick)")
    parser.add_argument("--slow", action="store_true",
                        help="also run hbal at 100 and 1,000 nodes, hail at 10,000 and hcheck at 1,000")
    parser.add_argument("--hbal-timeout", type=float, default=900.0,
                        help="CPU seconds before hbal is stopped and reported unfinished")
    parser.add_argument("--hbal-timeout-1000", type=float, default=600.0,
                        help="the same for hbal at 1,000 nodes")
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--no-peer", action="store_true", help="vpool only")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run this section only (repeatable)")
    args = parser.parse_args(argv)
    wanted = set(args.only or SECTIONS)
    peer = not args.no_peer and ensure_ganeti()
    report = {"benchmark": "placement", "machine": {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "hbal_version": subprocess.run([str(HTOOLS_BIN / "hbal"), "--version"],
                                       capture_output=True, text=True).stdout.strip()
        if peer else None}
    with tempfile.TemporaryDirectory(prefix="vpool-placement-bench-") as tmp:
        directory = Path(tmp)
        if args.cluster:
            if "balance" in wanted:
                report["balance"] = [bench_balance(args.cluster, dynamic, peer, args.hbal_timeout,
                                                   directory) for dynamic in (True, False)]
            if "ha" in wanted:
                report["ha"] = [bench_ha(args.cluster, peer, args.hbal_timeout, True)]
            if "capacity" in wanted:
                template = read_htools(args.cluster.read_text()).new_instance_template
                report["capacity"] = [bench_capacity(args.cluster, template, peer, args.hbal_timeout,
                                                     directory)]
            print(json.dumps(report, indent=1))
            return 0
        if "balance" in wanted:
            report["balance"] = bench_balances(directory, peer, args)
        if "place" in wanted:
            report["place"] = [
                bench_place(generate(directory, 1000, 10000, 42, request=True), peer, 300,
                            args.decisions),
                bench_place(generate(directory, 10000, 100000, 42, request=True),
                            peer and args.slow, 1800, args.decisions)]
            report["place_mirrored"] = bench_place_mirrored(directory, peer)
        if "capacity" in wanted:
            report["capacity"] = [
                bench_capacity(generate(directory, nodes, 60, seed, "--template", template),
                               template, peer, args.hbal_timeout, directory)
                for template, nodes, seeds in (("sharedfile", 10, (1, 2, 3, 42)),
                                               ("drbd", 12, (1, 2, 3, 42)), ("plain", 10, (1, 42)))
                for seed in seeds]
        if "ha" in wanted:
            report["ha"] = [bench_ha(generate(directory, nodes, vms, 42, *extra),
                                     peer and (nodes <= 100 or args.slow and nodes <= 1000),
                                     args.hbal_timeout if nodes <= 100 else args.hbal_timeout_1000,
                                     nodes <= 100)
                            for nodes, vms, extra in ((10, 60, ()), (12, 60, ("--template", "drbd")),
                                                      (100, 1000, ()), (1000, 10000, ()),
                                                      (10000, 100000, ()))]
        if "pack" in wanted:
            report["pack"] = [
                bench_pack(generate(directory, 10, 60, 42), time_budget=10.0),
                bench_pack(generate(directory, 100, 1000, 42), None),
                bench_pack(generate(directory, 100, 1000, 42, "--node-mix", "uniform"), None),
                bench_pack(generate(directory, 1000, 10000, 42), None)]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
