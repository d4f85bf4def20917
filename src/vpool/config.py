"""Where vpool keeps its state and how it is reached; every setting has an environment override
(VPOOL_DATA_DIR, VPOOL_DATABASE_URL and one VPOOL_<NAME> per field below)."""

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


def _data_dir() -> Path:
    if os.environ.get("VPOOL_DATA_DIR"):
        return Path(os.environ["VPOOL_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share"
    return Path(base) / "vpool"


def lab_dir() -> Path:
    return Path(os.environ.get("VPOOL_LAB_DIR") or "/var/lib/vpool/lab").expanduser()


def _lease_files() -> tuple[Path, ...]:
    """DHCP lease files of bridges vpool's guests may sit on: VPOOL_DHCP_LEASES (':'-separated),
    and the lab's own dnsmasq."""
    extra = [Path(p) for p in os.environ.get("VPOOL_DHCP_LEASES", "").split(":") if p]
    return (*extra, lab_dir() / "net" / "dnsmasq.leases")


def cache_dir() -> Path:
    if os.environ.get("VPOOL_CACHE_DIR"):
        return Path(os.environ["VPOOL_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vpool"


def _env(name: str, default, kind=str):
    """A field default read from VPOOL_<name> when the service starts, so a deployment is configured
    without code; a value that does not parse stops the start with the variable's name."""

    def read():
        raw = os.environ.get(f"VPOOL_{name}", "")
        if raw == "":
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"VPOOL_{name} must be {_KINDS[kind]}, not {raw!r}") from None

    return field(default_factory=read)


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(raw)
    return raw == "1"


def _subnet(raw: str) -> str:
    net = ipaddress.IPv4Network(raw)  # its errors are ValueErrors
    if net.prefixlen != 24:
        raise ValueError(raw)
    return str(net)


def _interface(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", raw):
        raise ValueError(raw)
    return raw


_KINDS = {float: "a number", int: "a whole number", _flag: "0 or 1",
          _subnet: "an IPv4 /24 written like 10.213.0.0/24",
          _interface: "a network interface name (at most 15 letters, digits, '.', '-' or '_')"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=_data_dir)
    database_url: str = ""
    # The full sync is the reconciler's safety net: events bring each change within a moment, and
    # a reconnect syncs the host at once. At 10,000 VMs a sync holds the API's interpreter for about
    # 0.2 s, so every 10 s it sat under 2 % of requests and set the list's p99 (BENCHMARKS.md, API).
    sync_interval_s: float = _env("SYNC_INTERVAL", 60.0, float)
    reconnect_interval_s: float = _env("RECONNECT_INTERVAL", 5.0, float)
    task_workers: int = _env("TASK_WORKERS", 16, int)
    storage_pool: str = _env("STORAGE_POOL", "vpool")
    storage_path: str = _env("STORAGE_PATH", "/var/lib/vpool/images")
    # The isolated network vpool defines on each qemu host for its guests (host at .1, DHCP
    # .100-.250); another control plane on the same hosts needs its own name, bridge and subnet.
    network: str = _env("NETWORK", "vpool")
    network_bridge: str = _env("NETWORK_BRIDGE", "vpoolbr0", _interface)
    network_subnet: str = _env("NETWORK_SUBNET", "10.213.0.0/24", _subnet)
    dhcp_lease_files: tuple[Path, ...] = field(default_factory=_lease_files)
    # VPOOL_TELEMETRY_INTERVAL=0 turns collection off (e.g. to measure the API alone).
    telemetry_interval_s: float = _env("TELEMETRY_INTERVAL", 10.0, float)
    # The collection loop in a process of its own (VPOOL_TELEMETRY_PROCESS=0: on a thread of the API's).
    telemetry_process: bool = _env("TELEMETRY_PROCESS", True, _flag)
    telemetry_raw_retention_s: int = _env("TELEMETRY_RAW_RETENTION", 86400, int)
    telemetry_5m_retention_s: int = _env("TELEMETRY_5M_RETENTION", 30 * 86400, int)
    telemetry_1h_retention_s: int = _env("TELEMETRY_1H_RETENTION", 365 * 86400, int)

    def __post_init__(self):
        if not self.database_url:
            url = os.environ.get("VPOOL_DATABASE_URL") or f"sqlite:///{self.data_dir / 'vpool.db'}"
            object.__setattr__(self, "database_url", url)

    @property
    def token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"
