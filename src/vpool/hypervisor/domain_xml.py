"""libvirt XML built with ElementTree: a name such as `a</name><devices>` stays text, never markup."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vpool.model.errors import Conflict
from vpool.model.hotplug import Room, room

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
    _set_size(dom, spec.cpus, spec.memory_mib)
    return ET.tostring(dom, encoding="unicode")


def resize_refusal(xml: str) -> str | None:
    """Why vpool will not rewrite a stopped domain's size, or None. Added memory is folded into
    the boot memory, which only works for DIMMs: other memory devices (nvdimm, virtio-mem,
    virtio-pmem) hold a backing file or a size of their own, and would be lost. Hot-plug room
    needs one NUMA cell holding every vCPU, which vpool cannot make out of several."""
    dom = ET.fromstring(xml)
    if others := sorted({m.get("model", "?") for m in dom.iterfind("devices/memory")} - {"dimm"}):
        return (f"it has {', '.join(others)} memory devices, and vpool resizes VMs whose added memory is DIMMs: "
                "change its size with virsh edit")
    if (cells := len(dom.findall("cpu/numa/cell"))) > 1:
        return f"it defines {cells} NUMA nodes, and vpool resizes VMs with one: change its size with virsh edit"
    return None


def resized(xml: str, cpus: int, memory_mib: int) -> str:
    """A stopped domain's definition at a new size, with fresh hot-plug room: memory added while
    it ran (DIMMs) is folded into its boot memory, which frees the slots."""
    if why := resize_refusal(xml):
        raise Conflict(f"cannot resize the VM: {why}")
    dom = ET.fromstring(xml)
    devices = dom.find("devices")
    for dimm in devices.findall("memory") if devices is not None else []:
        devices.remove(dimm)
    _set_size(dom, cpus, memory_mib)
    return ET.tostring(dom, encoding="unicode")


def _set_size(dom: ET.Element, cpus: int, memory_mib: int) -> None:
    """Boot vCPUs and memory, and room to grow (model.hotplug): the vCPU maximum and, for memory,
    a ceiling with DIMM slots and the one NUMA cell qemu needs before it takes a DIMM."""
    have = room(cpus, memory_mib)
    for tag in ("maxMemory", "memory", "currentMemory", "vcpu", "vcpus"):
        for el in dom.findall(tag):
            dom.remove(el)
    if have.free_slots:
        _sub(dom, "maxMemory", str(have.max_memory_mib), unit="MiB", slots=str(have.free_slots))
    _sub(dom, "memory", str(memory_mib), unit="MiB")
    max_cpus = have.max_cpus
    cpu = dom.find("cpu")
    if cpu is None:
        cpu = _sub(dom, "cpu")
    if (topology := cpu.find("topology")) is not None:  # its product must be the vCPU maximum
        per_socket = int(topology.get("dies", "1")) * int(topology.get("cores", "1")) * int(topology.get("threads", "1"))
        sockets = -(-max_cpus // per_socket)
        topology.set("sockets", str(sockets))
        max_cpus = sockets * per_socket
    _sub(dom, "vcpu", str(max_cpus), current=str(cpus))
    if (numa := cpu.find("numa")) is not None:  # its one cell (resize_refusal) must hold every vCPU and all memory
        cpu.remove(numa)
    if numa is not None or have.free_slots:
        _sub(_sub(cpu, "numa"), "cell", id="0", cpus=f"0-{max_cpus - 1}", memory=str(memory_mib), unit="MiB")
    if not len(cpu) and not cpu.attrib:
        dom.remove(cpu)


def dimm_xml(memory_mib: int) -> str:
    """Memory a running guest is given: one DIMM in the NUMA cell every vpool definition has."""
    dimm = ET.Element("memory", model="dimm")
    target = _sub(dimm, "target")
    _sub(target, "size", str(memory_mib), unit="MiB")
    _sub(target, "node", "0")
    return ET.tostring(dimm, encoding="unicode")


_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "KiB": 1, "KB": 1000 / 1024, "M": 1024, "MiB": 1024,
        "MB": 1e6 / 1024, "G": 2**20, "GiB": 2**20, "GB": 1e9 / 1024, "T": 2**30, "TiB": 2**30, "TB": 1e12 / 1024}


def _mib(el: ET.Element | None) -> int:
    return 0 if el is None or not el.text else int(float(el.text) * _KIB[el.get("unit", "KiB")]) // 1024


def memory_mib(xml: str) -> int:
    """The memory a domain has, DIMMs included (libvirt's <memory> is the total)."""
    return _mib(ET.fromstring(xml).find("memory"))


def hotplug_room(xml: str) -> Room:
    """The room a (running) domain's definition left it: what vpool defines, or none on a VM
    defined elsewhere or before vpool gave room."""
    dom = ET.fromstring(xml)
    max_cpus = int(dom.findtext("vcpu") or 1)
    vcpus_live = dom.get("type") != "qemu"  # TCG: see model.hotplug
    if (ceiling := dom.find("maxMemory")) is None:
        return Room(max_cpus, _mib(dom.find("memory")), 0, vcpus_live)
    used = sum(1 for m in dom.iterfind("devices/memory") if m.get("model") in ("dimm", "nvdimm"))
    return Room(max_cpus, _mib(ceiling), int(ceiling.get("slots", "0")) - used, vcpus_live)


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
