"""Making this machine usable as a host: libvirtd running, /dev/kvm usable, the right guest accelerator.

Nothing here assumes: each step checks what is there and says what it did or why it could not.
"""

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

LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
LOCAL_URI = "qemu:///system"
TEST_URI = "test:///default"


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

    PVM nested KVM (module kvm_pvm) opens /dev/kvm fine but an unmodified guest kernel never
    finishes booting there, so guests must use TCG. VPOOL_VIRT_TYPE=kvm|qemu overrides."""
    forced = os.environ.get("VPOOL_VIRT_TYPE")
    if forced in ("kvm", "qemu"):
        return forced == "kvm", f"VPOOL_VIRT_TYPE={forced}"
    if not Path("/dev/kvm").exists():
        return False, "no /dev/kvm"
    if Path("/sys/module/kvm_pvm").exists():
        return False, "/dev/kvm is PVM nested KVM, which stock guest kernels cannot boot under"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return False, f"/dev/kvm cannot be opened ({e.strerror})"
    return True, "KVM"
