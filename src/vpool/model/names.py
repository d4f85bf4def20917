"""Names and sizes as people type them, checked before anything reaches libvirt or a path."""

import re

from vpool.model.errors import Invalid

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SIZE_RE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?\s*", re.IGNORECASE)
_MIB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


def check_name(name: str, what: str = "name") -> str:
    """Names become libvirt domain names, file names and URL segments, so they are kept plain."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise Invalid(
            f"{what} {name!r} is not allowed: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_size_mib(text: str | int, what: str = "size", default_unit: str = "M") -> int:
    """'1G', '512M', '512MiB', '2T' or a bare number (in default_unit) -> MiB, rounded up."""
    if isinstance(text, int):
        value, unit = float(text), default_unit
    else:
        m = _SIZE_RE.fullmatch(str(text))
        if not m:
            raise Invalid(f"{what} {text!r} is not a size: write it like 512M, 1G or 10G")
        value, unit = float(m.group(1)), (m.group(2) or default_unit).upper()
    mib = value * _MIB_PER_UNIT[unit]
    if mib <= 0:
        raise Invalid(f"{what} must be positive, got {text!r}")
    if mib == float("inf"):  # 400 digits: float() gives up, and int() of it fails
        raise Invalid(f"{what} {text!r} is larger than any host vpool can manage")
    return max(1, int(-(-mib // 1)))


def parse_size_gib(text: str | int, what: str = "size") -> int:
    """Disk sizes are whole GiB: '10G' -> 10, '500M' -> 1 (rounded up), bare numbers are GiB."""
    mib = parse_size_mib(text, what, default_unit="G")
    return max(1, -(-mib // 1024))
