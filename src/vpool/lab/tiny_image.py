"""The tiny lab guest: Debian's own kernel plus a busybox initramfs, built from Debian packages.

vpool's real-guest tests and ``vpool image build-tiny`` need a guest that boots in seconds under
TCG, takes an address, answers HTTP with its name and can be told to load its CPU or dirty its
memory. Any full distribution image would boot for minutes under TCG and come from outside the
Debian archive; this one is a kernel, an initramfs of a few MiB and a blank qcow2 base disk.

The build is cached outside the repository, keyed on the kernel package version and a digest of
everything that goes into the initramfs, so an unchanged recipe costs nothing on a second call
and any change to the guest's scripts rebuilds.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from vpool.config import cache_dir

READY_MARKER = "LAB-READY"
HOSTNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
KERNEL_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
BASE_DISK_NAME = "base-64M.qcow2"
BASE_DISK_SIZE = "64M"

# Loaded by /init in this order: the guest has no depmod, so every module follows its dependencies.
MODULES = (
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
    "drivers/block/virtio_blk",
    "lib/crc16",
    "fs/mbcache",
    "fs/jbd2/jbd2",
    "crypto/crc32c_generic",
    "fs/ext4/ext4",
    "drivers/char/hw_random/virtio-rng",
    "drivers/virtio/virtio_balloon",
    "drivers/input/evdev",
    "drivers/acpi/button",
)

# Files of the package's guest/ directory and where they go in the initramfs (path, mode).
GUEST_FILES = {
    "init": ("init", 0o755),
    "udhcpc.script": ("usr/share/udhcpc/default.script", 0o755),
    "status.cgi": ("www/cgi-bin/status", 0o755),
    "burn.cgi": ("www/cgi-bin/burn", 0o755),
    "dirty.cgi": ("www/cgi-bin/dirty", 0o755),
    "dirty-args": ("bin/dirty-args", 0o755),
    "dirtier": ("bin/dirtier", 0o755),
    "agent": ("bin/agent", 0o755),
    "power-button": ("etc/acpi/PWRF/00000080", 0o755),
    "acpid.conf": ("etc/acpid.conf", 0o644),
    "passwd": ("etc/passwd", 0o644),
    "group": ("etc/group", 0o644),
}
# Mount points and run-time directories that no file above creates.
EMPTY_DIRS = ("proc", "sys", "dev", "run", "tmp", "data", "sbin", "var/log")

XZ_MAGIC = b"\xfd7zXZ\x00"
PT_INTERP = 3
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 0x12

Progress = Callable[[int, str], None]


class BuildError(RuntimeError):
    """The tiny image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class TinyImage:
    """A built tiny guest: what a domain definition or a bare qemu command line needs."""

    kernel: Path
    initrd: Path
    kernel_version: str
    base_disk: Path

    def cmdline(self, hostname: str) -> str:
        """The kernel command line that boots the guest under ``hostname``.

        The name is checked here because the cmdline is the one place where a space or a ``;``
        would turn a name into extra kernel or init arguments.
        """
        validate_hostname(hostname)
        return f"console=ttyS0 quiet lab.host={hostname}"


