from __future__ import annotations

import gzip
import io
import lzma
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from vpool.lab import tiny_image
from vpool.lab.tiny_image import (
    NewcWriter,
    TinyImage,
    default_cache_dir,
    elf_notes,
    extract_vmlinux,
    has_pvh_entry,
    parse_fields,
    validate_hostname,
    wait_for_ready,
    write_initramfs,
)

GUEST_DIR = Path(tiny_image.__file__).parent / "guest"
needs_busybox = pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")


# --- newc cpio ------------------------------------------------------------------------------


def read_newc(archive: bytes) -> list[dict]:
    """An independent reader of the format, to check what the writer wrote field by field."""
    entries, pos = [], 0
    while True:
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, _uid, _gid, nlink, _mtime, size, _maj, _min, rmaj, rmin, namesize, _chk = fields
        name = archive[pos + 110 : pos + 110 + namesize - 1].decode()
        data_at = (pos + 110 + namesize + 3) & ~3
        pos = (data_at + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return entries
        entries.append(
            {"name": name, "ino": ino, "mode": mode, "nlink": nlink, "rdev": (rmaj, rmin),
             "data": archive[data_at : data_at + size]}
        )  # fmt: skip


def newc(build) -> bytes:
    out = io.BytesIO()
    writer = NewcWriter(out)
    build(writer)
    writer.finish()
    return out.getvalue()


def sample_archive(cpio: NewcWriter) -> None:
    cpio.add_dir("proc")
    cpio.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    cpio.add_file("usr/share/udhcpc/default.script", b"x" * 5, 0o700)
    cpio.add_file("etc/empty", b"")
    cpio.add_file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n")


def test_newc_adds_parents_before_children_and_pads_every_entry():
    entries = read_newc(newc(sample_archive))
    names = [e["name"] for e in entries]
    assert names == [
        "proc", "init", "usr", "usr/share", "usr/share/udhcpc",
        "usr/share/udhcpc/default.script", "etc", "etc/empty", "etc/passwd",
    ]  # fmt: skip
    by_name = {e["name"]: e for e in entries}
    assert by_name["init"]["mode"] == 0o100755
    assert by_name["usr/share/udhcpc/default.script"]["data"] == b"xxxxx"
    assert by_name["usr"]["mode"] == 0o040755 and by_name["usr"]["nlink"] == 2
    assert len({e["ino"] for e in entries}) == len(entries)


def test_newc_device_node():
    (console,) = read_newc(newc(lambda c: c.add_char_device("console", 5, 1)))
    assert console["mode"] == 0o020600 and console["rdev"] == (5, 1)


def test_newc_is_byte_identical_for_identical_input():
    assert newc(sample_archive) == newc(sample_archive)


@needs_busybox
def test_newc_round_trips_through_busybox_cpio(tmp_path):
    archive = newc(sample_archive)
    listed = subprocess.run(
        ["busybox", "cpio", "-t"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listed.split() == [e["name"] for e in read_newc(archive)]
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "usr/share/udhcpc/default.script").read_bytes() == b"xxxxx"
    assert (tmp_path / "etc/empty").read_bytes() == b""
    assert (tmp_path / "proc").is_dir()


def test_initramfs_holds_modules_in_load_order_and_the_guest_scripts(tmp_path, monkeypatch):
    tree = tmp_path / "6.1.0-test"
    for module in tiny_image.MODULES[:-1]:
        path = tree / "kernel" / f"{module}.ko.xz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(f"module {module}".encode()))
    (tree / "modules.builtin").write_text(f"kernel/{tiny_image.MODULES[-1]}.ko\n")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(elf64())
    monkeypatch.setattr(tiny_image, "BUSYBOX", busybox)

    write_initramfs(tmp_path / "initrd.img", tree)

    files = {e["name"]: e for e in read_newc(gzip.decompress((tmp_path / "initrd.img").read_bytes()))}
    order = files["lib/modules/ORDER"]["data"].decode().split()
    assert order == [m.rpartition("/")[2] + ".ko" for m in tiny_image.MODULES[:-1]]
    assert files["lib/modules/ext4.ko"]["data"] == b"module fs/ext4/ext4"
    assert files["bin/busybox"]["data"] == elf64()
    assert files["init"]["data"] == (GUEST_DIR / "init").read_bytes()
    assert files["init"]["mode"] == 0o100755
    assert files["www/cgi-bin/dirty"]["mode"] == 0o100755
    assert files["dev/console"]["rdev"] == (5, 1)
    for directory in ("proc", "sys", "dev", "run", "data", "tmp"):
        assert files[directory]["mode"] & 0o170000 == 0o040000


def test_initramfs_refuses_a_dynamic_busybox(tmp_path, monkeypatch):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(elf64(interp=True))
    monkeypatch.setattr(tiny_image, "BUSYBOX", busybox)
    with pytest.raises(tiny_image.BuildError, match="busybox-static"):
        tiny_image.recipe_digest()


def test_initramfs_refuses_a_kernel_without_a_needed_module(tmp_path):
    (tmp_path / "kernel").mkdir()
    with pytest.raises(tiny_image.BuildError, match="virtio_ring"):
        write_initramfs(tmp_path / "initrd.img", tmp_path)


# --- ELF notes and the PVH kernel -----------------------------------------------------------------


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), note_type) + pad(name) + pad(desc)


