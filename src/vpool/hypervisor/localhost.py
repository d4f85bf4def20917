"""Making this machine usable as a host: libvirtd running, /dev/kvm usable, the right guest accelerator.

Nothing here assumes: each step checks what is there and says what it did or why it could not.
"""

import functools
import grp
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from vpool.config import cache_dir

LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
LOCAL_URI = "qemu:///system"
TEST_URI = "test:///default"
KERNEL_PROBE_S = 20.0  # a kernel boots under KVM in 1-2 s, and under TCG here in 5


def is_local(uri: str) -> bool:
    """Whether a libvirt URI reaches a daemon on this machine (so its files are ours to open)."""
    parsed = urlparse(uri)
    return not parsed.scheme.startswith("test") and parsed.hostname in (None, "", "localhost", "127.0.0.1")


def libvirtd_answers(sock: Path = LIBVIRT_SOCK) -> bool:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        s.close()


def fix_kvm_permissions(dev: Path = Path("/dev/kvm")) -> str | None:
    """Debian's udev rule makes /dev/kvm 0660 root:kvm; without udev it stays 0600 and libvirt
    re-probes QEMU on every call (a 50 s `virsh create`). Returns what was changed, if anything."""
    if not dev.exists() or os.geteuid() != 0:
        return None
    st = dev.stat()
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return None
    if st.st_gid == kvm_gid and stat.S_IMODE(st.st_mode) & 0o060 == 0o060:
        return None
    os.chown(dev, -1, kvm_gid)
    os.chmod(dev, stat.S_IMODE(st.st_mode) | 0o660)
    return f"made {dev} usable by group kvm (mode 0660)"


def start_libvirtd(log_dir: Path, timeout: float = 30.0) -> str:
    """Starts virtlogd and libvirtd (under vpool's subreaper) when no init system did."""
    if libvirtd_answers():
        return "libvirtd is running"
    if os.geteuid() != 0 or not shutil.which("libvirtd"):
        raise RuntimeError("libvirtd is not running and cannot be started here (needs root and the libvirt-daemon-system package)")
    log_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("virtlogd") and subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode:
        subprocess.run(["virtlogd", "-d"], check=False)
    with open(log_dir / "libvirtd.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "vpool.hypervisor.subreaper", "libvirtd"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if libvirtd_answers():
            return "started libvirtd"
        time.sleep(0.2)
    raise RuntimeError(f"libvirtd did not answer within {timeout:.0f} s; see {log_dir / 'libvirtd.log'}")


def kvm_boots_guests() -> tuple[bool, str]:
    """KVM only counts when stock guest kernels really run under it.

    /dev/kvm can open fine and still run no stock kernel: PVM nested KVM (module kvm_pvm) is
    known to, and is refused at once; anything else is tried by booting a distribution kernel
    under it (kernel_boots), when this machine has one (its own in /boot, or the tiny image's
    once built). VPOOL_VIRT_TYPE=kvm|qemu overrides."""
    forced = os.environ.get("VPOOL_VIRT_TYPE")
    if forced in ("kvm", "qemu"):
        return forced == "kvm", f"VPOOL_VIRT_TYPE={forced}"
    if not Path("/dev/kvm").exists():
        return False, "no /dev/kvm"
    if known_not_to_boot():
        return False, "/dev/kvm is PVM nested KVM, which stock guest kernels cannot boot under"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return False, f"/dev/kvm cannot be opened ({e.strerror})"
    kernel = probe_kernel()
    if kernel is None:
        return True, "not tried with a guest kernel: this machine has none until the tiny image is built"
    ok, detail = kernel_boots(kernel, "kvm")
    return ok, detail if ok else f"a stock Linux kernel does not boot under this machine's KVM: {detail}"


def known_not_to_boot() -> bool:
    return Path("/sys/module/kvm_pvm").exists()


def wants_probe_kernel() -> bool:
    """KVM here is only worth trying with a kernel, and there is none yet: building the tiny image
    brings one (Debian's stock kernel)."""
    return (os.uname().machine == "x86_64" and Path("/dev/kvm").exists() and not known_not_to_boot()
            and probe_kernel() is None)


def probe_kernel() -> Path | None:
    """A stock x86-64 distribution kernel to try KVM with: this machine's own, else the newest tiny
    image's (the probe's command line is x86's)."""
    if os.uname().machine != "x86_64" or not shutil.which("qemu-system-x86_64"):
        return None
    own = Path(f"/boot/vmlinuz-{os.uname().release}")
    if own.is_file() and os.access(own, os.R_OK):
        return own
    built = sorted((cache_dir() / "images" / "tiny").glob("*/vmlinuz"), key=lambda p: p.stat().st_mtime)
    return built[-1] if built else None


@functools.cache
def kernel_boots(kernel: Path, accel: str, timeout: float = KERNEL_PROBE_S) -> tuple[bool, str]:
    """Boots the kernel with no disk until it panics for want of a root file system: by then it
    has been through its whole init (memory, timers, interrupts, SMP, devices), and panic=-1
    with -no-reboot ends QEMU there. On PVM nothing at all comes out on the serial port."""
    argv = ["qemu-system-x86_64", "-accel", accel, "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    started = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout).stdout
    except subprocess.TimeoutExpired as e:
        lines = (e.stdout or b"").decode(errors="replace").strip().splitlines()
        said = f"its last line was {lines[-1][-100:]!r}" if lines else "it printed nothing"
        return False, f"{kernel} did not finish booting under {accel} within {timeout:.0f} s ({said})"
    took, text = time.monotonic() - started, out.decode(errors="replace")
    if "Kernel panic" in text:
        return True, f"{kernel} booted under {accel} to its root mount in {took:.1f} s"
    lines = text.strip().splitlines()
    return False, f"QEMU ended after {took:.1f} s before {kernel} finished booting under {accel}: " + (
        lines[-1][-100:] if lines else "no output")
