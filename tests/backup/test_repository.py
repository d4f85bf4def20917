import hashlib

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
