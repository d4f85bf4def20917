"""Backup repositories: where backup files live, behind an interface an object store can implement.

Objects are written whole or not at all: a writer that fails or is abandoned leaves nothing
under its key, so a half-written backup can never be mistaken for a finished one. Each object
is checksummed (SHA-256) as it is written, and re-read to verify.
"""

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vpool.model.errors import Invalid

CHUNK = 4 * 2**20


@dataclass
class Written:
    size: int = 0
    sha256: str = ""


class Writer(Protocol):
    def write(self, data: bytes) -> int: ...


class Repository(Protocol):
    location: str

    @contextmanager
    def writer(self, key: str) -> Iterator[tuple[Writer, Written]]:
        """Yields a sink and the record it fills in (size, sha256) once the block ends cleanly."""
        ...

    def fetch(self, key: str, dest: Path) -> str:
        """Copies the object to a local file; returns the SHA-256 of what was copied."""
        ...

    def digest(self, key: str) -> str: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Invalid(f"{key!r} is not a repository key")
    return key


class _HashingFile:
    def __init__(self, fh):
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


class DirectoryRepository:
    """A directory (local disk, or any mounted file system) holding one file per object."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def writer(self, key: str) -> Iterator[tuple[Writer, Written]]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        record = Written()
        try:
            with open(partial, "wb") as fh:
                sink = _HashingFile(fh)
                yield sink, record
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, path)
            record.size, record.sha256 = sink.size, sink.hash.hexdigest()
        finally:
            partial.unlink(missing_ok=True)

    def fetch(self, key: str, dest: Path) -> str:
        h = hashlib.sha256()
        with open(self._path(key), "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        return h.hexdigest()

    def digest(self, key: str) -> str:
        h = hashlib.sha256()
        with open(self._path(key), "rb") as src:
            while chunk := src.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop directories the last object of a chain leaves empty
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


def default_repository(data_dir: Path) -> DirectoryRepository:
    """VPOOL_BACKUP_DIR, else backups/ under the control plane's data directory."""
    return DirectoryRepository(Path(os.environ.get("VPOOL_BACKUP_DIR") or data_dir / "backups").expanduser())
