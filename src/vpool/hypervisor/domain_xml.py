"""libvirt XML built with ElementTree: a name such as `a</name><devices>` stays text, never markup."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

VPOOL_NS = "https://vpool.dev/xmlns/vm/1"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    cpus: int
    memory_mib: int
    virt_type: str  # "kvm" or "qemu" (TCG)
    disk_path: str
    network: str  # "network:NAME" or "bridge:NAME"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    console_log: str | None = None
    arch: str = "x86_64"


@dataclass(frozen=True)
class DirectBoot:
    """A kernel (with initrd and command line) that QEMU loads from the host instead of a boot
    loader on the disk: vpool's kernel images, and VMs adopted from elsewhere that boot this way.
    A copy of such a VM's disk boots only with the same three beside it."""
    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def domain_xml(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type=spec.virt_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    meta = _sub(dom, "metadata")
    ET.SubElement(meta, f"{{{VPOOL_NS}}}vm", managed="yes")
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.cpus))
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch=spec.arch, machine="pc")
    if spec.kernel:
        _sub(os_, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_, "cmdline", spec.cmdline)
    else:
        _sub(os_, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.virt_type == "qemu":
        # TCG's default 1 GiB translation cache costs RSS for nothing on small guests.
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", "32", unit="MiB")
        cpu = _sub(dom, "cpu", mode="custom", match="exact", check="none")
        _sub(cpu, "model", "qemu64", fallback="forbid")
    elif spec.virt_type == "kvm":
        cpu = _sub(dom, "cpu", mode="host-passthrough", check="none", migratable="on")
        # PVM-nested KVM rejects MSR 0x10a; hosts with real VMX/SVM do not miss it.
        _sub(cpu, "feature", policy="disable", name="arch-capabilities")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache="none", discard="unmap")
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    kind, _, net = spec.network.partition(":")
    iface = _sub(devices, "interface", type="bridge" if kind == "bridge" else "network")
    _sub(iface, "source", **({"bridge": net} if kind == "bridge" else {"network": net}))
    _sub(iface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    if spec.console_log:
        _sub(serial, "log", file=spec.console_log, append="off")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial")
    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def kernel_probe_xml(name: str, uuid: str, kernel: str) -> str:
    """A diskless KVM guest that boots `kernel` until it panics for want of a root file system
    and then ends (panic=-1 reboots, and a reboot destroys it): the remote twin of
    localhost.kernel_boots."""
    dom = ET.Element("domain", type="kvm")
    _sub(dom, "name", name)
    _sub(dom, "uuid", uuid)
    _sub(dom, "memory", "256", unit="MiB")
    _sub(dom, "vcpu", "1")
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_, "kernel", kernel)
    _sub(os_, "cmdline", "console=ttyS0 panic=-1")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _sub(dom, event, "destroy")
    devices = _sub(dom, "devices")
    _sub(devices, "serial", type="pty")
    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def is_managed(xml: str) -> bool:
    meta = ET.fromstring(xml).find(f"metadata/{{{VPOOL_NS}}}vm")
    return meta is not None and meta.get("managed") == "yes"


def volume_xml(name: str, capacity_bytes: int, fmt: str = "qcow2", backing: str | None = None,
               backing_format: str | None = None) -> str:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity_bytes), unit="bytes")
    _sub(vol, "allocation", "0", unit="bytes")  # thin: a new disk takes space only as the guest writes
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    if fmt == "qcow2":
        # libvirt 9.0 defaults to qcow2 v2 (compat 0.10), which cannot keep the persistent dirty
        # bitmaps that backup checkpoints need.
        _sub(target, "compat", "1.1")
    if backing:
        bs = _sub(vol, "backingStore")
        _sub(bs, "path", backing)
        _sub(bs, "format", type=backing_format or "qcow2")
    return ET.tostring(vol, encoding="unicode")


def dir_pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", name)
    target = _sub(pool, "target")
    _sub(target, "path", path)
    return ET.tostring(pool, encoding="unicode")


def isolated_network_xml(name: str, bridge: str, address: str, netmask: str,
                         dhcp_start: str, dhcp_end: str) -> str:
    """No <forward>: libvirt makes the network isolated, so guests reach nothing outside it."""
    net = ET.Element("network")
    _sub(net, "name", name)
    _sub(net, "bridge", name=bridge, stp="off", delay="0")
    ip = _sub(net, "ip", address=address, netmask=netmask)
    dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start=dhcp_start, end=dhcp_end)
    return ET.tostring(net, encoding="unicode")


def capabilities_facts(caps_xml: str) -> dict:
    """Host UUID, arch and the domain types (kvm/qemu) libvirt offers, from getCapabilities()."""
    root = ET.fromstring(caps_xml)
    virt_types = sorted({d.get("type") for d in root.iterfind("guest/arch/domain") if d.get("type")})
    return {
        "host_uuid": root.findtext("host/uuid") or "",
        "arch": root.findtext("host/cpu/arch") or "",
        "virt_types": virt_types,
    }


def domain_disk_paths(xml: str) -> list[str]:
    """The files of the domain's disks; CD-ROMs and floppies hold no disk of the VM's own."""
    root = ET.fromstring(xml)
    return [source.get("file") for disk in root.iterfind("devices/disk") if disk.get("device", "disk") == "disk"
            for source in disk.iterfind("source") if source.get("file")]


def direct_boot(xml: str) -> DirectBoot | None:
    os_ = ET.fromstring(xml).find("os")
    kernel = os_.findtext("kernel") if os_ is not None else None
    return DirectBoot(kernel, os_.findtext("initrd") or None, os_.findtext("cmdline") or None) if kernel else None


def domain_macs(xml: str) -> list[str]:
    return [m.get("address").lower() for m in ET.fromstring(xml).iterfind("devices/interface/mac") if m.get("address")]
