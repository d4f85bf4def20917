import xml.etree.ElementTree as ET

import pytest

from vpool.hypervisor.domain_xml import (DirectBoot, DomainSpec, dimm_xml, direct_boot, domain_xml, hotplug_room,
                                         is_managed, memory_mib, resized, volume_xml)
from vpool.model.errors import Conflict
from vpool.model.hotplug import Room, refusal


def test_a_running_vm_only_grows_and_only_into_its_room():
    room = Room(max_cpus=8, max_memory_mib=4096, free_slots=1)
    assert refusal("w", (1, 4), (1024, 1536), room) is None
    assert refusal("w", (1, 1), (1024, 1024 + 4096), room).startswith("VM w has room for 4096 MiB")
    assert "cannot give vCPUs or memory back" in refusal("w", (2, 1), (1024, 2048), room)
    assert "cannot give vCPUs or memory back" in refusal("w", (2, 2), (1024, 512), room)
    assert refusal("w", (1, 9), (1024, 1024), room).startswith("VM w has room for 8 vCPUs while it runs, not 9")
    assert "ask for 1152 MiB" in refusal("w", (1, 1), (1024, 1100), room)
    assert "used all its memory slots" in refusal("w", (1, 1), (1024, 1152), Room(8, 4096, 0))
    assert "no room to add memory while it runs: vpool gives that room to VMs of 3584 MiB and more" \
        in refusal("w", (1, 1), (1024, 1152), Room(8, 1024, 0))
    assert "defined without room for more vCPUs; stop w and resize it once" in refusal("w", (2, 3), (1, 1), Room(2, 1, 0))
    assert refusal("w", (2, 2), (1024, 1024), Room(2, 1024, 0)) is None  # nothing to plug, nothing to refuse
    tcg = Room(8, 4096, 1, vcpus_live=False)
    assert "runs under QEMU's emulator (TCG), where a vCPU plugged" in refusal("w", (1, 2), (1024, 1024), tcg)
    assert refusal("w", (1, 1), (1024, 1152), tcg) is None  # its memory still grows live


def spec(**kw):
    base = dict(name="web1", uuid="6b1a3f0e-1111-4222-8333-444455556666", cpus=2, memory_mib=1024,
                virt_type="qemu", disk_path="/pool/vm-web1.qcow2", network="network:vpool")
    return DomainSpec(**{**base, **kw})


def test_markup_in_values_stays_text():
    evil = "a</name><devices><disk>"
    root = ET.fromstring(domain_xml(spec(name=evil, cmdline="x' y</cmdline>", kernel="/k")))
    assert root.findtext("name") == evil
    assert len(root.findall("devices/disk")) == 1
    assert root.findtext("os/cmdline") == "x' y</cmdline>"


