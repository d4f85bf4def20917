"""`vpool serve`: prepare this machine, start the control plane, register the local host, serve the API."""

import os
import signal
import sys
import threading
import time

from sqlalchemy import select

from vpool.config import Settings
from vpool.hypervisor import localhost
from vpool.services.controlplane import ControlPlane
from vpool.model.errors import VpoolError
from vpool.model.states import VMOwnership, VMState
from vpool.services.vms import CreateRequest
from vpool.store.tables import VM, Host, Image


def say(message: str) -> None:
    print(f"vpool: {message}", file=sys.stderr, flush=True)


def prepare_local_libvirt(cp: ControlPlane) -> str | None:
    """The URI of a usable local libvirtd, started if need be; None when there cannot be one."""
    changed = localhost.fix_kvm_permissions()
    if changed:
        say(changed)
    try:
        say(localhost.start_libvirtd(cp.settings.data_dir / "logs"))
    except RuntimeError as e:
        say(f"WARNING: {e}")
        return None
    return localhost.LOCAL_URI


def say_virt_type() -> None:
    ok, why = localhost.kvm_boots_guests()
    say(f"guests will use KVM ({why})" if ok else f"guests will use QEMU TCG (software emulation): {why}")


def ensure_tiny_image(cp: ControlPlane) -> bool:
    with cp.store.session() as s:
        if s.scalar(select(Image.id).where(Image.name == "tiny")) is not None:
            return True
    return _wait_task(cp, cp.images.build_tiny("tiny"), "building the tiny image")


def register_local_host(cp: ControlPlane, uri: str | None) -> None:
    with cp.store.session() as s:
        if s.scalar(select(Host.id).limit(1)) is not None:
            return
    if uri is None:
        uri = localhost.TEST_URI
        say("WARNING: no local libvirtd could run, so the pool starts with libvirt's test driver "
            "(test:///default): VMs there are simulated, not real guests")
    task = cp.hosts.add(uri, None)
    if _wait_task(cp, task, f"registering {uri}", 120):
        say(f"registered this machine as host {task.target} ({uri})")


def _wait_task(cp: ControlPlane, task, what: str, timeout: float = 600) -> bool:
    t = cp.runner.outcome(task.id, timeout)
    if t.state != "succeeded":
        say(f"WARNING: {what} failed: {t.error or t.state}")
    return t.state == "succeeded"


def start_lab(cp: ControlPlane, hosts: int, guests: int) -> None:
    """A pool with real VMs at once: lab hosts on this machine and a guest of the tiny image (built
    already) per host."""
    from vpool.lab.hosts import Lab

    lab = Lab()
    statuses = lab.up(hosts, say=say)
    topology = lab.topology
    with cp.store.session() as s:
        known = set(s.scalars(select(Host.uri)))
    # The lab's hosts are this machine: its guests get KVM exactly when this machine's would.
    virt_type = "kvm" if localhost.kvm_boots_guests()[0] else "qemu"
    for h in statuses:
        if h.uri not in known:
            _wait_task(cp, cp.hosts.add(h.uri, h.name, virt_type, f"bridge:{topology.guest_bridge}"),
                       f"registering {h.name}")
    under_way = ensure_lab_guests(cp, [h.name for h in statuses[:guests]])
    say(f"lab: {len(statuses)} hosts, guests web1..web{min(guests, len(statuses))} "
        f"{'starting' if under_way else 'running'} (vpool vm list; their addresses in vpool vm show NAME)")
    threading.Thread(target=_tell_how_they_end, args=(cp, under_way), name="lab-guests", daemon=True).start()


def _sync_now(cp: ControlPlane, host: str, timeout: float = 30) -> None:
    """A lab host is down when the control plane starts (the lab comes up after it): its rows
    still say what ran before the lab went down. Connect and sync it now, so that a guest that is
    stopped is started, not taken for running."""
    with cp.store.session() as s:
        host_id = s.scalar(select(Host.id).where(Host.name == host))
    deadline = time.monotonic() + timeout
    while host_id not in cp.connections.drivers and time.monotonic() < deadline:
        cp.connections.check_all()  # skips a host the watcher is connecting: then wait for it
        time.sleep(0.2)
    cp.reconciler.sync_host(host_id)


