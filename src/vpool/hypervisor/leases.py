"""Guest addresses from DHCP lease files, for guests on plain bridges.

libvirt knows leases only for guests on its own networks; a guest on a bridge (the lab's
shared L2, or an operator's bridge with its own DHCP server) is found by its MAC in the lease
file of the DHCP server that serves that bridge (dnsmasq's format: expiry mac ip name id)."""

from pathlib import Path


def parse_dnsmasq(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].count(":") == 5:
            out[fields[1].lower()] = fields[2]
    return out


def lookup(files: tuple[Path, ...], macs: list[str]) -> str | None:
    for path in files:
        try:
            known = parse_dnsmasq(path.read_text())
        except OSError:
            continue
        for mac in macs:
            if mac in known:
                return known[mac]
    return None
