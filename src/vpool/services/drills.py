"""DR drills: prove the backups bring the VMs back, and measure how fast and how fresh.

A drill restores the newest restorable backup of each selected VM under a drill name onto a
host, on a network it creates for the drill and removes afterwards (isolated: no forward, so
the copies can neither reach nor disturb anything, least of all their originals), boots
them, and waits until each answers: its serial console prints the tiny guest's LAB-READY line,
or its web server answers with its name. RTO is drill start to all answering; RPO is how old
the restored point was at the start. Everything the drill made is removed again.
"""

import fnmatch
import json
import threading
import time
import urllib.request
from datetime import datetime

from sqlalchemy import select

from vpool.hypervisor.libvirt_protection import ProtectionOps
from vpool.lab.tiny_image import READY_MARKER  # the line a guest's serial console says it is up with
from vpool.model.errors import NotFound
from vpool.placement.request import count
from vpool.services import provision
from vpool.store.backup_tables import Backup, Drill
from vpool.store.tables import utcnow

ANSWER_TIMEOUT_S = 300.0
DRILL_SUBNET = "10.214"  # 10.214.N.0/24 per drill; vpool's guest network is 10.213.0.0/24


def select_vms(names: list[str], selector: str) -> list[str]:
    """Comma-separated names or shell patterns; `all` or `*` for every backed-up VM."""
    patterns = [p.strip() for p in selector.split(",") if p.strip()]
    if not patterns:
        return []
    if patterns == ["all"]:
        patterns = ["*"]
    return sorted(n for n in set(names) if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def summary(report: dict) -> str:
    lines = [f"DR drill {report['drill']}: {'PASSED' if report['passed'] else 'FAILED'} "
             f"({count(len(report['vms']), 'VM')}, selector {report['selector']!r}, "
             f"host {report['target_host'] or 'any'})",
             f"  RTO {report['rto_s']:.1f} s (drill start to all answering)" if report["rto_s"] is not None
             else "  RTO: not all VMs answered",
             f"  RPO {report['rpo_s']:.0f} s (age of the oldest restored point)"]
    for v in report["vms"]:
        how = f"answered by {v['answered_by']} after {v['answer_s']:.1f} s" if v["answered_by"] else \
            f"did not answer: {v.get('error') or 'timed out'}"
        lines.append(f"  - {v['vm']}: backup {v['backup']} of {v['point_at']} (RPO {v['rpo_s']:.0f} s) "
                     f"as {v['restored_as']} on {v['host']}: {how}")
    lines.append(f"  cleanup: {report['cleanup']}")
    return "\n".join(lines)


def _http_name(ip: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{ip}/", timeout=2) as r:
            return r.read().decode().strip()
    except OSError:
        return None


class DrillService:
    def __init__(self, cp):
        self.cp = cp

    def _reports_dir(self):
        path = self.cp.settings.data_dir / "drills"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def drill(self, selector: str, target_host: str | None = None, requested_by: str = "admin"):
        with self.cp.store.session() as s:
            names = list(s.scalars(select(Backup.vm_name).where(Backup.state == "valid")))
            if target_host:
                target_host = self.cp.hosts.get(s, target_host).name
        vms = select_vms(names, selector)
        if not vms:
            raise NotFound(f"no VM with a valid backup matches {selector!r} "
                           f"(backed up: {', '.join(sorted(set(names))) or 'none'})")
        chains = {vm: self.cp.backups.chain_at(vm) for vm in vms}
        with self.cp.store.session() as s:
            drill = Drill(selector=selector, target_host=target_host, state="running")
            s.add(drill)
            s.commit()
            drill_id = drill.id

        def body(ctx):
            return self._run(ctx, drill_id, selector, target_host, chains)

        task = self.cp.runner.submit("dr.drill", selector, {"vms": vms, "target_host": target_host, "drill": drill_id},
                                     body, requested_by=requested_by)
        with self.cp.store.session() as s:
            s.get(Drill, drill_id).task_id = task.id
            s.commit()
        return task

    def _run(self, ctx, drill_id: int, selector: str, target_host: str | None, chains: dict) -> dict:
        t0, started = time.monotonic(), utcnow()
        network = f"vpool-dr{drill_id}"
        networks: set[int] = set()
        bookings: list[provision.Booking] = []
        watchers = []
        entries = []
        try:
            for i, (vm, chain) in enumerate(chains.items()):
                ctx.check_cancel()
                point = chain[-1]
                spec = point.spec
                image_id, boot = self.cp.backups.boots_from(spec)
                booking = provision.book(self.cp, f"dr{drill_id}-{vm}"[:63], spec["cpus"], spec["memory_mib"],
                                         spec["disk_gib"], image_id, target_host, boot=boot)
                bookings.append(booking)
                drv = self.cp.connections.driver(booking.host_id)
                if booking.host_id not in networks:
                    drv.ensure_isolated_network(network, f"vpdr{drill_id % 10000}", f"{DRILL_SUBNET}.{drill_id % 250}")
                    networks.add(booking.host_id)
                ready = threading.Event()
                entry = {"vm": vm, "backup": point.id, "point_at": point.point_at.isoformat(),
                         "rpo_s": (started - point.point_at).total_seconds(), "restored_as": booking.name,
                         "host": booking.host, "answered_by": None, "answer_s": None}
                entries.append((entry, booking, ready))
                ops = ProtectionOps(drv)

                def boot(uuid, ops=ops, ready=ready):
                    ops.start_paused(uuid)  # listen on the console before the guest can print anything
                    watchers.append(ops.watch_console(uuid, READY_MARKER.encode(), ready))
                    ops.drv.resume(uuid)

                ctx.progress(5 + 60 * i // len(chains), f"restoring {vm} (backup {point.id}) as {booking.name}")
                self.cp.backups.restore_into(_Quiet(ctx), chain, booking, network=f"network:{network}",
                                             before_start=boot)
            ctx.progress(70, "waiting for the restored VMs to answer")
            self._wait_answers(ctx, entries, t0)
            failure = None
        except Exception as e:  # still clean up and write the report, then fail the task with e
            failure = e
            for entry, _b, _r in entries:
                if not entry["answered_by"]:
                    entry["error"] = getattr(e, "detail", None) or str(e)
        finally:
            for stop in watchers:
                stop()
            cleanup = self._cleanup(bookings, networks, network)
            report = self._report(drill_id, selector, target_host, started, entries, chains, cleanup)
        if failure is not None:
            raise failure
        return {"drill": drill_id, "passed": report["passed"], "rto_s": report["rto_s"], "rpo_s": report["rpo_s"],
                "report": report["files"]["json"]}

    def _wait_answers(self, ctx, entries, t0: float) -> None:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        waiting = list(entries)
        while waiting and time.monotonic() < deadline:
            ctx.check_cancel()
            for item in list(waiting):
                entry, booking, ready = item
                how = "serial" if ready.is_set() else None
                if how is None:
                    drv = self.cp.connections.driver(booking.host_id)
                    ips = drv.guest_addresses(booking.uuid)
                    if ips and _http_name(ips[0]) == booking.name:
                        how = "http"
                if how:
                    entry["answered_by"], entry["answer_s"] = how, time.monotonic() - t0
                    waiting.remove(item)
            if waiting:
                time.sleep(0.2)
        for entry, _b, _r in waiting:
            entry["error"] = f"no answer within {ANSWER_TIMEOUT_S:.0f} s"

    def _cleanup(self, bookings, networks: set[int], network: str) -> str:
        problems = []
        for b in bookings:
            try:
                provision.release(self.cp, b)
                self.cp.vms.discard(b.vm_id)
            except Exception as e:  # keep cleaning the rest, report what stayed
                problems.append(f"{b.name}: {e}")
        for host_id in networks:
            try:
                ProtectionOps(self.cp.connections.driver(host_id)).remove_network(network)
            except Exception as e:
                problems.append(f"network {network}: {e}")
        return "removed the drill's VMs, disks and network" if not problems else "left behind: " + "; ".join(problems)

    def _report(self, drill_id, selector, target_host, started: datetime, entries, chains, cleanup) -> dict:
        vms = [e for e, _b, _r in entries]
        passed = len(vms) == len(chains) and all(v["answered_by"] for v in vms)
        report = {"drill": drill_id, "selector": selector, "target_host": target_host,
                  "started_at": started.isoformat(), "finished_at": utcnow().isoformat(), "passed": passed,
                  "rto_s": max(v["answer_s"] for v in vms) if passed else None,
                  "rpo_s": max((v["rpo_s"] for v in vms), default=0.0), "vms": vms, "cleanup": cleanup}
        base = self._reports_dir() / f"drill-{drill_id}"
        report["files"] = {"json": str(base.with_suffix(".json")), "summary": str(base.with_suffix(".txt"))}
        base.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        base.with_suffix(".txt").write_text(summary(report) + "\n")
        with self.cp.store.session() as s:
            d = s.get(Drill, drill_id)
            d.state, d.rto_s, d.rpo_s, d.report, d.finished_at = ("passed" if passed else "failed", report["rto_s"],
                                                                    report["rpo_s"], report, utcnow())
            s.commit()
        return report

    def listing(self) -> list[dict]:
        with self.cp.store.session() as s:
            return [describe(d) for d in s.scalars(select(Drill).order_by(Drill.id.desc()))]

    def show(self, drill_id: int) -> dict:
        with self.cp.store.session() as s:
            d = s.get(Drill, drill_id)
            if d is None:
                raise NotFound(f"there is no drill {drill_id}")
            out = describe(d)
            out["report"] = d.report
            out["summary"] = summary(d.report) if d.report else None
            return out


def describe(d: Drill) -> dict:
    return {"id": d.id, "selector": d.selector, "target_host": d.target_host, "state": d.state, "rto_s": d.rto_s,
            "rpo_s": d.rpo_s, "vms": len(d.report["vms"]) if d.report else None, "task_id": d.task_id,
            "started_at": d.started_at, "finished_at": d.finished_at}


class _Quiet:
    """A restore inside a drill reports through the drill's own progress, not over it."""

    def __init__(self, ctx):
        self.ctx = ctx

    def progress(self, _percent, _message=None) -> None:
        pass

    def check_cancel(self) -> None:
        self.ctx.check_cancel()
