import pytest

from vpool.model.errors import Invalid
from vpool.model.names import check_name, parse_size_gib, parse_size_mib
from vpool.model.resources import Resources


@pytest.mark.parametrize("name", ["a", "web-1", "db.eu_2", "A" * 63, "9lives"])
def test_good_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "a</name><devices>", "../etc", "a/b", "A" * 64, "é", "a;rm"])
def test_bad_names_are_refused_with_the_rule(name):
    with pytest.raises(Invalid, match="letters, digits"):
        check_name(name)


@pytest.mark.parametrize("text,mib", [("1G", 1024), ("512M", 512), ("512MiB", 512), ("1.5G", 1536), (256, 256),
                                      ("2T", 2 * 1024 * 1024), ("1024K", 1)])
def test_sizes(text, mib):
    assert parse_size_mib(text) == mib


def test_disk_sizes_are_whole_gib():
    assert parse_size_gib("10G") == 10
    assert parse_size_gib("500M") == 1
    assert parse_size_gib(20) == 20


@pytest.mark.parametrize("text", ["-1G", "0", "lots", "1X", "", "9" * 400 + "G"])
def test_bad_sizes(text):
    with pytest.raises(Invalid):
        parse_size_mib(text)


def test_resources_must_be_possible():
    with pytest.raises(Invalid, match="cpus"):
        Resources(0, 512, 1).check()
    with pytest.raises(Invalid, match="larger than any host"):
        Resources(1, 512, 10**9).check()
