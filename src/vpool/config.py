"""Where vpool keeps its state and how it is reached; every value has an environment override."""

import os
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


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=_data_dir)
    database_url: str = ""
    # The full sync is the reconciler's safety net: events bring each change within a moment, and
    # a reconnect syncs the host at once. At 10,000 VMs a sync holds the API's interpreter for about
    # 0.2 s, so every 10 s it sat under 2 % of requests and set the list's p99 (BENCHMARKS.md, API).
    sync_interval_s: float = field(default_factory=lambda: float(os.environ.get("VPOOL_SYNC_INTERVAL", "60")))
    reconnect_interval_s: float = 5.0
    task_workers: int = 16
    storage_pool: str = "vpool"
    storage_path: str = "/var/lib/vpool/images"
    network: str = "vpool"
    dhcp_lease_files: tuple[Path, ...] = field(default_factory=_lease_files)
    # VPOOL_TELEMETRY_INTERVAL=0 turns collection off (e.g. to measure the API alone).
    telemetry_interval_s: float = field(default_factory=lambda: float(os.environ.get("VPOOL_TELEMETRY_INTERVAL", "10")))
    # The collection loop in a process of its own (VPOOL_TELEMETRY_PROCESS=0: on a thread of the API's).
    telemetry_process: bool = field(default_factory=lambda: os.environ.get("VPOOL_TELEMETRY_PROCESS", "1") != "0")
    telemetry_raw_retention_s: int = 86400
    telemetry_5m_retention_s: int = 30 * 86400
    telemetry_1h_retention_s: int = 365 * 86400

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
