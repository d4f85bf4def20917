"""libvirt XML for snapshots, checkpoints and push-mode backups, built and read with ElementTree."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vpool.hypervisor.domain_xml import _sub

CHECKPOINT_PREFIX = "vpool-"  # checkpoints vpool made; it never touches anyone else's


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    parent: str | None
    current: bool
    state: str  # the domain's state when it was taken: running, paused, shutoff
    created: int  # seconds since the epoch
    description: str
    memory: bool
    external: bool
    overlays: tuple[str, ...]  # the files an external snapshot made active


def snapshot_xml(name: str, description: str | None, external_files: dict[str, str] | None = None) -> str:
    """external_files (disk -> new overlay file) asks for a disk-only external snapshot."""
    snap = ET.Element("domainsnapshot")
    _sub(snap, "name", name)
    if description:
        _sub(snap, "description", description)
    if external_files:
        _sub(snap, "memory", snapshot="no")
        disks = _sub(snap, "disks")
        for disk, path in external_files.items():
            d = _sub(disks, "disk", name=disk, snapshot="external")
            _sub(d, "source", file=path)
    return ET.tostring(snap, encoding="unicode")


def parse_snapshot(xml: str, current: bool) -> SnapshotInfo:
    """From libvirt's snapshot XML, which names the parent too (so no call per snapshot asks)."""
    root = ET.fromstring(xml)
    memory = root.find("memory")
    disks = root.findall("disks/disk")
    external = [d for d in disks if d.get("snapshot") == "external"]
    return SnapshotInfo(
        name=root.findtext("name") or "", parent=root.findtext("parent/name"), current=current,
        state=root.findtext("state") or "unknown", created=int(root.findtext("creationTime") or 0),
        description=root.findtext("description") or "",
        memory=memory is not None and memory.get("snapshot") in ("internal", "external"),
        external=bool(external),
        overlays=tuple(s.get("file") for d in external for s in d.iterfind("source") if s.get("file")))


def checkpoint_xml(name: str, disks: list[str]) -> str:
    ck = ET.Element("domaincheckpoint")
    _sub(ck, "name", name)
    el = _sub(ck, "disks")
    for disk in disks:
        _sub(el, "disk", name=disk, checkpoint="bitmap")
    return ET.tostring(ck, encoding="unicode")


def backup_xml(targets: dict[str, str], incremental_from: str | None = None) -> str:
    """Push mode: qemu itself writes each disk (or what changed since a checkpoint) to a qcow2 file."""
    backup = ET.Element("domainbackup", mode="push")
    if incremental_from:
        _sub(backup, "incremental", incremental_from)
    disks = _sub(backup, "disks")
    for disk, path in targets.items():
        d = _sub(disks, "disk", name=disk, type="file")
        _sub(d, "target", file=path)
        _sub(d, "driver", type="qcow2")
    return ET.tostring(backup, encoding="unicode")


def pool_target_path(pool_xml: str) -> str:
    return ET.fromstring(pool_xml).findtext("target/path") or ""


def domain_disks(xml: str) -> dict[str, str]:
    """Target dev -> active source file of every file-backed disk (the top of an overlay chain)."""
    root = ET.fromstring(xml)
    out = {}
    for disk in root.iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if disk.get("device", "disk") == "disk" and target is not None and source is not None and source.get("file"):
            out[target.get("dev")] = source.get("file")
    return out
