"""Hosts: adding a libvirt URI to the pool, reading what it has, and taking it out again."""

import socket
from urllib.parse import parse_qs, urlparse

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.hypervisor.localhost import KERNEL_PROBE_S, is_local, kvm_boots_guests
from vpool.model.capacity import capacity_lines, check_setting
from vpool.model.errors import Conflict, HypervisorError, Invalid, NotFound, VpoolError
from vpool.model.names import check_name
from vpool.services.pool import allocations, host_policy, pool_defaults, set_pool_defaults
from vpool.store.lookup import by_ref
from vpool.store.tables import VM, Host, Image

VIRT_TYPES = ("auto", "kvm", "qemu")


def check_uri(uri: str) -> str:
    parsed = urlparse(uri)
    if not parsed.scheme or not (parsed.scheme.startswith(("qemu", "test")) or "+" in parsed.scheme):
        raise Invalid(f"{uri!r} is not a libvirt URI: write it like qemu:///system, "
                      "qemu+ssh://user@host/system, qemu+tcp://host:16509/system or test:///default")
    if any(c in uri for c in "\n\r\0 "):
        raise Invalid(f"{uri!r} contains characters a libvirt URI cannot have")
    # libvirt runs a URI's ext transport or its command= parameter as a local program: an API
    # caller must not choose what the control plane executes
    params = {k.lower() for k in parse_qs(parsed.query, keep_blank_values=True)}
    if parsed.scheme.endswith("+ext") or "command" in params:
        raise Invalid(f"{uri!r} asks libvirt to run a local command, which vpool does not allow; "
                      "use the ssh or tls transport (ssh options belong in ~/.ssh/config)")
    return uri