def elf64(*notes: bytes, interp: bool = False) -> bytes:
    """An ELF64 header, a PT_LOAD (or PT_INTERP) header that must be skipped, then a PT_NOTE."""
    body = b"".join(notes)
    phoff, phentsize, phnum = 64, 56, 2
    notes_at = phoff + phentsize * phnum
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, phoff, 0, 0, 64, phentsize, phnum, 64, 0, 0
    )
    load = struct.pack("<IIQQQQQQ", 3 if interp else 1, 5, 0, 0, 0, notes_at, notes_at, 0x1000)
    pt_note = struct.pack("<IIQQQQQQ", 4, 4, notes_at, 0, 0, len(body), len(body), 4)
    return header + load + pt_note + body


def test_elf_notes_lists_every_note():
    elf = elf64(note(b"GNU\0", 3, b"\x01" * 20), note(b"Xen\0", 0x12, b"\x00\x00\x00\x01"))
    assert list(elf_notes(elf)) == [("GNU", 3, b"\x01" * 20), ("Xen", 0x12, b"\x00\x00\x00\x01")]
    assert has_pvh_entry(elf)


def test_pvh_needs_the_xen_phys32_entry_note():
    assert not has_pvh_entry(elf64(note(b"Xen\0", 0x11, b"1234"), note(b"Linux\0", 0x12, b"1")))
    assert not has_pvh_entry(b"MZ not an ELF at all")


def test_elf_notes_rejects_what_is_not_elf64_little_endian():
    with pytest.raises(ValueError):
        list(elf_notes(b"\x7fELF" + bytes([1, 1]) + b"\0" * 58))


def test_extract_vmlinux_skips_false_magic_and_ignores_the_trailer():
    elf = elf64(note(b"Xen\0", 0x12, b"abcd"))
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    bzimage = b"MZ setup" + tiny_image.XZ_MAGIC + b"not xz" + payload + b"\x10\x20trailer"
    assert extract_vmlinux(bzimage) == elf


def test_extract_vmlinux_without_an_elf_payload():
    assert extract_vmlinux(b"MZ" + lzma.compress(b"just data", format=lzma.FORMAT_XZ)) is None
    assert extract_vmlinux(b"MZ no payload") is None


# --- apt: finding and downloading the kernel package -----------------------------------------------

APT_SHOW = """Package: linux-image-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
"""


class FakeApt:
    """Stands in for apt-cache/apt-get: each command fails while its budget of failures lasts."""

    def __init__(self, fail_show: int = 0, fail_download: int = 0, lists: Path | None = None):
        self.failures = {"apt-cache": fail_show, "download": fail_download}
        self.calls: list[str] = []
        self.lists = lists

    def __call__(self, argv, cwd=None):
        command = "download" if argv[1] == "download" else argv[0]
        self.calls.append(" ".join(argv))
        if argv[1] == "update":
            (self.lists / "Packages").write_text("refreshed")
            return ""
        if self.failures.get(command, 0):
            self.failures[command] -= 1
            raise tiny_image.BuildError(f"{command} failed")
        if command == "download":
            (cwd / "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb").write_bytes(b"deb")
        return APT_SHOW


