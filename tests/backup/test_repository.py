import errno
import hashlib
import os

import pytest

from vpool.model.errors import Invalid
from vpool.services.repository import DirectoryRepository


def test_objects_are_checksummed_as_written_and_fetched(tmp_path):
    repo = DirectoryRepository(tmp_path / "repo")
    data = b"qcow2" * 300000
    with repo.writer("vm1/chain/000001-vda.qcow2") as (sink, written):
        sink.write(data[:1000])
        sink.write(data[1000:])
    assert written.sha256 == hashlib.sha256(data).hexdigest() and written.size == len(data)
    assert repo.digest("vm1/chain/000001-vda.qcow2") == written.sha256
    assert repo.fetch("vm1/chain/000001-vda.qcow2", tmp_path / "out") == written.sha256
    repo.delete("vm1/chain/000001-vda.qcow2")
    assert not repo.exists("vm1/chain/000001-vda.qcow2") and not (tmp_path / "repo" / "vm1").exists()


def test_a_write_that_fails_leaves_nothing_under_the_key(tmp_path):
    repo = DirectoryRepository(tmp_path / "repo")
    with pytest.raises(OSError):
        with repo.writer("vm1/c/1.qcow2") as (sink, _written):
            sink.write(b"x" * 1000)
            raise OSError(28, "No space left on device")
    assert not [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "a/../../b", "a//b", "./a"])
def test_keys_cannot_leave_the_repository(tmp_path, key):
    with pytest.raises(Invalid):
        DirectoryRepository(tmp_path).exists(key)


@pytest.mark.parametrize("same_file_system", [True, False])
def test_a_local_file_is_adopted_whole_and_checksummed(tmp_path, monkeypatch, same_file_system):
    repo = DirectoryRepository(tmp_path / "repo")
    source = tmp_path / "staged.qcow2"
    data = bytes(range(256)) * 40000  # 10 MB: more than one chunk
    source.write_bytes(data)
    if not same_file_system:
        def cross_device(src, dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(os, "rename", cross_device)
    seen = []
    written = repo.adopt("vm1/c/000001-vda.qcow2", source, lambda done, total: seen.append((done, total)))
    assert written.sha256 == hashlib.sha256(data).hexdigest() and written.size == len(data)
    assert repo.digest("vm1/c/000001-vda.qcow2") == written.sha256
    assert not source.exists() and seen[-1] == (len(data), len(data))


def test_an_adoption_that_fails_leaves_nothing_under_the_key(tmp_path):
    repo = DirectoryRepository(tmp_path / "repo")
    source = tmp_path / "staged.qcow2"
    source.write_bytes(b"x" * 10_000_000)

    def disk_fails(done, total):
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        repo.adopt("vm1/c/1.qcow2", source, disk_fails)
    assert not [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
