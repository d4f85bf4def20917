"""Run a daemon as a child subreaper so the QEMU processes it orphans are reaped at once, and
start it again when it crashes.

libvirt double-forks QEMU; when QEMU exits it is a zombie of PID 1 until PID 1 reaps it, and
libvirt waits for the PID to vanish. Where PID 1 is slow (containers, sandboxes: ~1.7 s here),
every VM stop pays that delay. Becoming the subreaper moves the reaping here.

Where vpool starts libvirtd itself there is no init system to restart it, and libvirt 9.0's
daemon does crash now and then (a segfault while dropping a timed-out client). Like
libvirtd.service's Restart=on-failure, a crash (a core-dumping signal) starts it again, at most
BURST times in BURST_WINDOW_S seconds; the running guests are kept, as libvirtd reattaches
to them. A clean exit, an exit code or a deliberate SIGKILL is left alone: stopping the daemon,
a broken configuration and a test that kills a host must stay what they are.

usage: python -m vpool.hypervisor.subreaper CMD [ARGS...]
"""

import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
CRASHES = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE, signal.SIGSYS})
BURST, BURST_WINDOW_S = 5, 60.0


def crashed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASHES


def start(argv: list[str]) -> int:
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    return child


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 1
    child, restarts, stopping = start(argv), [], False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP  # libvirtd reloads on SIGHUP, ends on the others
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return code
        if pid != child:
            continue  # an orphan (a QEMU that exited) reaped
        code = os.waitstatus_to_exitcode(status)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < BURST_WINDOW_S]
        if crashed(status) and not stopping and len(restarts) < BURST:
            restarts.append(now)
            print(f"subreaper: {argv[0]} (pid {pid}) crashed ({signal.Signals(os.WTERMSIG(status)).name}); "
                  f"starting it again ({len(restarts)} of {BURST} allowed in {BURST_WINDOW_S:.0f} s)",
                  file=sys.stderr, flush=True)
            time.sleep(0.1)  # systemd's RestartSec default
            child = start(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