def validate_hostname(hostname: str) -> str:
    if not HOSTNAME_RE.fullmatch(hostname):
        raise ValueError(
            f"invalid guest hostname {hostname!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return hostname


def default_cache_dir() -> Path:
    return cache_dir() / "images" / "tiny"


def build_tiny(
    cache_dir: Path | None = None, force: bool = False, progress: Progress | None = None
) -> TinyImage:
    """Return the tiny image, building it first unless an identical build is cached.

    ``progress(percent, message)`` is called as the build advances, so a Task can show it.
    ``force`` rebuilds the kernel and initramfs in place; the base disk is never replaced,
    because VM disks are overlays whose backing file must stay what it was.
    """
    report = progress or (lambda percent, message: None)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    recipe = recipe_digest()
    with _exclusive(cache / ".lock"):
        _remove_leftovers(cache)
        _ensure_base_disk(cache)
        apt = _Apt(cache)
        name, version = apt.resolve()
        dest = cache / f"{version}-{recipe[:12]}"
        if not force and (image := _load(dest, cache)) is not None:
            report(100, f"tiny image {image.kernel_version} is cached in {dest}")
            return image
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as tmp:
            work = Path(tmp)
            report(5, f"downloading {name} {version}")
            deb, version = apt.download(work)
            dest = cache / f"{version}-{recipe[:12]}"
            built = _build(deb, version, recipe, work, report)
            _install(built, dest, work)
        image = _load(dest, cache)
        if image is None:
            raise BuildError(f"the build in {dest} is incomplete")
        report(100, f"tiny image {image.kernel_version} built in {dest}")
        return image


def recipe_digest() -> str:
    """A digest of all that shapes the initramfs, so that changing any of it rebuilds."""
    busybox = _static_busybox()
    h = hashlib.sha256()
    for name in sorted(GUEST_FILES):
        h.update(f"{name}\0{GUEST_FILES[name]}\0".encode())
        h.update(_guest_file(name))
    h.update("\0".join(MODULES + EMPTY_DIRS).encode())
    h.update(hashlib.sha256(busybox).digest())
    return h.hexdigest()


def _static_busybox() -> bytes:
    """busybox is the initramfs's only program, so it must need no shared libraries."""
    try:
        busybox = BUSYBOX.read_bytes()
        dynamic = any(p_type == PT_INTERP for p_type, _, _ in _segments(busybox))
    except (OSError, ValueError, struct.error):
        dynamic = True
    if dynamic:
        raise BuildError(f"{BUSYBOX} is not a static busybox: apt-get install busybox-static")
    return busybox


def _guest_file(name: str) -> bytes:
    return resources.files("vpool.lab").joinpath("guest", name).read_bytes()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise builders: two concurrent test sessions must not both download 70 MB."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _Apt:
    """Finds and downloads the kernel package, refreshing apt's lists at most once.

    Asking apt for the candidate version costs most of a second where apt's package cache is
    disabled (as in Debian's container images), which a cached call should not pay. The answer
    is remembered in the cache next to a fingerprint of apt's lists and preferences: while those
    files are unchanged, so is the candidate.
    """

    LISTS = Path("/var/lib/apt/lists")
    PREFERENCES = (Path("/etc/apt/preferences"), Path("/etc/apt/preferences.d"))

    def __init__(self, cache: Path) -> None:
        self._memo = cache / "apt-candidate.json"
        self._updated = False

    def resolve(self) -> tuple[str, str]:
        """The versioned kernel package that ``linux-image-amd64`` currently depends on."""
        fingerprint = self._fingerprint()
        with contextlib.suppress(OSError, ValueError, KeyError):
            memo = json.loads(self._memo.read_text())
            if memo["fingerprint"] == fingerprint:
                return memo["package"], memo["version"]
        try:
            name, version = self._ask()
        except BuildError:
            self._update()
            name, version = self._ask()
        memo = {"fingerprint": self._fingerprint(), "package": name, "version": version}
        tmp = self._memo.with_suffix(".tmp")
        tmp.write_text(json.dumps(memo))
        tmp.replace(self._memo)
        return name, version

    def download(self, into: Path) -> tuple[Path, str]:
        """Download the kernel package; stale lists (a superseded version) get one update."""
        name, version = self.resolve()
        try:
            _run(["apt-get", "download", f"{name}={version}"], cwd=into)
        except BuildError:
            if self._updated:
                raise
            self._update()
            name, version = self.resolve()
            _run(["apt-get", "download", f"{name}={version}"], cwd=into)
        debs = sorted(into.glob(f"{name}_*.deb"))
        if len(debs) != 1:
            raise BuildError(f"apt-get download {name}={version} left {len(debs)} packages")
        return debs[0], version

    def _ask(self) -> tuple[str, str]:
        out = _run(["apt-cache", "show", "--no-all-versions", KERNEL_PACKAGE])
        depends = re.search(r"^Depends: .*?(linux-image-[^\s,(]+) \(= ([^)]+)\)", out, re.M)
        if not depends:
            raise BuildError(f"apt-cache does not say which kernel {KERNEL_PACKAGE} depends on")
        return depends.group(1), depends.group(2)

    def _update(self) -> None:
        if self._updated:
            return
        self._updated = True
        _run(["apt-get", "update", "-qq"])

    def _fingerprint(self) -> list[list]:
        files: list[Path] = []
        if self.LISTS.is_dir():
            files += [p for p in self.LISTS.iterdir() if p.is_file() and p.name != "lock"]
        for pref in self.PREFERENCES:
            if pref.is_dir():
                files += pref.iterdir()
            elif pref.exists():
                files.append(pref)
        stats = []
        for path in sorted(files):
            with contextlib.suppress(FileNotFoundError):  # apt-get update may be renaming it
                st = path.stat()
                stats.append([str(path), st.st_size, st.st_mtime_ns])
        return stats


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise BuildError(f"{argv[0]} is not installed") from e
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BuildError(f"{' '.join(argv)} failed ({done.returncode}): {' / '.join(detail)}")
    return done.stdout


def _build(deb: Path, version: str, recipe: str, work: Path, report: Progress) -> Path:
    """Unpack the kernel package and write kernel, initramfs and manifest into work/image."""
    report(30, "unpacking the kernel package")
    root = work / "deb"
    _run(["dpkg-deb", "-x", str(deb), str(root)])
    versions = [p.name for p in (root / "lib" / "modules").iterdir()]
    if len(versions) != 1:
        raise BuildError(f"{deb.name} holds {len(versions)} module trees, expected one")
    kver = versions[0]
    out = work / "image"
    out.mkdir()
    bzimage = root / "boot" / f"vmlinuz-{kver}"
    shutil.copyfile(bzimage, out / "vmlinuz")

    report(50, "extracting the PVH kernel")
    vmlinux = extract_vmlinux(bzimage.read_bytes())
    if vmlinux is not None and has_pvh_entry(vmlinux):
        (out / "vmlinux").write_bytes(vmlinux)
        kernel = "vmlinux"
    else:
        kernel = "vmlinuz"  # boots too, through SeaBIOS and the in-guest decompressor: slower
    del vmlinux

    report(75, "writing the initramfs")
    write_initramfs(out / "initrd.img", root / "lib" / "modules" / kver)
    manifest = {
        "kernel": kernel,
        "kernel_version": kver,
        "package_version": version,
        "recipe": recipe,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _install(built: Path, dest: Path, work: Path) -> None:
    """Put a finished build in place with renames only, so no reader sees half of one."""
    if dest.exists():
        dest.rename(work / "replaced")
    built.rename(dest)


def _remove_leftovers(cache: Path) -> None:
    """Drop what a killed builder left (an unpacked kernel package is 400 MB).

    Only called under the lock, so no live builder owns any of it.
    """
    for leftover in cache.glob(".build-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in cache.glob(f".{BASE_DISK_NAME}.*"):
        leftover.unlink(missing_ok=True)


def _ensure_base_disk(cache: Path) -> Path:
    disk = cache / BASE_DISK_NAME
    if not disk.exists():
        tmp = cache / f".{BASE_DISK_NAME}.{os.getpid()}"
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), BASE_DISK_SIZE])
        tmp.rename(disk)
    return disk


def _load(dest: Path, cache: Path) -> TinyImage | None:
    try:
        manifest = json.loads((dest / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd, disk = dest / manifest["kernel"], dest / "initrd.img", cache / BASE_DISK_NAME
    if not (kernel.is_file() and initrd.is_file() and disk.is_file()):
        return None
    return TinyImage(kernel, initrd, manifest["kernel_version"], disk)


# --- kernel -----------------------------------------------------------------------------------


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage's xz payload, or None if there is none.

    QEMU boots that ELF directly through its PVH entry point, skipping SeaBIOS's real-mode setup
    and the guest's own decompression: about 3 s faster under TCG. The payload is followed by
    the bzImage's trailer, which the decompressor leaves aside once the stream ends.
    """
    view = memoryview(bzimage)
    pos = bzimage.find(XZ_MAGIC)
    while pos != -1:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        with contextlib.suppress(lzma.LZMAError):
            elf = decompressor.decompress(view[pos:])
            if decompressor.eof and elf[:4] == b"\x7fELF":
                return elf
        pos = bzimage.find(XZ_MAGIC, pos + 1)
    return None


def _segments(elf: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, file offset, file size) of each program header of a 64-bit little-endian ELF."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        yield p_type, offset, filesz


def elf_notes(elf: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(name, type, descriptor) of each note in a 64-bit little-endian ELF's PT_NOTE segments."""
    for p_type, offset, filesz in _segments(elf):
        if p_type != PT_NOTE:
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            pos += 12
            name = bytes(elf[pos : pos + namesz]).rstrip(b"\0").decode("ascii", "replace")
            pos += _align4(namesz)
            desc = bytes(elf[pos : pos + descsz])
            pos += _align4(descsz)
            yield name, note_type, desc


def has_pvh_entry(elf: bytes) -> bool:
    """Whether the kernel carries the Xen PHYS32_ENTRY note that QEMU's PVH boot looks for."""
    try:
        return any(
            name == "Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY
            for name, note_type, _desc in elf_notes(elf)
        )
    except (ValueError, struct.error):
        return False


def _align4(n: int) -> int:
    return (n + 3) & ~3


# --- initramfs --------------------------------------------------------------------------------


class NewcWriter:
    """Writes the SVR4 "newc" cpio archive that the kernel unpacks as its initramfs.

    Debian does not install cpio by default, and owning the few lines of the format gives
    byte-identical archives for identical inputs (every timestamp and owner is zero). Parent
    directories are added on demand, as the kernel needs them before their entries.
    """

    MAGIC = b"070701"

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self._dirs: set[str] = set()

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        if path in self._dirs:
            return
        self._parents(path)
        self._dirs.add(path)
        self._entry(path, 0o040000 | mode, nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self._entry(path, 0o100000 | mode, data=data)

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = path.strip("/")
        self._parents(path)
        self._entry(path, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> None:
        self._entry("TRAILER!!!", 0, ino=0)

    def _parents(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        if parent:
            self.add_dir(parent)

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
        ino: int | None = None,
    ) -> None:
        if ino is None:
            self._ino += 1
            ino = self._ino
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, *rdev, len(encoded), 0)
        header = self.MAGIC + b"".join(b"%08X" % f for f in fields) + encoded
        self._out.write(header + b"\0" * (_align4(len(header)) - len(header)))
        self._out.write(data)
        self._out.write(b"\0" * (_align4(len(data)) - len(data)))


def write_initramfs(path: Path, module_tree: Path) -> None:
    """busybox, the kernel modules in load order, and the guest's scripts, as gzip'd newc."""
    builtin = set()
    with contextlib.suppress(FileNotFoundError):
        builtin = set((module_tree / "modules.builtin").read_text().split())
    with open(path, "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", compresslevel=6, mtime=0
    ) as gz:
        cpio = NewcWriter(gz)
        for directory in EMPTY_DIRS:
            cpio.add_dir(directory)
        # Lets the kernel give /init a console before devtmpfs is mounted.
        cpio.add_char_device("dev/console", 5, 1)
        cpio.add_file("bin/busybox", _static_busybox(), 0o755)
        order = []
        for module in MODULES:
            data = _module(module_tree, module, builtin)
            if data is not None:
                name = module.rpartition("/")[2] + ".ko"
                cpio.add_file(f"lib/modules/{name}", data)
                order.append(name)
        cpio.add_file("lib/modules/ORDER", "".join(f"{m}\n" for m in order).encode())
        for name, (target, mode) in GUEST_FILES.items():
            cpio.add_file(target, _guest_file(name), mode)
        cpio.finish()


def _module(tree: Path, module: str, builtin: set[str]) -> bytes | None:
    """A module's bytes (decompressed), or None when this kernel has it built in."""
    plain = tree / "kernel" / f"{module}.ko"
    if plain.is_file():
        return plain.read_bytes()
    packed = plain.with_name(plain.name + ".xz")
    if packed.is_file():
        return lzma.decompress(packed.read_bytes())
    if f"kernel/{module}.ko" in builtin:
        return None
    raise BuildError(f"the kernel in {tree} has no module {module}")


# --- serial console ----------------------------------------------------------------------------


def parse_fields(text: str) -> dict[str, str]:
    """key=value words of a LAB-READY or status line; values never contain spaces."""
    fields = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key:
            fields[key] = value
    return fields


def wait_for_ready(
    console_log: Path,
    timeout: float,
    *,
    offset: int = 0,
    alive: Callable[[], bool] | None = None,
) -> dict[str, str]:
    """Tail a guest's serial log until its LAB-READY line; return that line's fields.

    ``offset`` skips what earlier boots wrote to a log that is appended to (libvirt's
    ``append='on'``). ``alive`` lets a caller whose guest died stop waiting at once.
    """
    path = Path(console_log)
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        with contextlib.suppress(FileNotFoundError):
            with open(path, "rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        complete = text[: text.rfind("\n") + 1]
        for line in complete.splitlines():
            if READY_MARKER in line:
                return parse_fields(line.split(READY_MARKER, 1)[1])
        if alive is not None and not alive():
            raise RuntimeError(f"the guest stopped before {READY_MARKER}:\n{_tail(text)}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no {READY_MARKER} in {path} after {timeout:g} s:\n{_tail(text)}")
        time.sleep(0.1)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.replace("\r", "").splitlines()[-lines:]) or "(the log is empty)"