@pytest.fixture
def apt(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("old")
    monkeypatch.setattr(tiny_image._Apt, "LISTS", lists)
    monkeypatch.setattr(tiny_image._Apt, "PREFERENCES", ())

    def make(**failures):
        fake = FakeApt(lists=lists, **failures)
        monkeypatch.setattr(tiny_image, "_run", fake)
        return fake, tiny_image._Apt(tmp_path)

    return make


def test_apt_answer_is_remembered_until_the_lists_change(apt, tmp_path):
    fake, first = apt()
    assert first.resolve() == ("linux-image-6.1.0-56-amd64", "6.1.192-2")
    fake, second = apt()
    assert second.resolve() == ("linux-image-6.1.0-56-amd64", "6.1.192-2")
    assert fake.calls == []
    (tmp_path / "lists" / "Packages").write_text("after an apt-get update")
    fake, third = apt()
    third.resolve()
    assert fake.calls == ["apt-cache show --no-all-versions linux-image-amd64"]


def test_apt_without_lists_updates_once(apt):
    fake, resolver = apt(fail_show=1)
    assert resolver.resolve()[1] == "6.1.192-2"
    assert [c for c in fake.calls if "update" in c] == ["apt-get update -qq"]


def test_apt_download_of_a_superseded_version_updates_once(apt, tmp_path):
    fake, resolver = apt(fail_download=1)
    (tmp_path / "dl").mkdir()
    deb, version = resolver.download(tmp_path / "dl")
    assert deb.name.startswith("linux-image-6.1.0-56-amd64_") and version == "6.1.192-2"
    assert sum("update" in c for c in fake.calls) == 1


def test_apt_download_gives_up_after_one_update(apt, tmp_path):
    fake, resolver = apt(fail_download=2)
    with pytest.raises(tiny_image.BuildError, match="download failed"):
        resolver.download(tmp_path)
    assert sum("update" in c for c in fake.calls) == 1


# --- names, cmdline, cache location -------------------------------------------------------------


@pytest.mark.parametrize("name", ["web1", "a", "A-b_c.d", "9" * 63])
def test_valid_hostnames_reach_the_cmdline(name):
    image = TinyImage(Path("k"), Path("i"), "6.1", Path("d"))
    assert image.cmdline(name) == f"console=ttyS0 quiet lab.host={name}"


@pytest.mark.parametrize(
    "name", ["a b", "x;reboot", "../x", "", "-x", ".x", "9" * 64, "a\nb", "a=b", "é"]
)
def test_invalid_hostnames_never_reach_the_cmdline(name):
    image = TinyImage(Path("k"), Path("i"), "6.1", Path("d"))
    with pytest.raises(ValueError):
        image.cmdline(name)
    with pytest.raises(ValueError):
        validate_hostname(name)


def test_cache_dir_follows_vpool_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("VPOOL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg/vpool/images/tiny"
    monkeypatch.setenv("VPOOL_CACHE_DIR", str(tmp_path / "vp"))
    assert default_cache_dir() == tmp_path / "vp/images/tiny"
    monkeypatch.delenv("VPOOL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home/.cache/vpool/images/tiny"


def test_recipe_digest_covers_the_guest_scripts(monkeypatch):
    before = tiny_image.recipe_digest()
    real = tiny_image._guest_file
    monkeypatch.setattr(
        tiny_image, "_guest_file", lambda n: real(n) + (b"# changed\n" if n == "init" else b"")
    )
    assert tiny_image.recipe_digest() != before


# --- the serial console --------------------------------------------------------------------------


def test_wait_for_ready_returns_the_fields_of_the_ready_line(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"SeaBIOS\r\n[ 0.1] boot\r\nLAB-READY host=web1 ip=10.0.0.5 boots=3\r\n# ")
    assert wait_for_ready(log, 5) == {"host": "web1", "ip": "10.0.0.5", "boots": "3"}


def test_wait_for_ready_skips_earlier_boots_and_half_written_lines(tmp_path):
    log = tmp_path / "console.log"
    first = b"LAB-READY host=web1 ip=10.0.0.5 boots=1\n"
    log.write_bytes(first + b"LAB-READY host=web1 ip=10.0.0.6 bo")
    with pytest.raises(TimeoutError, match="ip=10.0.0.6 bo$"):
        wait_for_ready(log, 0.3, offset=len(first))
    with log.open("ab") as f:
        f.write(b"ots=2\n")
    assert wait_for_ready(log, 5, offset=len(first))["boots"] == "2"


def test_wait_for_ready_stops_when_the_guest_is_gone(tmp_path):
    with pytest.raises(RuntimeError, match="empty"):
        wait_for_ready(tmp_path / "never-written.log", 60, alive=lambda: False)


def test_parse_fields_keeps_empty_values_and_ignores_words_without_equals():
    assert parse_fields("host=a ip= load=0.1,0.2,0.3 junk") == {
        "host": "a", "ip": "", "load": "0.1,0.2,0.3"
    }  # fmt: skip


# --- the dirty endpoint's argument parser, run on the host with busybox sh --------------------------


def dirty_args(query: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["busybox", "sh", str(GUEST_DIR / "dirty-args"), query], capture_output=True, text=True
    )


@needs_busybox
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "64 30"),
        ("MB=16&seconds=5", "16 5"),
        ("seconds=010&mb=08", "8 10"),
        ("MB=0&seconds=0", "1 0"),
        ("seconds=99999999999999", "64 3600"),
    ],
)
def test_dirty_args_accepts_and_clamps(query, expected):
    done = dirty_args(query)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


