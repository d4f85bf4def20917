"""One control plane per database: a second is refused with who holds it and changes nothing;
a holder that stopped, died on this machine or went silent elsewhere is taken over."""

import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from vpool.model.errors import Conflict
from vpool.services.controlplane import ControlPlane
from vpool.services import lease as lease_module
from vpool.services.lease import STALE_S, Lease
from vpool.store.db import Store
from vpool.store.tables import ControlPlaneLease, Task, utcnow

from .conftest import eventually, make_settings


def _planes(tmp_path, database_url):
    return [ControlPlane(make_settings(tmp_path / name, database_url=database_url)) for name in ("a", "b")]


def test_a_second_control_plane_is_refused_and_changes_nothing(tmp_path, database_url):
    first, second = _planes(tmp_path, database_url)
    first.start()
    try:
        with first.store.session() as s:
            s.add(Task(kind="vm.create", target="in-flight", state="running", params={}))
            s.commit()
        with pytest.raises(Conflict) as refused:
            second.start()
        assert "another vpool control plane (pid" in refused.value.detail
        assert "one control plane per database" in refused.value.detail
        with first.store.session() as s:  # the first one's live task was not taken for a crash's
            assert s.scalar(select(Task.state).where(Task.target == "in-flight")) == "running"
    finally:
        first.stop()
    second.start()  # the holder stopped: the lease is free
    try:
        with second.store.session() as s:
            assert s.scalar(select(Task.state).where(Task.target == "in-flight")) == "failed"
            assert s.scalar(select(ControlPlaneLease.token)) == second.lease.token
    finally:
        second.stop()
        first.store.close()


def _stored(store: Store, **values) -> None:
    with store.session() as s:
        s.execute(update(ControlPlaneLease).values(**values))
        s.commit()


def test_a_holder_gone_from_this_machine_is_taken_over_at_once(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    held = Lease(store)
    held.acquire()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _stored(store, pid=int(dead.stdout))  # as if its process had died without releasing
    said = Lease(store).acquire()
    assert said and "a control plane that is gone" in said and f"pid {int(dead.stdout)}" in said
    assert not held.renew()  # the old holder learns it lost the lease


def test_a_holder_elsewhere_is_waited_for_until_it_goes_silent(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    Lease(store).acquire()
    _stored(store, hostname="other-machine", renewed_at=utcnow() - timedelta(seconds=STALE_S / 2))
    with pytest.raises(Conflict, match="pid .* on other-machine"):
        Lease(store).acquire()
    _stored(store, renewed_at=utcnow() - timedelta(seconds=STALE_S + 5))
    said = Lease(store).acquire()
    assert said and "stopped renewing its lease 0:00:35 ago" in said and "on other-machine" in said


def test_renewing_keeps_a_live_holder(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    lease = Lease(store)
    lease.acquire()
    _stored(store, hostname="other-machine", renewed_at=utcnow() - timedelta(seconds=STALE_S + 5))
    assert lease.renew()
    with pytest.raises(Conflict):
        Lease(store).acquire()
    lease.release()
    assert Lease(store).acquire() is None  # released: taken without a word


def test_a_standby_waits_for_the_holder_and_takes_over_when_it_stops(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    held = Lease(store)
    held.acquire()
    said, took = [], []
    standby = Lease(store)
    waiter = threading.Thread(target=lambda: took.append(standby.stand_by(said.append, poll_s=0.05)))
    waiter.start()
    assert eventually(lambda: said, timeout=10)
    time.sleep(0.3)  # several more tries, all refused: it said so once and still waits
    assert waiter.is_alive() and len(said) == 1
    assert said[0].startswith("standing by: the control plane holding this database (pid ")
    held.release()
    waiter.join(10)
    assert took == ["took over the database from a control plane that stopped"]
    with store.session() as s:
        assert s.scalar(select(ControlPlaneLease.token)) == standby.token
    standby.release()
    assert Lease(store).stand_by(said.append) == "the database had no control plane"


def _renewing(tmp_path, monkeypatch, **timing) -> tuple[Store, Lease, list]:
    """A lease renewed every 50 ms (and other timings as given), and what it is told on losing it."""
    for name, value in {"RENEW_S": 0.05, **timing}.items():
        monkeypatch.setattr(lease_module, name, value)
    store = Store(f"sqlite:///{tmp_path / 'l.db'}")
    lost = []
    held = Lease(store)
    held.on_lost = lost.append
    held.acquire()
    return store, held, lost


def test_a_holder_that_lost_the_lease_is_told_so(tmp_path, monkeypatch):
    store, held, lost = _renewing(tmp_path, monkeypatch)
    time.sleep(0.3)
    assert not lost  # renewing all along
    _stored(store, token="a-standby-took-it")
    assert eventually(lambda: lost, timeout=10)
    assert lost == ["another control plane took this database's lease while this one was not renewing it "
                    "(frozen, or cut off from the database)"]
    held._stop.set()


def test_a_holder_cut_off_from_the_database_is_told_once_a_standby_may_have_taken_over(tmp_path, monkeypatch):
    _, held, lost = _renewing(tmp_path, monkeypatch, STALE_S=0.5)

    def unreachable():
        raise OSError("connection refused")
    monkeypatch.setattr(held, "renew", unreachable)
    time.sleep(0.2)
    assert not lost  # a database away for a moment is waited for
    assert eventually(lambda: lost, timeout=10)
    assert "could not renew its lease" in lost[0] and "(connection refused)" in lost[0]
    held._stop.set()