def test_tcg_guests_get_a_small_translation_cache_and_a_portable_cpu():
    root = ET.fromstring(domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.find("features/tcg/tb-cache").text == "32"
    assert root.find("cpu/model").text == "qemu64"


def test_kvm_guests_pass_the_host_cpu_through():
    root = ET.fromstring(domain_xml(spec(virt_type="kvm")))
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("features/tcg") is None


def test_bridge_and_network_nics():
    assert ET.fromstring(domain_xml(spec(network="bridge:labbr0"))).find("devices/interface/source").get("bridge") == "labbr0"
    assert ET.fromstring(domain_xml(spec())).find("devices/interface/source").get("network") == "vpool"


def test_vpool_marks_its_own_domains():
    assert is_managed(domain_xml(spec()))
    assert not is_managed("<domain type='qemu'><name>x</name></domain>")


def test_overlay_volume_names_its_backing_image():
    root = ET.fromstring(volume_xml("vm-a.qcow2", 10 * 2**30, "qcow2", "/pool/img-tiny.qcow2", "qcow2"))
    assert root.findtext("backingStore/path") == "/pool/img-tiny.qcow2"
    assert root.find("target/format").get("type") == "qcow2"


def test_a_direct_kernel_boot_reads_back_from_the_domain():
    xml = domain_xml(spec(kernel="/pool/k", initrd="/pool/i", cmdline="console=ttyS0 lab.host=web1"))
    assert direct_boot(xml) == DirectBoot("/pool/k", "/pool/i", "console=ttyS0 lab.host=web1")
    assert direct_boot(domain_xml(spec())) is None  # a boot loader on the disk


def test_every_vm_is_defined_with_room_to_grow_while_it_runs():
    small = ET.fromstring(domain_xml(spec(cpus=2, memory_mib=1000)))
    assert (small.find("vcpu").text, small.find("vcpu").get("current")) == ("8", "2")
    assert small.find("maxMemory") is None and small.find("cpu/numa") is None  # memory room would cost it 64 MiB
    assert small.find("memory").text == "1000" and small.find("cpu/model").text == "qemu64"
    assert hotplug_room(domain_xml(spec())) == Room(8, 1024, 0, vcpus_live=False)  # its memory is its ceiling
    assert hotplug_room(domain_xml(spec(virt_type="kvm"))) == Room(8, 1024, 0)  # vCPUs plug live but under TCG
    big = ET.fromstring(domain_xml(spec(cpus=2, memory_mib=4000)))
    assert (big.find("maxMemory").text, big.find("maxMemory").get("slots")) == ("16000", "16")
    assert big.find("cpu/numa/cell").attrib == {"id": "0", "cpus": "0-7", "memory": "4000", "unit": "MiB"}
    assert big.find("cpu/model").text == "qemu64"                # the cell joins the CPU model, not replaces it
    assert ET.fromstring(domain_xml(spec(virt_type="test"))).find("cpu") is None


def test_a_stopped_vm_is_redefined_with_its_dimms_folded_into_its_memory():
    running = ET.fromstring(domain_xml(spec(cpus=1, memory_mib=4096)))
    devices = running.find("devices")
    for _ in range(2):
        devices.append(ET.fromstring(dimm_xml(128)))
    running.find("memory").text = str(4352 * 1024)  # libvirt writes KiB
    running.find("memory").set("unit", "KiB")
    xml = ET.tostring(running, encoding="unicode")
    assert hotplug_room(xml) == Room(8, 16384, 14, vcpus_live=False) and memory_mib(xml) == 4352
    root = ET.fromstring(resized(xml, 2, 3840))
    assert root.find("devices/memory") is None and root.find("devices/disk") is not None
    assert memory_mib(ET.tostring(root, encoding="unicode")) == 3840
    assert root.find("cpu/numa/cell").get("memory") == "3840" and len(root.findall("cpu/numa")) == 1
    assert (root.find("vcpu").text, root.find("vcpu").get("current")) == ("8", "2")
    assert hotplug_room(ET.tostring(root, encoding="unicode")) == Room(8, 15360, 16, vcpus_live=False)
    small = ET.fromstring(resized(xml, 1, 1024))           # below the free room: no memory room
    assert small.find("maxMemory") is None and small.find("cpu/numa/cell").get("memory") == "1024"


def test_a_vm_defined_elsewhere_gets_room_at_its_first_resize_and_keeps_its_topology():
    adopted = ("<domain type='kvm'><name>old</name><memory unit='KiB'>1048576</memory><vcpu>2</vcpu>"
               "<cpu mode='host-model'><topology sockets='1' cores='2' threads='1'/></cpu><devices/></domain>")
    assert hotplug_room(adopted) == Room(2, 1024, 0) and memory_mib(adopted) == 1024
    root = ET.fromstring(resized(adopted, 3, 1024))
    assert root.find("cpu/topology").attrib == {"sockets": "6", "cores": "2", "threads": "1"}
    assert (root.find("vcpu").text, root.find("vcpu").get("current")) == ("12", "3")  # four times its size
    assert root.find("cpu").get("mode") == "host-model"
    one_node = adopted.replace("</cpu>", "<numa><cell id='0' cpus='0-1' memory='1024' unit='MiB'/></numa></cpu>")
    assert ET.fromstring(resized(one_node, 3, 2048)).find("cpu/numa/cell").attrib == {
        "id": "0", "cpus": "0-11", "memory": "2048", "unit": "MiB"}         # holds every vCPU and all the memory
    two_nodes = adopted.replace("</cpu>", "<numa><cell id='0' cpus='0' memory='512' unit='MiB'/>"
                                          "<cell id='1' cpus='1' memory='512' unit='MiB'/></numa></cpu>")
    with pytest.raises(Conflict, match="defines 2 NUMA nodes"):
        resized(two_nodes, 2, 2048)
    nvdimm = adopted.replace("<devices/>", "<devices><memory model='nvdimm'><source><path>/pmem</path></source>"
                                           "<target><size unit='MiB'>512</size><node>0</node></target></memory>"
                                           "</devices>")
    with pytest.raises(Conflict, match="has nvdimm memory devices"):  # its backing file is not lost
        resized(nvdimm, 2, 2048)
