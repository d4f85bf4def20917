import xml.etree.ElementTree as ET

from vpool.hypervisor.domain_xml import DirectBoot, DomainSpec, direct_boot, domain_xml, is_managed, volume_xml


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
