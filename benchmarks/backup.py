"""Backup benchmark on this machine's libvirtd with tiny TCG guests. Prints JSON.

    .venv/bin/python benchmarks/backup.py [--fill-mib 240] [--drill-vms 3]

- full backup: wall time from request to a valid, checksummed point in the repository, beside
  `qemu-img convert` of the same disk (its whole backing chain, to qcow2) in the same run, bare
  and followed by the SHA-256 and fsync a backup owes;
- incremental: the file the backup wrote beside what the guest actually changed since the
  full one (differing 4 KiB blocks and 64 KiB clusters, found by comparing both disk states);
- restore: the full+incremental chain rebuilt as a new VM (not started);
- DR drill: RTO (drill start to all answering) for --drill-vms tiny guests restored at once.

The VM disk gets --fill-mib of patterned data (written with qemu-io while it is off, inside
ext2 block groups the tiny guest never uses) so the full backup has something to carry.
Everything runs in a temp data dir and its own storage pool, and is removed at the end.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from vpool.config import Settings
from vpool.hypervisor import localhost
from vpool.services.controlplane import ControlPlane
from vpool.services.vms import CreateRequest
from vpool.store.tables import Task

POOL, POOL_PATH = "vpool-bench-bk", "/var/lib/vpool/bench-bk"
FILL_OFFSETS_MIB = (660, 790, 920)  # inside block groups 5-7 of the guest's 1 GiB ext2, past their metadata


def wait(cp, task, timeout: float = 600) -> Task:
    t = cp.runner.outcome(task.id, timeout)
    if t.state != "succeeded":
        raise SystemExit(f"{t.kind} {t.target} {t.state}: {t.error}")
    return t


def seconds(t: Task) -> float:
    return (t.finished_at - t.started_at).total_seconds()


def answers(cp, name: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cp.store.session() as s:
            ip = cp.vms.address(cp.vms.get(s, name))
        if ip:
            try:
                with urllib.request.urlopen(f"http://{ip}/", timeout=2) as r:
                    if r.read().decode().strip() == name:
                        return ip
            except OSError:
                pass
        time.sleep(0.5)
    raise SystemExit(f"{name} never answered")


def raw(path: str, out: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, str(out)], check=True)
    return out


def checksum_and_sync(path: Path) -> float:
    """What a backup owes beyond the copy (a SHA-256, and the bytes on disk before the point is
    valid), done to the convert's output so the peer carries the same duties. Returns seconds."""
    t0 = time.monotonic()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
        os.fsync(f.fileno())
    return time.monotonic() - t0