def ensure_lab_guests(cp: ControlPlane, hosts: list[str]) -> list[tuple[str, object]]:
    """webN on the Nth host, running: created when missing, started when stopped (the lab came
    back after a reboot), adopted first when vpool does not manage it (the lab keeps its domains
    when the data directory is wiped). Returns what is under way, as (what, task)."""
    under_way = []
    for host in hosts:  # a guest may have been migrated to another lab host: all first
        _sync_now(cp, host)
    for n, host in enumerate(hosts, start=1):
        name = f"web{n}"
        with cp.store.session() as s:
            vm = s.scalar(select(VM).where(VM.name == name))
            found = vm and (vm.ownership, vm.state, vm.host.name if vm.host else host)
        try:
            if not found:
                task = cp.vms.create(CreateRequest(name=name, memory_mib=256, disk_gib=1, image="tiny", host=host))
                under_way.append((f"{name} on {host}", task))
                continue
            ownership, state, where = found
            if ownership != VMOwnership.managed:
                if not _wait_task(cp, cp.vms.adopt(name), f"adopting {name}", 60):
                    continue
                say(f"lab: adopted {name} on {where}, which an earlier run left")
            if state != VMState.running:
                under_way.append((f"{name} on {where}", cp.vms.power(name, "start")))
        except VpoolError as e:
            say(f"WARNING: could not bring up {name} on {host}: {e.detail}")
    return under_way


def _tell_how_they_end(cp: ControlPlane, under_way: list) -> None:
    """The API serves meanwhile; a guest that failed says why in serve's output, not only in its task."""
    for what, task in under_way:
        if _wait_task(cp, task, f"bringing up {what}"):
            say(f"lab: {what} runs")


def _stop_on_losing_the_lease(why: str) -> None:
    """Another control plane (a standby) may now drive the hosts: this one stops, as cleanly as
    on SIGTERM, rather than work beside it."""
    say(f"{why}; stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def run(settings: Settings, host: str, port: int, register_local: bool = True, lab_hosts: int = 0,
        lab_guests: int = 3, standby: bool = False) -> None:
    import uvicorn

    from vpool.api.app import create_app

    # uvicorn re-raises the SIGTERM it shut down on; as an exception it lets cp.stop() run (the
    # default action would end the process first, leaving the collector and half-done work behind),
    # also while the control plane is still starting, and a standby still waiting stops at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cp = ControlPlane(settings)
    cp.lease.on_lost = _stop_on_losing_the_lease
    if standby:  # nothing is started, not even the API, until this one holds the database
        say(cp.lease.stand_by(say))
    else:
        cp.lease.acquire()  # refused before anything is started when another control plane runs here
    try:
        _start(cp, lab_hosts, lab_guests, register_local)
        say(f"state in {cp.settings.database_url}")
        say(f"admin API token in {cp.settings.token_file}")
        say(f"API on http://{host}:{port} (OpenAPI at http://{host}:{port}/docs)")
        uvicorn.run(create_app(cp), host=host, port=port, log_level="warning")
    finally:
        cp.stop()


def _start(cp: ControlPlane, lab_hosts: int, lab_guests: int, register_local: bool) -> None:
    uri = prepare_local_libvirt(cp)
    cp.start()
    # The tiny image before any host is registered, for the lab and wherever /boot has no kernel
    # for this machine (a container): its kernel is the one the KVM probe boots to decide KVM or
    # TCG, so even `--lab 0` does not take KVM on trust.
    wants_tiny = bool(lab_hosts) or (uri is not None and localhost.wants_probe_kernel())
    tiny_ready = wants_tiny and ensure_tiny_image(cp)
    if uri is not None:
        say_virt_type()
    if register_local:
        register_local_host(cp, uri)
    if lab_hosts and tiny_ready:
        try:
            start_lab(cp, lab_hosts, lab_guests)
        except Exception as e:  # the API is still worth serving without the lab
            say(f"WARNING: the lab did not start: {e}")
