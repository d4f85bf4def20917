"""One control plane per database, held by a lease.

A control plane keeps part of its state in its own process: the tasks its workers run, their
cancel flags, the VMs it is still making, the migrations it drives. At start it takes whatever
the database says is running for what a crash left behind: it fails those tasks, deletes those
half-made VMs and ends those bookings. A second control plane on the same database would do
that to the first one's live work. So a control plane takes the database's lease before it
starts and renews it while it runs; a second one is refused, with who holds it, until the
holder stops, dies on this machine, or stops renewing for STALE_S (a crash elsewhere). A
standby waits for that moment instead and then starts, as vCenter HA's passive node does:
what the first one left running is failed or finished by the same recovery as after a crash.
"""

import os
import secrets
import socket
import threading
import time
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from vpool.lab.procs import Proc
from vpool.model.errors import Conflict
from vpool.store.db import Store
from vpool.store.tables import ControlPlaneLease, utcnow

RENEW_S = 5.0
STALE_S = 30.0
ROW = 1


class Lease:
    def __init__(self, store: Store):
        self.store = store
        self.token: str | None = None
        self._stop = threading.Event()
        # What to do once the lease is lost: two control planes must not both go on driving the
        # hosts, so `vpool serve` stops itself (fencing); in-process users are only warned.
        self.on_lost = lambda why: print(f"vpool: WARNING: {why}; stop this one", flush=True)

    def acquire(self) -> str | None:
        """Takes the lease, or raises Conflict naming its holder; says whom it took it from,
        when it was left behind. Holding it already is fine."""
        if self.token is not None:
            return None
        me = Proc.of(os.getpid())
        token = secrets.token_hex(16)
        mine = dict(token=token, hostname=socket.gethostname(), pid=me.pid, pid_start=me.start)
        with self.store.session() as s:
            held = s.get(ControlPlaneLease, ROW)
            if held is None:
                s.add(ControlPlaneLease(id=ROW, **mine))
                try:
                    s.commit()
                except IntegrityError:  # another one took it between our read and write
                    s.rollback()
                    raise Conflict(_refusal(s.get(ControlPlaneLease, ROW))) from None
                taken_from = None
            else:
                taken_from = _left_behind(held)
                if taken_from is None:
                    raise Conflict(_refusal(held))
                now = utcnow()
                # Compare-and-set on the old holder's token: of two that start at once, one wins.
                won = s.execute(update(ControlPlaneLease).where(
                    ControlPlaneLease.id == ROW, ControlPlaneLease.token == held.token).values(
                    acquired_at=now, renewed_at=now, **mine)).rowcount
                s.commit()
                if not won:
                    raise Conflict(_refusal(s.get(ControlPlaneLease, ROW, populate_existing=True)))
        self.token = token
        self._stop.clear()
        threading.Thread(target=self._renew_loop, name="lease", daemon=True).start()
        return taken_from

    def stand_by(self, say, poll_s: float = 2.0) -> str:
        """Waits for the lease and takes it: a standby control plane (`vpool serve --standby`)
        that takes over when the one holding the database stops, dies on this machine, or
        stops renewing for STALE_S. Says once whom it waits for; returns how it took over."""
        waiting = False
        while True:
            try:
                taken_from = self.acquire()
            except Conflict:
                if not waiting:
                    with self.store.session() as s:
                        held = s.get(ControlPlaneLease, ROW)
                    if held is not None:
                        say(f"standing by: the control plane holding this database ({_holder(held)}) "
                            f"is taken over when it stops, at once if it dies on its machine, "
                            f"or {STALE_S:.0f} s after its last renewal")
                        waiting = True
                time.sleep(poll_s)
                continue
            if taken_from:
                return taken_from
            return "took over the database from a control plane that stopped" if waiting else \
                "the database had no control plane"

    def renew(self) -> bool:
        """False when the lease is no longer ours (someone took it while we did not renew)."""
        with self.store.session() as s:
            kept = s.execute(update(ControlPlaneLease).where(
                ControlPlaneLease.id == ROW, ControlPlaneLease.token == self.token).values(
                renewed_at=utcnow())).rowcount
            s.commit()
        return bool(kept)

    def release(self) -> None:
        if self.token is None:
            return
        self._stop.set()
        with self.store.session() as s:
            s.execute(delete(ControlPlaneLease).where(ControlPlaneLease.token == self.token))
            s.commit()
        self.token = None

    def _renew_loop(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(RENEW_S):
            try:
                if self.renew():
                    renewed = time.monotonic()
                    continue
                why = ("another control plane took this database's lease while this one was not renewing it "
                       "(frozen, or cut off from the database)")
            except Exception as e:
                if time.monotonic() - renewed <= STALE_S:  # the database away for a moment: try again
                    print(f"vpool: could not renew the control-plane lease: {e}", flush=True)
                    continue
                why = (f"this control plane could not renew its lease for {STALE_S:.0f} s ({e}), so another "
                       f"may have taken the database over")
            self.on_lost(why)
            return


def _holder(row: ControlPlaneLease) -> str:
    return f"pid {row.pid} on {row.hostname}"


def _silent_s(row: ControlPlaneLease) -> float:
    return (utcnow() - row.renewed_at).total_seconds()


def _left_behind(row: ControlPlaneLease) -> str | None:
    """Why the lease can be taken over, or None while its holder may still run."""
    if row.hostname == socket.gethostname() and not Proc(row.pid, row.pid_start).alive():
        return f"took over the database from a control plane that is gone ({_holder(row)})"
    silent = _silent_s(row)
    if silent > STALE_S:
        return (f"took over the database from a control plane that stopped renewing its lease "
                f"{timedelta(seconds=round(silent))} ago ({_holder(row)})")
    return None


def _refusal(row: ControlPlaneLease | None) -> str:
    if row is None:
        return "another control plane was starting on this database at the same moment; try again"
    silent = max(0.0, _silent_s(row))
    return (f"another vpool control plane ({_holder(row)}, last seen {silent:.0f} s ago) is running on this "
            f"database; vpool runs one control plane per database: stop that one first, or give this one its "
            f"own (VPOOL_DATA_DIR or VPOOL_DATABASE_URL). A holder that dies is taken over at once on its own "
            f"machine, and {STALE_S:.0f} s after its last renewal from elsewhere")
