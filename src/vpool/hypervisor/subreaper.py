"""Run a daemon as a child subreaper so the QEMU processes it orphans are reaped at once.

libvirt double-forks QEMU; when QEMU exits it is a zombie of PID 1 until PID 1 reaps it, and
libvirt waits for the PID to vanish. Where PID 1 is slow (containers, sandboxes: ~1.7 s here),
every VM stop pays that delay. Becoming the subreaper moves the reaping here.

usage: python -m vpool.hypervisor.subreaper CMD [ARGS...]
"""

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 1
    child = os.fork()
    if child == 0:
        os.execvp(argv[0], argv)

    def forward(signum, _frame):
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
        if pid == child:
            code = os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
