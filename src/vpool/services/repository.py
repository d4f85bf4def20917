"""Backup repositories: where backup files live, behind an interface an object store can implement.

Objects are written whole or not at all: a writer that fails or is abandoned leaves nothing
under its key, so a half-written backup can never be mistaken for a finished one. Each object
is checksummed (SHA-256) as it is written, and re-read to verify.
"""

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
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

    def adopt(self, key: str, source: Path, progress: Callable[[int, int], None] | None = None) -> Written:
        """Takes a file on this machine whole as the object; the source is gone once it is in."""
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
    """Checksums what passes through to a file (or, with ``hash_only``, what is only read)."""

    def __init__(self, fh):
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        return self.hash_only(data)

    def hash_only(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def _pump(src, sink: Callable[[bytes], int], total: int = 0,
          progress: Callable[[int, int], None] | None = None) -> None:
    done = 0
    while chunk := src.read(CHUNK):
        sink(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)


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

    def adopt(self, key: str, source: Path, progress: Callable[[int, int], None] | None = None) -> Written:
        """A rename when the source is on the repository's file system, so the bytes are read
        once (to hash them) instead of copied; a copy otherwise. All or nothing, like writer."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        total = Path(source).stat().st_size
        try:
            try:
                os.rename(source, partial)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                with self.writer(key) as (sink, record), open(source, "rb") as src:
                    _pump(src, sink.write, total, progress)
                os.unlink(source)
                return record
            sink = _HashingFile(None)
            with open(partial, "rb") as fh:
                _pump(fh, sink.hash_only, total, progress)
                os.fsync(fh.fileno())
            os.replace(partial, path)
            return Written(sink.size, sink.hash.hexdigest())
        finally:
            partial.unlink(missing_ok=True)

    def fetch(self, key: str, dest: Path) -> str:
        with open(self._path(key), "rb") as src, open(dest, "wb") as out:
            copied = _HashingFile(out)
            _pump(src, copied.write)
        return copied.hash.hexdigest()

    def digest(self, key: str) -> str:
        read = _HashingFile(None)
        with open(self._path(key), "rb") as src:
            _pump(src, read.hash_only)
        return read.hash.hexdigest()

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
