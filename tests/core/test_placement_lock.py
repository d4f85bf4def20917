"""Placement is serialised in the database, not only inside one process, so that nothing on the
same database (today one running control plane holds it, see test_lease; replicas on PostgreSQL
are the plan) can book the free space another just took."""

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from vpool.model.errors import NoCapacity
from vpool.services import provision
from vpool.services.controlplane import ControlPlane
from vpool.store.db import Store
from vpool.store.tables import Setting

from .conftest import Api, make_settings


def test_a_second_store_waits_for_the_first_placement_and_sees_its_booking(database_url):
    first, second = Store(database_url), Store(database_url)
    holding, placed, seen = threading.Event(), threading.Event(), []

    def other_replica():
        holding.wait()
        with second.session() as s, second.placement_lock(s):
            placed.set()
            seen.append(s.scalar(select(Setting.value).where(Setting.key == "booked-by")))

    waiter = threading.Thread(target=other_replica)
    waiter.start()
    try:
        with first.session() as s, first.placement_lock(s):
            holding.set()
            # The other replica must still be waiting; a lock that only queued this process's
            # threads would have let it in at once.
            assert not placed.wait(1.0)
            s.add(Setting(key="booked-by", value="first"))
            s.commit()
        assert placed.wait(30)
        waiter.join(30)
        assert seen == ["first"]  # it decided on the pool as the first replica left it
    finally:
        holding.set()
        waiter.join(30)
        first.close()
        second.close()


def test_two_control_planes_booking_at_once_never_overfill_a_host(database_url, tmp_path):
    a, b = (make_settings(tmp_path / name, database_url=database_url) for name in ("a", "b"))
    planes = [ControlPlane(a)]
    b.token_file.parent.mkdir(parents=True)
    b.token_file.write_text(a.token_file.read_text())  # replicas share the admin secret
    planes.append(ControlPlane(b))
    planes[0].start()
    try:
        # 4,608 MiB less the pool's 512 MiB reservation: room for exactly four 1 GiB VMs.
        host = Api(planes[0]).add_sim_host(tmp_path, "shared1", cpus=64, memory_mib=4608)
        assert host["capacity"]["memory_mib"]["free"] == 4096

        def book(i: int) -> bool:
            try:
                provision.book(planes[i % 2], f"race{i}", 1, 1024, 1, None, None)
                return True
            except NoCapacity:
                return False

        with ThreadPoolExecutor(12) as pool:
            booked = sum(pool.map(book, range(24)))
        assert booked == 4
        assert Api(planes[0]).get("/hosts/shared1").json()["capacity"]["memory_mib"]["free"] == 0
    finally:
        planes[0].stop()
        planes[1].store.close()
