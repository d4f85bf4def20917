"""What hot-plug room costs a guest: the tiny image booted by QEMU (TCG) with and without the
room model.hotplug gives, the guest's own MemTotal and boot time read back. Prints JSON.

Room is free for the host (qemu creates no thread or memory for an empty slot); the question is
what the guest sets aside for it. Each case boots the same kernel and initramfs with the vCPU
maximum and the memory ceiling the rule gives a VM of that size, as libvirt turns vpool's
definition into qemu arguments (-smp N,maxcpus=M; -m S,slots=K,maxmem=X with one NUMA node),
beside the same VM without room, in the same run. Expected: a few hundred KiB per possible
vCPU; 64 MiB of DMA bounce buffers (swiotlb) for memory room below 3.5 GiB, nothing from there.

    .venv/bin/python benchmarks/hotplug.py [--sizes 256,1024,3584] [--runs 1]
"""

import argparse
import json
import re
import statistics
import subprocess
import time

from vpool.lab.tiny_image import build_tiny
from vpool.model.hotplug import room

BOOT_TIMEOUT_S = 120


def boot(image, memory_mib: int, max_cpus: int | None, max_memory_mib: int | None, slots: int) -> dict:
    """Boots once, reads MemTotal through the serial shell, and powers off."""
    args = ["qemu-system-x86_64", "-accel", "tcg", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.cmdline("hotplug-bench"),
            "-smp", f"1,maxcpus={max_cpus}" if max_cpus else "1"]
    if max_memory_mib:
        args += ["-m", f"{memory_mib}M,slots={slots},maxmem={max_memory_mib}M",
                 "-object", f"memory-backend-ram,id=ram0,size={memory_mib}M", "-numa", "node,nodeid=0,memdev=ram0"]
    else:
        args += ["-m", f"{memory_mib}M"]
    qemu = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out, ready, deadline = b"", None, time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            out += qemu.stdout.read1(4096)
            if ready is None and (m := re.search(rb"LAB-READY .*kernel_uptime=([0-9.]+) init_start", out)):
                ready = float(m.group(1))
                qemu.stdin.write(b"\necho MEM $(sed -n 's/^MemTotal: *//p' /proc/meminfo) END\n")
                qemu.stdin.flush()
            if m := re.search(rb"MEM ([0-9]+) kB END", out):
                return {"memtotal_kib": int(m.group(1)), "boot_s": ready}
        raise RuntimeError(f"the guest did not answer within {BOOT_TIMEOUT_S} s: {out[-300:]!r}")
    finally:
        qemu.kill()
        qemu.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,1024,3584", help="boot memory sizes in MiB")
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    image = build_tiny()
    rows = []
    for mib in map(int, a.sizes.split(",")):
        given = room(1, mib)
        cases = {"no room": (None, None),
                 "vCPU room": (given.max_cpus, None),
                 "vCPU and memory room": (given.max_cpus, 4 * mib)}  # memory room as if given at this size
        defined = "vCPU and memory room" if given.free_slots else "vCPU room"
        for case, (max_cpus, max_memory) in cases.items():
            for _ in range(a.runs):
                r = boot(image, mib, max_cpus, max_memory, given.free_slots or 16)
                rows.append({"memory_mib": mib, "case": case, "what_vpool_defines": case == defined, **r})
    base = {r["memory_mib"]: r["memtotal_kib"] for r in rows if r["case"] == "no room"}
    for r in rows:
        r["guest_loses_kib"] = base[r["memory_mib"]] - r["memtotal_kib"]
    summary = {f"{mib} MiB, {case}": {"guest_loses_kib": statistics.median(r["guest_loses_kib"] for r in same),
                                      "boot_s_median": statistics.median(r["boot_s"] for r in same),
                                      "what_vpool_defines": same[0]["what_vpool_defines"]}
               for (mib, case) in dict.fromkeys((r["memory_mib"], r["case"]) for r in rows)
               if (same := [r for r in rows if (r["memory_mib"], r["case"]) == (mib, case)])}
    print(json.dumps({"max_cpus_with_room": room(1, 256).max_cpus, "summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