def changed_bytes(a: Path, b: Path) -> dict:
    """Differing 4 KiB blocks and 64 KiB clusters between two raw images of equal size."""
    blocks = clusters = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(65536), fb.read(65536)
            if not ca:
                break
            if ca != cb:
                clusters += 1
                blocks += sum(ca[i:i + 4096] != cb[i:i + 4096] for i in range(0, len(ca), 4096))
    return {"changed_4k_bytes": blocks * 4096, "changed_64k_bytes": clusters * 65536}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fill-mib", type=int, default=240)
    ap.add_argument("--drill-vms", type=int, default=3)
    args = ap.parse_args()
    localhost.fix_kvm_permissions()
    work = Path(tempfile.mkdtemp(prefix="vpool-bench-bk-"))
    localhost.start_libvirtd(work / "logs")
    settings = dataclasses.replace(Settings(data_dir=work / "data", database_url=f"sqlite:///{work}/vpool.db"),
                                   storage_pool=POOL, storage_path=POOL_PATH)
    cp = ControlPlane(settings)
    cp.start()
    out: dict = {"machine": "2 vCPU, TCG guests (1 vCPU, 256 MiB, 1 GiB disk)", "fill_mib": args.fill_mib}
    names = ["bb1"] + [f"bdr{i}" for i in range(1, args.drill_vms + 1)]
    try:
        wait(cp, cp.hosts.add(localhost.LOCAL_URI, "local"))
        wait(cp, cp.images.build_tiny("tiny"), 900)
        wait(cp, cp.vms.create(CreateRequest(name="bb1", image="tiny", memory_mib=256, disk_gib=1)))
        answers(cp, "bb1")  # first boot formats the disk
        wait(cp, cp.vms.stop("bb1", force=False, timeout_s=60))
        disk = f"{POOL_PATH}/vm-bb1.qcow2"
        per = args.fill_mib // len(FILL_OFFSETS_MIB)
        for i, off in enumerate(FILL_OFFSETS_MIB):
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {0x41 + i} {off}M {per}M", disk],
                           check=True, capture_output=True)
        wait(cp, cp.vms.power("bb1", "start"))
        answers(cp, "bb1")

        # full backup beside qemu-img convert of the same disk
        t0 = time.monotonic()
        full_task = wait(cp, cp.backups.create("bb1"))
        full_wall = time.monotonic() - t0
        full = full_task.result
        conv = work / "convert.qcow2"
        t0 = time.monotonic()
        subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", disk, str(conv)], check=True)
        convert_s = time.monotonic() - t0
        checksummed_s = convert_s + checksum_and_sync(conv)
        data = full["size_bytes"]
        out["full_backup"] = {"bytes": data, "seconds": round(full_wall, 3), "task_seconds": round(seconds(full_task), 3),
                              "MiB_per_s": round(data / 2**20 / full_wall, 1)}
        out["qemu_img_convert"] = {"bytes": conv.stat().st_size, "seconds": round(convert_s, 3),
                                   "MiB_per_s": round(conv.stat().st_size / 2**20 / convert_s, 1)}
        out["full_backup_vs_convert_time_ratio"] = round(full_wall / convert_s, 2)
        out["qemu_img_convert_checksummed_synced_s"] = round(checksummed_s, 3)
        out["full_backup_vs_convert_checksummed_synced_ratio"] = round(full_wall / checksummed_s, 2)
        conv.unlink()

        # incremental after the guest ran for a while, against what it changed
        time.sleep(20)
        wait(cp, cp.vms.power("bb1", "suspend"))
        inc_task = wait(cp, cp.backups.create("bb1", incremental=True))
        inc = inc_task.result
        chain = cp.backups.chain_at("bb1")
        with tempfile.TemporaryDirectory(dir=work) as t:
            class Ctx:  # materialize reports progress; nobody watches here
                def progress(self, *_a):
                    pass

                def check_cancel(self):
                    pass

            full_state = cp.backups.materialize(Ctx(), chain[:1], Path(t))
            a = raw(str(full_state), work / "a.raw")
        b = raw(disk, work / "b.raw")
        diff = changed_bytes(a, b)
        a.unlink()
        b.unlink()
        wait(cp, cp.vms.power("bb1", "resume"))
        out["incremental_backup"] = {"file_bytes": inc["size_bytes"], "seconds": round(seconds(inc_task), 3),
                                     "guest_ran_s": 20, **diff,
                                     "file_vs_changed_64k_ratio": round(inc["size_bytes"] / max(diff["changed_64k_bytes"], 1), 2)}

        # restore of the chain as a new VM
        t0 = time.monotonic()
        restore_task = wait(cp, cp.backups.restore("bb1", as_name="bb1-restored", start=False))
        out["restore"] = {"chain_length": len(restore_task.result["chain"]), "seconds": round(time.monotonic() - t0, 3),
                          "task_seconds": round(seconds(restore_task), 3)}
        wait(cp, cp.vms.delete("bb1-restored"))
        wait(cp, cp.vms.stop("bb1", force=True))

        # DR drill of N tiny guests (their sources shut off first: at most N guests run at once)
        if args.drill_vms > 0:
            for n in names[1:]:
                wait(cp, cp.vms.create(CreateRequest(name=n, image="tiny", memory_mib=256, disk_gib=1)))
            for n in names[1:]:
                answers(cp, n)
                wait(cp, cp.backups.create(n))
                wait(cp, cp.vms.stop(n, force=True))
            drill_task = wait(cp, cp.drills.drill("bdr*", "local"), 900)
            report = json.loads(Path(drill_task.result["report"]).read_text())
            out["dr_drill"] = {"vms": len(report["vms"]), "passed": report["passed"], "rto_s": round(report["rto_s"], 2),
                               "rpo_s": round(report["rpo_s"], 1),
                               "answered_by": sorted({v["answered_by"] for v in report["vms"]}),
                               "per_vm_answer_s": [round(v["answer_s"], 2) for v in report["vms"]]}
    finally:
        for n in names + ["bb1-restored"]:
            try:
                with cp.store.session() as s:
                    vm_id = cp.vms.get(s, n).id
                cp.vms.discard(vm_id)
            except Exception:
                pass
        try:
            cp.images.delete("tiny")  # its copies in the benchmark's pool
        except Exception:
            pass
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