@needs_busybox
def test_dirty_args_never_exceeds_what_memory_allows():
    mb, _ = dirty_args("MB=999999999999").stdout.split()
    assert 1 <= int(mb) <= 1024


@needs_busybox
@pytest.mark.parametrize(
    "query", ["MB=1e3", "MB=-1", "MB=64;reboot", "MB=", "x=1", "MB=5&&seconds=3", "*", "MB=$(id)"]
)
def test_dirty_args_rejects(query):
    done = dirty_args(query)
    assert done.returncode == 1 and done.stdout == "" and done.stderr


# --- real guests under TCG -----------------------------------------------------------------------


@pytest.mark.guest
def test_a_second_build_reuses_the_cached_one(image):
    assert image.kernel.name == "vmlinux", "Debian's kernel has the PVH entry note"
    assert image.kernel_version.endswith("-amd64")
    assert tiny_image.build_tiny() == image


@pytest.mark.guest
def test_guest_boots_keeps_its_disk_and_powers_off_on_acpi(image, boot, overlay, tmp_path):
    disk = overlay(image, tmp_path / "web1.qcow2")
    with boot(image, tmp_path, "web1", disk) as guest:
        ready = wait_for_ready(guest.console_log, 90, alive=guest.alive)
        assert ready["host"] == "web1"
        assert ready["boots"] == "1", "a blank overlay is formatted on first boot"
        guest.qmp.execute("system_powerdown")
        assert guest.process.wait(timeout=90) == 0, "acpid powers the guest off"
    with boot(image, tmp_path, "web1", disk) as guest:
        assert wait_for_ready(guest.console_log, 90, alive=guest.alive)["boots"] == "2"


@pytest.mark.guest
def test_guest_services(image, boot, overlay, tmp_path):
    with boot(image, tmp_path, "svc-1", overlay(image, tmp_path / "d.qcow2"), shell=True) as guest:
        wait_for_ready(guest.console_log, 90, alive=guest.alive)
        sh = guest.shell

        def get(path: str) -> str:
            return sh.run(f"wget -q -O - 'http://127.0.0.1{path}' 2>&1").strip()

        assert get("/") == "svc-1"
        status = parse_fields(get("/cgi-bin/status"))
        assert status["host"] == "svc-1" and status["boots"] == "1"
        assert status["dirty_mb"] == "0"
        assert sh.run("nc 127.0.0.1 9999").strip().startswith("up ")
        assert "400" in get("/cgi-bin/burn?1e9")
        assert "400" in get("/cgi-bin/dirty?MB=64;reboot")

        assert get("/cgi-bin/dirty?MB=8&seconds=600") == "dirtying 8 MiB for 600 s on svc-1"
        passes = []
        deadline = time.monotonic() + 60
        while len(set(passes)) < 3 and time.monotonic() < deadline:
            status = parse_fields(get("/cgi-bin/status"))
            passes.append(int(status["dirty_passes"]))
        assert status["dirty_mb"] == "8"
        assert len(set(passes)) >= 3, f"the dirtier made no progress: {passes}"

        assert get("/cgi-bin/dirty?seconds=0") == "dirtier stopped on svc-1"
        assert parse_fields(get("/cgi-bin/status"))["dirty_mb"] == "0"
        assert sh.run("grep -c ' /run/dirty ' /proc/mounts").strip() == "0"
