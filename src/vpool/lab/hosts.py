"""Lab hosts: several libvirtd "hosts" on one machine, each in its own network, mount and UTS
namespace, so that migrating between them is real QEMU live migration over a real TCP link.

Per host labN the lab keeps, under its state directory:

    hosts/labN/{etc,run,var/lib,var/cache,var/log}/libvirt   bind-mounted over the real paths
    hosts/labN/hosts                                         its /etc/hosts: the lab's names only
and all hosts see the lab's shared/ directory at vpool's storage path (Settings.storage_path),
so a VM disk vpool creates on one host is the same file on every other one (shared-storage
migration), while /var/lib/libvirt/images stays private per host (copy-storage migration).

The namespaces are held by one small process per host (`hold` below), started through
`ip netns exec` + `unshare`; virtlogd and libvirtd join them with nsenter. Each started process is
recorded in state.json with its start time, so `down` stops exactly those, and `up` can tell
what still runs and restart only what died. Nothing here depends on the vpool control plane.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from vpool.config import Settings, lab_dir
from vpool.hypervisor.libvirt_driver import LibvirtDriver
from vpool.lab import network
from vpool.lab.network import Topology, check_host_number
from vpool.lab.procs import LabError, Proc, spawn
from vpool.model.errors import HypervisorError

LIBVIRT_DIRS = ("etc/libvirt", "run/libvirt", "var/lib/libvirt", "var/cache/libvirt", "var/log/libvirt")
PRIVATE_POOL = "private"
PRIVATE_POOL_PATH = "/var/lib/libvirt/images"
LIBVIRTD_TCP_PORT = 16509
DAEMONS = ("holder", "virtlogd", "subreaper", "libvirtd")
START_TIMEOUT_S = 60.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class HostStatus:
    number: int
    name: str
    address: str
    uri: str
    host_uuid: str
    libvirtd: bool  # its recorded libvirtd process is alive
    answers: bool  # and it answers over qemu+tcp
    running: int | None  # domains running, when it answers
    pids: dict[str, int]  # what `down` will stop

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Lab:
    """One lab: a state directory and the topology recorded in it on its first `up`."""

    def __init__(self, root: Path | None = None, topology: Topology | None = None):
        self.root = Path(root) if root is not None else lab_dir()
        self._state = self._load()
        recorded = self._state.get("topology")
        if recorded and topology and Topology.from_json(recorded) != topology:
            raise LabError(f"the lab in {self.root} was made with {recorded}; take it down and remove "
                           "its state directory to change names or subnets")
        self.topology = topology or (Topology.from_json(recorded) if recorded else Topology())

    # --- names ----------------------------------------------------------------------------------
    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    def host_dir(self, n: int) -> Path:
        return self.root / "hosts" / self.topology.host_name(n)

    def uri(self, n: int) -> str:
        return f"qemu+tcp://{self.topology.host_address(n)}/system"

    def numbers(self) -> list[int]:
        return sorted(int(n) for n in self._state.get("hosts", {}))

    def leases(self) -> dict[str, str]:
        return network.leases(self.root)

    # --- state ----------------------------------------------------------------------------------
    def _load(self) -> dict:
        try:
            return json.loads((self.root / "state.json").read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise LabError(f"{self.root / 'state.json'} is damaged ({e}); processes it listed may still run") from e

    def _save(self) -> None:
        self._state["topology"] = self.topology.to_json()
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self._state, indent=2) + "\n")
        tmp.replace(self.root / "state.json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One up or down at a time: two would start two libvirtds for one host."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._state = self._load()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _host_state(self, n: int) -> dict:
        return self._state.setdefault("hosts", {}).setdefault(str(n), {})

    def _proc(self, n: int, daemon: str) -> Proc | None:
        proc = Proc.from_json(self._state.get("hosts", {}).get(str(n), {}).get(daemon))
        if daemon == "libvirtd" and not (proc and proc.alive()) and self._alive(n, "subreaper"):
            proc = self._libvirtd_in_pidfile(n) or proc
        return proc

    def _libvirtd_pidfile(self, n: int) -> Path:
        return self.host_dir(n) / "run/libvirt/libvirtd.pid"

    def _libvirtd_in_pidfile(self, n: int) -> Proc | None:
        """libvirtd writes its pid there; after a crash the subreaper's new libvirtd does too,
        while the one recorded at up is gone."""
        try:
            return Proc.of(int(self._libvirtd_pidfile(n).read_text().strip()))
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, n: int, daemon: str) -> bool:
        proc = self._proc(n, daemon)
        return proc is not None and proc.alive()

    # --- up -------------------------------------------------------------------------------------
    def up(self, hosts: int = 3, say: Say = lambda _m: None) -> list[HostStatus]:
        """Start what is missing, restart what died, leave alone what runs: safe to repeat."""
        check_host_number(hosts)
        _require_root()
        with self._locked():
            self.shared_dir.mkdir(parents=True, exist_ok=True)
            (self.root / "logs").mkdir(exist_ok=True)
            self._up_network(say)
            for n in range(1, hosts + 1):
                self._up_host(n, say)
        return self.status()

    def _up_network(self, say: Say) -> None:
        topo = self.topology
        # Lifted whether or not this state recorded it: a fence outlives a lost or other state
        # directory, and left in place it makes every host unreachable.
        network.unfence(topo)
        self._state.pop("fenced", None)
        owned = set(self._state.get("bridges", []))
        created = network.ensure_root(topo, owned)
        if created:
            self._state["bridges"] = sorted(owned | created)
            self._save()
            say(f"created bridges {', '.join(sorted(created))}")
        network.ensure_isolation(topo)
        self._state["firewall"] = topo.firewall_table
        dhcp = Proc.from_json(self._state.get("dhcp"))
        if dhcp is None or not dhcp.alive():
            self._state["dhcp"] = network.start_dhcp(topo, self.root).to_json()
            say(f"started DHCP for {topo.guest_subnet}.0/24 on {topo.guest_bridge} "
                f"(dnsmasq pid {self._state['dhcp']['pid']})")
        self._save()

    def _up_host(self, n: int, say: Say) -> None:
        topo, name, hs = self.topology, self.topology.host_name(n), self._host_state(n)
        hs.setdefault("uuid", str(uuid.uuid4()))
        if network.ensure_host_links(topo, n, owned=hs.get("netns", False)):
            say(f"{name}: created netns {name} at {topo.host_address(n)}")
        hs["netns"] = True
        self._save()
        self._write_config(n)
        if not self._alive(n, "holder"):
            self._stop_host_daemons(n)
            self._start_holder(n)
        if not self._alive(n, "virtlogd"):
            hs["virtlogd"] = spawn(self._enter(n) + ["virtlogd", "-p", "/run/libvirt/virtlogd.pid"],
                                   self.host_dir(n) / "virtlogd.out").to_json()
            self._save()
        if not self._alive(n, "libvirtd"):
            self._start_libvirtd(n)
            say(f"{name}: libvirtd pid {hs['libvirtd']['pid']} answers at {self.uri(n)}")
        with self._driver(n) as drv:
            drv.ensure_storage_pool(PRIVATE_POOL, PRIVATE_POOL_PATH)

    def _write_config(self, n: int) -> None:
        """Rewritten on every up (taking effect when libvirtd next starts); the rest of the
        host's /etc/libvirt (pools, domains) is libvirtd's and is kept."""
        d, topo = self.host_dir(n), self.topology
        for sub in LIBVIRT_DIRS + ("var/lib/libvirt/images", "var/log/libvirt/qemu"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "etc/libvirt/libvirtd.conf").write_text(
            "# written by `vpool lab up`: a lab host, reachable without authentication (lab only)\n"
            "listen_tcp = 1\nlisten_tls = 0\nauth_tcp = \"none\"\n"
            f"host_uuid = \"{self._host_state(n)['uuid']}\"\n"
            "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n")
        (d / "etc/libvirt/qemu.conf").write_text(
            "# written by `vpool lab up`: every lab host runs QEMU as root and never chowns files, because\n"
            "# the kernel, initrd and disks in the shared directory are opened by several hosts at once\n"
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n")
        names = "".join(f"{topo.host_address(i)} {topo.host_name(i)}\n" for i in range(1, network.MAX_HOSTS + 1))
        (d / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{topo.mgmt_address} {topo.prefix}root\n{names}")

    def _mounts(self, n: int) -> list[tuple[Path, str]]:
        d = self.host_dir(n)
        return ([(d / sub, f"/{sub}") for sub in LIBVIRT_DIRS]
                + [(d / "hosts", "/etc/hosts"), (self.shared_dir, Settings().storage_path)])

    @contextlib.contextmanager
    def _driver(self, n: int) -> Iterator[LibvirtDriver]:
        drv = LibvirtDriver(self.uri(n))
        try:
            yield drv
        finally:
            drv.close()

    def _enter(self, n: int) -> list[str]:
        holder = self._proc(n, "holder")
        return ["nsenter", "-t", str(holder.pid), "-m", "-u", "-n", "--"]

    def _start_holder(self, n: int) -> None:
        d, name = self.host_dir(n), self.topology.host_name(n)
        shutil.rmtree(d / "run/libvirt")  # sockets and pid files of a previous life
        (d / "run/libvirt").mkdir()
        ready = d / "holder.ready"
        ready.unlink(missing_ok=True)
        argv = ["ip", "netns", "exec", name, "unshare", "--mount", "--uts", "--propagation", "slave", "--",
                sys.executable, "-m", "vpool.lab.hosts", "hold", str(ready), name]
        for src, dst in self._mounts(n):
            argv += [str(src), dst]
        holder = spawn(argv, d / "holder.out")
        self._host_state(n)["holder"] = holder.to_json()
        self._save()
        _wait(lambda: ready.exists(), holder, f"{name}'s namespace holder", d / "holder.out")
        if int(ready.read_text()) != holder.pid:
            raise LabError(f"{name}'s namespace holder is not the process the lab started; see {d / 'holder.out'}")

    def _start_libvirtd(self, n: int) -> None:
        d, hs = self.host_dir(n), self._host_state(n)
        pidfile = self._libvirtd_pidfile(n)
        pidfile.unlink(missing_ok=True)
        reaper = spawn(self._enter(n) + [sys.executable, "-m", "vpool.hypervisor.subreaper",
                                         "libvirtd", "--listen", "-p", "/run/libvirt/libvirtd.pid"],
                       d / "libvirtd.out")
        hs["subreaper"] = reaper.to_json()
        hs.pop("libvirtd", None)
        self._save()
        address = self.topology.host_address(n)
        _wait(lambda: _tcp_open(address, LIBVIRTD_TCP_PORT) and pidfile.exists(), reaper,
              f"libvirtd of {self.topology.host_name(n)}", d / "var/log/libvirt/libvirtd.log")
        libvirtd = self._libvirtd_in_pidfile(n)
        if libvirtd is None:
            raise LabError(f"libvirtd of {self.topology.host_name(n)} exited; see {d / 'libvirtd.out'}")
        hs["libvirtd"] = libvirtd.to_json()
        self._save()

    # --- down -----------------------------------------------------------------------------------
    def down(self, say: Say = lambda _m: None, fence: bool = True) -> None:
        """Guests destroyed, recorded processes stopped, netns, veths, bridges and rules removed.

        With `fence`, the lab's subnets are left unreachable until the next up (see
        network.fence); without it, a fence left by an earlier down goes too."""
        _require_root()
        with self._locked():
            was_up = bool(self._state.get("bridges") or self._state.get("fenced"))
            for n in self.numbers():
                self._down_host(n, say)
            dhcp = Proc.from_json(self._state.pop("dhcp", None))
            if dhcp:
                dhcp.stop()
            if self._state.pop("firewall", None):
                network.remove_isolation(self.topology)
            for bridge in self._state.get("bridges", []):
                network.remove_link(bridge)
            self._state["bridges"] = []
            fence = fence and was_up
            if fence:
                network.fence(self.topology)
            elif self._state.get("fenced"):
                network.unfence(self.topology)
            self._state["fenced"] = fence
            self._save()
            say("network removed" + (f"; {self.topology.mgmt_subnet}.0/24 and {self.topology.guest_subnet}.0/24 "
                                     "stay unreachable until the next up" if fence else ""))

    def _down_host(self, n: int, say: Say) -> None:
        name = self.topology.host_name(n)
        destroyed = 0
        if self._alive(n, "libvirtd"):
            with contextlib.suppress(HypervisorError, libvirt.libvirtError):
                destroyed = self._destroy_guests(n)
        self._stop_host_daemons(n)
        # Left over only when libvirtd died, or stopped answering, before its guests: QEMU processes.
        for pid in network.netns_pids(self.topology, n):
            proc = Proc.of(pid)
            if proc:
                proc.stop()
        hs = self._host_state(n)
        if hs.pop("netns", False):
            network.remove_host_links(self.topology, n)
        self._save()
        say(f"{name}: down" + (f" ({destroyed} guests destroyed)" if destroyed else ""))

    def _destroy_guests(self, n: int) -> int:
        with self._driver(n) as drv:
            running = drv.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            for dom in running:
                dom.destroy()
            return len(running)

    def _stop_host_daemons(self, n: int) -> None:
        hs = self._host_state(n)
        for daemon in ("libvirtd", "subreaper", "virtlogd", "holder"):
            proc = self._proc(n, daemon)
            hs.pop(daemon, None)
            if proc:
                proc.stop()
            self._save()

    # --- status ---------------------------------------------------------------------------------
    def status(self) -> list[HostStatus]:
        out = []
        for n in self.numbers():
            hs = self._host_state(n)
            alive = self._alive(n, "libvirtd")
            answers, running = False, None
            if alive:
                with contextlib.suppress(HypervisorError, libvirt.libvirtError), self._driver(n) as drv:
                    running = len(drv.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
                    answers = True
            pids = {d: p.pid for d in DAEMONS if (p := self._proc(n, d))}
            out.append(HostStatus(n, self.topology.host_name(n), self.topology.host_address(n), self.uri(n),
                                  hs.get("uuid", ""), alive, answers, running, pids))
        return out

    def dhcp(self) -> Proc | None:
        return Proc.from_json(self._state.get("dhcp"))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates network namespaces, bridges and mounts: run it as root")


def _tcp_open(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
        return True
    return False


def _wait(ready: Callable[[], bool], proc: Proc, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if not proc.alive():
            raise LabError(f"{what} exited while starting; see {log}")
        if time.monotonic() > deadline:
            raise LabError(f"{what} did not come up within {START_TIMEOUT_S:.0f} s; see {log}")
        time.sleep(0.1)


def hold(ready: str, hostname: str, *mounts: str) -> None:
    """Runs inside the host's fresh namespaces: name it, mount its private paths, then keep the
    namespaces alive for the daemons that join them until told to stop."""
    socket.sethostname(hostname)
    for src, dst in zip(mounts[::2], mounts[1::2]):
        if Path(src).is_dir():
            os.makedirs(dst, exist_ok=True)
        subprocess.run(["mount", "--bind", src, dst], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Path(ready).write_text(f"{os.getpid()}\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    if sys.argv[1:2] != ["hold"] or len(sys.argv) < 4 or len(sys.argv) % 2:
        sys.exit("usage: python -m vpool.lab.hosts hold READY_FILE HOSTNAME [SRC DST]...")
    hold(*sys.argv[2:])
