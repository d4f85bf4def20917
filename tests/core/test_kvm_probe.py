"""Whether guests get KVM is found out by booting a stock kernel under it, not assumed from
/dev/kvm: here (PVM nested KVM) the probe must say no, on a machine with working KVM yes, and
either way it must agree with the known PVM signature it backs up."""

import os
from pathlib import Path

import pytest

from vpool.hypervisor import localhost
from vpool.lab.tiny_image import build_tiny

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def kernel() -> Path:
    build_tiny()  # cached after the first build; its kernel is Debian's stock one
    found = localhost.probe_kernel()
    assert found is not None, "no kernel to probe with, though the tiny image is built"
    return found


def test_the_probe_boots_a_kernel_under_tcg(kernel):
    ok, detail = localhost.kernel_boots(kernel, "tcg", timeout=120)
    assert ok, detail
    assert "booted under tcg to its root mount" in detail


def test_the_kvm_probe_agrees_with_what_guests_get(kernel, monkeypatch):
    if not Path("/dev/kvm").exists() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm on this machine")
    monkeypatch.delenv("VPOOL_VIRT_TYPE", raising=False)
    pvm = localhost.known_not_to_boot()
    ok, detail = localhost.kernel_boots(kernel, "kvm")
    assert ok == (not pvm), detail
    # Without the PVM signature the answer comes from the probe alone, and is the same.
    monkeypatch.setattr(localhost, "known_not_to_boot", lambda: False)
    ok, why = localhost.kvm_boots_guests()
    assert ok == (not pvm), why
    assert ("booted under kvm" if ok else "does not boot under this machine's KVM") in why


def test_without_a_kernel_kvm_waits_for_the_tiny_image(monkeypatch):
    """`vpool serve --lab 0` builds the tiny image first exactly when the probe would otherwise
    take KVM on trust."""
    if os.uname().machine != "x86_64" or not Path("/dev/kvm").exists():
        pytest.skip("KVM is only probed on x86-64 machines with /dev/kvm")
    monkeypatch.delenv("VPOOL_VIRT_TYPE", raising=False)
    monkeypatch.setattr(localhost, "known_not_to_boot", lambda: False)
    monkeypatch.setattr(localhost, "probe_kernel", lambda: None)
    assert localhost.wants_probe_kernel()
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert "not tried" in localhost.kvm_boots_guests()[1]
    monkeypatch.setattr(localhost, "probe_kernel", lambda: Path("/boot/vmlinuz"))
    assert not localhost.wants_probe_kernel()
    monkeypatch.setattr(localhost, "probe_kernel", lambda: None)
    monkeypatch.setattr(localhost, "known_not_to_boot", lambda: True)
    assert not localhost.wants_probe_kernel()
