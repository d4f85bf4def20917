"""Processes the lab starts, remembered so that only they are ever stopped.

A PID alone is not an identity: after a reboot or a long run the number can belong to someone
else. The kernel's start time (field 22 of /proc/PID/stat) pins it to one process, so a record
taken by `lab up` can be trusted by a `lab down` run much later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and why."""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return cls(pid, stat[1]) if stat else None

    @classmethod
    def from_json(cls, data: dict | None) -> Proc | None:
        return cls(int(data["pid"]), int(data["start"])) if data else None

    def to_json(self) -> dict:
        return {"pid": self.pid, "start": self.start}

    def alive(self) -> bool:
        """A zombie counts as dead: its parent may be slow to reap it, but it does nothing."""
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.start and stat[0] not in "ZX"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive():
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.alive():
            raise LabError(f"process {self.pid} survived SIGKILL")


def spawn(argv: list[str], log: Path) -> Proc:
    """Start a daemon in a session of its own, so it outlives the command that started it and
    a Ctrl-C in that command's terminal does not reach it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True)
        except FileNotFoundError as e:
            raise LabError(f"{argv[0]} is not installed") from e
    proc = Proc.of(child.pid)
    if proc is None:
        raise LabError(f"{' '.join(argv)} exited at once; see {log}")
    return proc


def end_child(child: subprocess.Popen, timeout: float = 10.0) -> None:
    """A child of this process: SIGTERM, SIGKILL after `timeout` seconds, and reaped either way."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def run(argv: list[str], input: str | None = None) -> str:
    """A short command whose failure is an error worth its own words."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]} is not installed") from e
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout
