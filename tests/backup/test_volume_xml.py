import xml.etree.ElementTree as ET

from vpool.hypervisor.domain_xml import volume_xml


def test_qcow2_volumes_are_v3_so_they_can_hold_checkpoint_bitmaps():
    root = ET.fromstring(volume_xml("vm-a.qcow2", 2**30, "qcow2", "/pool/img-tiny.qcow2", "qcow2"))
    assert root.findtext("target/compat") == "1.1"


def test_raw_volumes_have_no_qcow2_compat_level():
    assert ET.fromstring(volume_xml("img.kernel", 4096, "raw")).find("target/compat") is None
