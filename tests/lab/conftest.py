"""Boots the tiny image under a bare QEMU (TCG) for the lab tests.

No libvirt here on purpose: these tests are about the image, so they run wherever QEMU runs.
Guests get no network device at all (``-nic none``): the lab's rule is that a guest reaches
nothing outside networks the lab created, and user-mode networking would reach the host's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vpool.lab.tiny_image import TinyImage, build_tiny

QEMU = "qemu-system-x86_64"
READY_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def image() -> TinyImage:
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        pytest.skip("QEMU is not installed")
    return build_tiny()


@pytest.fixture
def overlay():
    return make_overlay


@pytest.fixture
def boot():
    """``boot(image, workdir, hostname, disk, shell=False)``: a context manager for a guest."""
    return boot_guest


class SerialShell:
    """The root shell the guest leaves on ttyS0, reached through QEMU's serial socket.

    Output is read continuously: QEMU stops the guest's UART while a connected socket client
    leaves its output unread, and the guest would then hang mid-line.
    """

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.connect(str(path))
        self._output = b""
        self._lock = threading.Lock()
        self._count = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(65536):
                with self._lock:
                    self._output += chunk

    def run(self, command: str, timeout: float = 60.0) -> str:
        """Run one command line and return what it printed.

        The markers around the output are computed by the guest's shell, so the echo of the
        typed line (which the shell may also wrap) never matches them.
        """
        self._count += 1
        begin, end = f"@@{self._count}B@@\n".encode(), f"\n@@{self._count}E@@".encode()
        with self._lock:
            start = len(self._output)
        self._sock.sendall(
            f"echo @@$(({self._count}))B@@; {command}; echo; echo @@$(({self._count}))E@@\n".encode()
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                out = self._output[start:].replace(b"\r", b"")
            if begin in out and end in out:
                body = out[out.index(begin) + len(begin) : out.index(end)]
                return body.decode(errors="replace").removesuffix("\n")
            time.sleep(0.05)
        raise TimeoutError(f"{command!r} did not finish in {timeout:g} s")

    def close(self) -> None:
        self._sock.close()


class Qmp:
    """Just enough of QEMU's QMP to press the power button."""

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rw")
        self._file.readline()
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: object) -> object:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self._file.write(json.dumps(request) + "\n")
        self._file.flush()
        while reply := json.loads(self._file.readline()):
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            if "return" in reply:
                return reply["return"]
        raise ConnectionError("QMP closed")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


@dataclass
class Guest:
    process: subprocess.Popen
    console_log: Path
    qmp: Qmp
    shell: SerialShell | None = None

    def alive(self) -> bool:
        return self.process.poll() is None


def make_overlay(image: TinyImage, path: Path) -> Path:
    """A VM disk as vpool makes them: a qcow2 overlay on the image's base disk."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.base_disk),
         str(path)],
        check=True,
    )
    return path


@contextlib.contextmanager
def boot_guest(
    image: TinyImage, workdir: Path, hostname: str, disk: Path, *, shell: bool = False
) -> Iterator[Guest]:
    """Run the guest under TCG until the block ends; QEMU is killed whatever happens."""
    log = workdir / f"{hostname}.console.log"
    qmp_path = workdir / f"{hostname}.qmp"
    log.unlink(missing_ok=True)
    if shell:
        serial_path = workdir / f"{hostname}.serial"
        serial = [
            "-chardev", f"socket,id=serial0,path={serial_path},server=on,wait=off,logfile={log}",
            "-serial", "chardev:serial0",
        ]
    else:
        serial = ["-serial", f"file:{log}"]
    argv = [
        QEMU, "-machine", "pc", "-accel", "tcg", "-m", "128",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", image.cmdline(hostname),
        "-nographic", *serial, "-nic", "none",
        "-drive", f"file={disk},if=virtio,format=qcow2",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
    ]  # fmt: skip
    stderr = workdir / f"{hostname}.qemu.stderr"
    with open(stderr, "wb") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    guest = None
    try:
        qmp = _connect(lambda: Qmp(qmp_path), process, stderr)
        guest = Guest(process, log, qmp)
        if shell:
            guest.shell = _connect(lambda: SerialShell(serial_path), process, stderr)
        yield guest
    finally:
        process.kill()
        process.wait()
        if guest is not None:
            guest.qmp.close()
            if guest.shell is not None:
                guest.shell.close()


def _connect(connect, process: subprocess.Popen, stderr: Path):
    """QEMU creates its sockets a moment after it starts; a dead QEMU says why on stderr."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if process.poll() is not None:
                raise RuntimeError(f"QEMU exited: {stderr.read_text()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
