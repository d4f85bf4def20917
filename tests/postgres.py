"""A throw-away PostgreSQL server from Debian's package, on loopback, for the tests that need one."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian package 'postgresql'; make test installs it)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server():
    """Yields a SQLAlchemy URL; the server and its files are gone afterwards."""
    root = Path(tempfile.mkdtemp(prefix="vpool-pg-"))
    data, port = root / "data", _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    try:
        subprocess.run([*as_postgres, _bin("initdb"), "-D", str(data), "-A", "trust", "-U", "vpool"],
                       check=True, capture_output=True)
        subprocess.run([*as_postgres, _bin("pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                        "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://vpool@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, _bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
