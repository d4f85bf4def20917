"""One libvirt connection per host, kept alive: a host that stops answering is marked down
(keepalive or the close callback), and reconnected, then marked up, as soon as it answers."""

import threading
from collections.abc import Callable

from sqlalchemy import select, update

from vpool.hypervisor.libvirt_driver import LibvirtDriver, start_event_loop
from vpool.model.errors import Conflict, HypervisorError
from vpool.model.states import HostState
from vpool.store.db import Store
from vpool.store.tables import Host, utcnow


class Connections:
    def __init__(self, store: Store, on_event: Callable[[int, str], None],
                 on_connect: Callable[[int], None], reconnect_interval_s: float = 5.0):
        start_event_loop()
        self.store = store
        self.on_event = on_event  # (host_id, domain uuid): a domain changed state or devices
        self.on_connect = on_connect
        self.reconnect_interval_s = reconnect_interval_s
        self.drivers: dict[int, LibvirtDriver] = {}
        self._lock = threading.Lock()
        self._connecting: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def driver(self, host_id: int) -> LibvirtDriver:
        with self._lock:
            drv = self.drivers.get(host_id)
        if drv is None:
            with self.store.session() as s:
                host = s.get(Host, host_id)
                name = host.name if host else str(host_id)
            raise Conflict(f"host {name} is down: vpool has no connection to it right now")
        return drv

    def attach(self, host_id: int, driver: LibvirtDriver) -> None:
        """Adopt an open connection: watch it for closing and for domain events."""
        driver.on_close(lambda reason: self._lost(host_id, driver, f"connection closed (reason {reason})"))
        driver.on_domain_change(lambda uuid: self.on_event(host_id, uuid))
        with self._lock:
            old = self.drivers.pop(host_id, None)
            self.drivers[host_id] = driver
        if old is not None and old is not driver:
            old.close()
        self._mark(host_id, HostState.up, None)

    def detach(self, host_id: int) -> None:
        with self._lock:
            drv = self.drivers.pop(host_id, None)
        if drv:
            drv.close()

    def _lost(self, host_id: int, driver: LibvirtDriver, why: str) -> None:
        with self._lock:
            if self.drivers.get(host_id) is driver:
                del self.drivers[host_id]
            else:
                return
        self._mark(host_id, HostState.down, why)

    def _mark(self, host_id: int, state: HostState, error: str | None) -> None:
        values = {"state": state, "error": error}
        if state == HostState.up:
            values["last_seen"] = utcnow()
        with self.store.session() as s:
            s.execute(update(Host).where(Host.id == host_id).values(**values))
            s.commit()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="host-connections", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            drivers, self.drivers = list(self.drivers.values()), {}
        for d in drivers:
            d.close()

    def check_all(self, wait: bool = True) -> None:
        """Reconnect hosts without a connection; drop connections that no longer answer.

        Each reconnect runs on its own thread: a host whose address black-holes packets can
        hold a TCP connect for minutes, and must not delay the others."""
        with self.store.session() as s:
            hosts = list(s.execute(select(Host.id, Host.uri)))
        threads = []
        for host_id, uri in hosts:
            with self._lock:
                drv = self.drivers.get(host_id)
                if host_id in self._connecting:
                    continue
            if drv is not None:
                if drv.alive():
                    continue
                self._lost(host_id, drv, "the host stopped answering")
            with self._lock:
                self._connecting.add(host_id)
            t = threading.Thread(target=self._reconnect, args=(host_id, uri), daemon=True)
            t.start()
            threads.append(t)
        if wait:
            for t in threads:
                t.join(30)

    def _reconnect(self, host_id: int, uri: str) -> None:
        try:
            try:
                new = LibvirtDriver(uri)
            except HypervisorError as e:
                self._mark(host_id, HostState.down, e.detail)
                return
            self.attach(host_id, new)
            self.on_connect(host_id)
        finally:
            with self._lock:
                self._connecting.discard(host_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_all(wait=False)
            except Exception as e:  # the watcher must outlive any one bad host
                print(f"vpool: host check failed: {e}")
            self._stop.wait(self.reconnect_interval_s)
