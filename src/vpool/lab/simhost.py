"""Simulated hosts on libvirt's test driver, for fast tests and API benchmarks.

`test:///default` is one shared in-process host; each file written here opens as a host of
its own, with the size asked for, so a pool of several simulated hosts can be registered.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

from vpool.hypervisor.libvirt_driver import STORAGE_MARK
from vpool.model.names import check_name


def write_sim_host(directory: Path, name: str, cpus: int = 32, memory_mib: int = 131072,
                   storage: str | None = None) -> str:
    """Writes the node file and returns its libvirt URI (test:///<path>).

    Each host's pool is its own; hosts written with the same `storage` find the same storage
    marker in it, as hosts mounting one shared storage would."""
    check_name(name, "host name")
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (("mhz", 2000), ("model", "x86_64"), ("active", cpus), ("nodes", 1), ("sockets", 1),
                       ("cores", cpus), ("threads", 1)):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_mib * 1024)
    net = ET.SubElement(node, "network")
    ET.SubElement(net, "name").text = "default"
    ET.SubElement(net, "bridge", name="virbr0")
    pool = ET.SubElement(node, "pool", type="dir")
    ET.SubElement(pool, "name").text = "default-pool"
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = "/default-pool"
    if storage is not None:
        mark = ET.SubElement(pool, "volume")
        ET.SubElement(mark, "name").text = STORAGE_MARK + storage
        ET.SubElement(mark, "capacity").text = "0"
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / f"{name}.xml").resolve()
    path.write_text(ET.tostring(node, encoding="unicode"))
    return f"test://{path}"
