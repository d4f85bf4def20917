"""One data-protection operation per VM at a time: a backup must not race a revert of the same disk.

A claim is taken when the request is accepted (so the second caller hears 409 at once) and
released when the task ends.
"""

import threading
from collections.abc import Callable

from vpool.model.errors import Conflict


class Busy:
    def __init__(self):
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, vm: str, what: str) -> Callable[[], None]:
        with self._lock:
            if vm in self._held:
                raise Conflict(f"VM {vm} is busy: {self._held[vm]} is in progress; try again when it ends")
            self._held[vm] = what

        def release() -> None:
            with self._lock:
                self._held.pop(vm, None)

        return release

    def run(self, cp, vm: str, what: str, kind: str, params: dict, body, requested_by: str,
            on_failure=None, release=None):
        """Submits body as a task holding the VM's claim for as long as it runs; `release` is a
        claim the caller took already, to book something under it first."""
        release = release or self.claim(vm, what)

        def held(ctx):
            try:
                return body(ctx)
            finally:
                release()

        try:
            return cp.runner.submit(kind, vm, params, held, on_failure=on_failure, requested_by=requested_by)
        except BaseException:
            release()
            raise
