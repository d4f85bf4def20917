"""`vpool serve`: prepare this machine, start the control plane, register the local host, serve the API."""

import sys

from sqlalchemy import select

from vpool.hypervisor import localhost
from vpool.services.controlplane import ControlPlane
from vpool.store.tables import Host, Task


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
    ok, why = localhost.kvm_boots_guests()
    say("guests will use KVM" if ok else f"guests will use QEMU TCG (software emulation): {why}")
    return localhost.LOCAL_URI


def register_local_host(cp: ControlPlane, uri: str | None) -> None:
    with cp.store.session() as s:
        if s.scalar(select(Host.id).limit(1)) is not None:
            return
    if uri is None:
        uri = localhost.TEST_URI
        say("WARNING: no local libvirtd could run, so the pool starts with libvirt's test driver "
            "(test:///default): VMs there are simulated, not real guests")
    task = cp.hosts.add(uri, None)
    cp.runner.wait(task.id, 120)
    with cp.store.session() as s:
        t = s.get(Task, task.id)
        say(f"registered this machine as host {t.target} ({uri})" if t.state == "succeeded"
            else f"WARNING: could not register {uri}: {t.error}")


def run(host: str, port: int, register_local: bool = True) -> None:
    import uvicorn

    from vpool.api.app import create_app

    cp = ControlPlane()
    uri = prepare_local_libvirt(cp)
    cp.start()
    if register_local:
        register_local_host(cp, uri)
    say(f"state in {cp.settings.database_url}")
    say(f"admin API token in {cp.settings.token_file}")
    say(f"API on http://{host}:{port} (OpenAPI at http://{host}:{port}/docs)")
    try:
        uvicorn.run(create_app(cp), host=host, port=port, log_level="warning")
    finally:
        cp.stop()