def default_name(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme.startswith("test"):
        base = (parsed.path.rsplit("/", 1)[-1] or "test").split(".")[0]
    else:
        base = parsed.hostname or socket.gethostname().split(".")[0]
    clean = "".join(c if c.isalnum() or c in "._-" else "-" for c in base).strip("._-") or "host"
    return clean[:63]


def choose_virt_type(requested: str, offered: list[str], uri: str) -> str:
    if "test" in offered:
        return "test"
    if requested not in VIRT_TYPES:
        raise Invalid(f"virt type {requested!r} is not one of {', '.join(VIRT_TYPES)}")
    if requested != "auto":
        if requested not in offered:
            raise Invalid(f"the host offers {', '.join(offered) or 'no'} domain types, not {requested}")
        return requested
    if "kvm" in offered and (not is_local(uri) or kvm_boots_guests()[0]):
        return "kvm"
    return "qemu"


class HostService:
    def __init__(self, cp):
        self.cp = cp

    def get(self, s, ref: str) -> Host:
        host = by_ref(s, Host, ref)
        if host is None:
            raise NotFound(f"there is no host {ref!r}")
        return host

    def add(self, uri: str, name: str | None, virt_type: str = "auto", network: str | None = None,
            requested_by: str = "admin"):
        check_uri(uri)
        name = check_name(name or default_name(uri), "host name")
        if virt_type not in VIRT_TYPES:
            raise Invalid(f"virt type {virt_type!r} is not one of {', '.join(VIRT_TYPES)}")
        if network is not None and not (network.startswith(("network:", "bridge:"))
                                        and check_name(network.split(":", 1)[1], "network")):
            raise Invalid(f"network {network!r} must be written network:NAME or bridge:NAME")
        with self.cp.store.session() as s:
            if s.scalar(select(Host.id).where(Host.uri == uri)):
                raise Conflict(f"{uri} is already in the pool")
            if s.scalar(select(Host.id).where(Host.name == name)):
                raise Conflict(f"a host named {name!r} is already in the pool")

        def body(ctx):
            ctx.progress(10, f"connecting to {uri}")
            drv = LibvirtDriver(uri)
            try:
                facts = drv.facts()
                if not drv.is_test:  # every simulated host reports the test driver's one UUID
                    self._refuse_twin(uri, facts["host_uuid"])
                ctx.progress(40, "preparing storage pool and network")
                pool = drv.ensure_storage_pool(self.cp.settings.storage_pool, self.cp.settings.storage_path)
                storage = drv.storage_identity(pool["name"])
                vt = choose_virt_type(virt_type, facts["virt_types"], uri)
                net = network
                if net is None:
                    if drv.is_test:
                        net = "network:default"
                    else:
                        net = self._ensure_guest_network(drv)
                with self.cp.store.session() as s:
                    host = Host(name=name, uri=uri, state="up", cpus=facts["cpus"], memory_mib=facts["memory_mib"],
                                disk_gib=pool["capacity_gib"], arch=facts["arch"], hypervisor=facts["hypervisor"],
                                hypervisor_version=facts["hypervisor_version"], hostname=facts["hostname"],
                                host_uuid=facts["host_uuid"], virt_type=vt, network=net, storage_pool=pool["name"],
                                storage=storage)
                    s.add(host)
                    try:
                        s.commit()
                    except IntegrityError:
                        raise Conflict(f"host {name!r} or {uri} was added meanwhile") from None
                    host_id = host.id
            except BaseException:
                drv.close()
                raise
            self.cp.connections.attach(host_id, drv)
            result = {"host": name, "virt_type": vt}
            if virt_type == "auto" and vt == "kvm" and not is_local(uri) and facts["arch"] == "x86_64":
                ctx.progress(60, "booting a guest kernel under its KVM")
                boots, result["kvm"] = self._kvm_boots(host_id)
                if not boots:
                    result["virt_type"] = "qemu"
                    with self.cp.store.session() as s:
                        s.execute(update(Host).where(Host.id == host_id).values(virt_type="qemu"))
                        s.commit()
            ctx.progress(80, "reading its domains")
            self.cp.reconciler.sync_host(host_id)
            return result

        return self.cp.runner.submit("host.add", name, {"uri": uri, "virt_type": virt_type}, body,
                                     requested_by=requested_by)

    def _kvm_boots(self, host_id: int) -> tuple[bool, str]:
        """`auto` on another machine: its KVM counts only when a stock guest kernel boots under it,
        the rule this machine's own KVM is held to (localhost.kvm_boots_guests); PVM nested KVM,
        for one, offers KVM and boots nothing. Tried with the newest kernel image's kernel, copied
        to the host as its first VM of that image would need anyway."""
        with self.cp.store.session() as s:
            image_id = s.scalar(select(Image.id).where(Image.kind == "kernel").order_by(Image.id.desc()))
        if image_id is None:
            return True, "not tried with a guest kernel: the pool has no kernel image yet (vpool image build-tiny)"
        try:
            copy = self.cp.images.ensure_copy(image_id, host_id)
        except VpoolError as e:
            return True, f"not tried with a guest kernel: copying one to the host failed: {e.detail}"
        return self.cp.connections.driver(host_id).kernel_boots(copy.kernel_path, KERNEL_PROBE_S)

    def _refuse_twin(self, uri: str, host_uuid: str) -> None:
        """One hypervisor reached by two URIs (a port spelled out, a name and an address) would be
        two hosts: its capacity counted twice and its VMs claimed by both."""
        with self.cp.store.session() as s:
            twin = s.execute(select(Host.name, Host.uri).where(Host.host_uuid == host_uuid)).first()
        if twin is not None:
            raise Conflict(f"{uri} is the hypervisor already in the pool as host {twin.name} ({twin.uri}): both "
                           f"report host UUID {host_uuid}. If they are two machines, give one its own host_uuid "
                           "in libvirtd.conf and restart its libvirtd")

    def _ensure_guest_network(self, drv: LibvirtDriver) -> str:
        settings = self.cp.settings
        prefix = settings.network_subnet.split("/")[0].rsplit(".", 1)[0]
        drv.ensure_isolated_network(settings.network, settings.network_bridge, prefix)
        return f"network:{settings.network}"

    def restart_guest_network(self, host_id: int) -> None:
        """Start vpool's guest network again on a host that comes back without it: libvirt
        autostarts a network once per boot, so a libvirtd restarted after someone stopped the
        network (or a host restored from elsewhere) leaves every guest of vpool unable to start."""
        with self.cp.store.session() as s:
            network = s.scalar(select(Host.network).where(Host.id == host_id))
        if network != f"network:{self.cp.settings.network}":
            return  # an operator's own network or bridge, or the test driver's: theirs to run
        try:
            self._ensure_guest_network(self.cp.connections.driver(host_id))
        except (Conflict, HypervisorError) as e:
            print(f"vpool: host {host_id} came back without guest network {self.cp.settings.network!r} "
                  f"and it would not start: {e}")

    def learn_storage(self, host_id: int) -> None:
        """Read the host's storage id again on each connect: a host whose pool now sits on other
        storage (remounted, moved to a SAN) is judged by where its disks are now."""
        with self.cp.store.session() as s:
            host = s.get(Host, host_id)
            pool = host.storage_pool if host else None
        if pool is None:
            return
        try:
            storage = self.cp.connections.driver(host_id).storage_identity(pool)
        except (Conflict, HypervisorError):
            return  # gone again, or its pool is not there: the last id stands
        with self.cp.store.session() as s:
            s.execute(update(Host).where(Host.id == host_id).values(storage=storage))
            s.commit()

    def remove(self, ref: str) -> None:
        with self.cp.store.session() as s:
            host = self.get(s, ref)
            managed = s.scalar(select(VM.name).where(VM.host_id == host.id, VM.ownership == "managed"))
            if managed:
                raise Conflict(f"host {host.name} still runs managed VMs (e.g. {managed}); move or delete them first")
            for vm in s.scalars(select(VM).where(VM.host_id == host.id)):
                s.delete(vm)
            host_id = host.id
            s.delete(host)
            s.commit()
        self.cp.connections.detach(host_id)

    def set(self, ref: str, maintenance: bool | None = None, **overrides) -> dict:
        """overrides as a JSON merge patch (RFC 7396) gives them: a value overrides the pool's
        default on this host, None gives the host the pool's default back."""
        with self.cp.store.session() as s:
            host = self.get(s, ref)
            if maintenance is not None:
                host.maintenance = maintenance
            for key, value in overrides.items():
                check_setting(key, value, "host setting")
                setattr(host, key, value)
            s.commit()
            return self.describe(s, host)

    def describe(self, s, host: Host, allocated: dict | None = None, defaults: dict | None = None,
                 on_storage: dict | None = None) -> dict:
        if allocated is None:
            allocated = allocations(s).get(host.id, {})
        if on_storage is None:
            on_storage = hosts_by_storage(s)
        policy = host_policy(host, defaults if defaults is not None else pool_defaults(s))
        lines = capacity_lines({"cpus": host.cpus, "memory_mib": host.memory_mib, "disk_gib": host.disk_gib},
                               policy, allocated)
        return {
            "id": host.id, "name": host.name, "uri": host.uri, "state": host.state,
            "maintenance": host.maintenance, "error": host.error, "arch": host.arch,
            "hypervisor": host.hypervisor, "hypervisor_version": host.hypervisor_version,
            "hostname": host.hostname, "host_uuid": host.host_uuid, "virt_type": host.virt_type,
            "network": host.network, "storage_pool": host.storage_pool, "storage": host.storage,
            "shares_storage_with": [n for n in on_storage.get(host.storage, ()) if n != host.name],
            "vms": allocated.get("vms", 0),
            "policy": policy, "last_seen": host.last_seen, "created_at": host.created_at,
            "capacity": {r: {"capacity": ln.capacity, "ratio": ln.ratio, "reserved": ln.reserved,
                             "usable": ln.usable, "allocated": ln.allocated, "free": ln.free}
                         for r, ln in lines.items()},
        }

    def describe_all(self, s) -> list[dict]:
        alloc, defaults, on_storage = allocations(s), pool_defaults(s), hosts_by_storage(s)
        return [self.describe(s, h, alloc.get(h.id, {}), defaults, on_storage)
                for h in s.scalars(select(Host).order_by(Host.id))]

    def listing(self, state: str | None = None) -> list[dict]:
        with self.cp.store.session() as s:
            return [h for h in self.describe_all(s) if state is None or h["state"] == state]

    def show(self, ref: str) -> dict:
        with self.cp.store.session() as s:
            return self.describe(s, self.get(s, ref))

    def summary(self) -> dict:
        """The pool at a glance: hosts up, VMs, and capacity summed over every host; disk once per
        storage, however many hosts share it."""
        hosts = self.listing()
        storages = list({h["storage"] or f"host:{h['id']}": h for h in reversed(hosts)}.values())
        total = {r: {k: sum(h["capacity"][r][k] for h in (storages if r == "disk_gib" else hosts))
                     for k in ("usable", "allocated", "free")} for r in ("cpus", "memory_mib", "disk_gib")}
        return {"hosts": len(hosts), "hosts_up": sum(1 for h in hosts if h["state"] == "up"),
                "vms": sum(h["vms"] for h in hosts), "capacity": total}

    def defaults(self, values: dict | None = None) -> dict:
        """The pool's default ratios and reservations; with values, changed first."""
        with self.cp.store.session() as s:
            return set_pool_defaults(s, values) if values else pool_defaults(s)


def hosts_by_storage(s) -> dict[str, list[str]]:
    """Storage id -> the hosts on it: the hosts a VM can move to without copying its disk."""
    out: dict[str, list[str]] = {}
    for storage, name in s.execute(select(Host.storage, Host.name).where(Host.storage.is_not(None))
                                   .order_by(Host.name)):
        out.setdefault(storage, []).append(name)
    return out
