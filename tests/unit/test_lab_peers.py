"""Which VPN peers the lab runs (router/lab/kernel.py): the choice, and what the kernel offers."""

from __future__ import annotations

import pytest

from router.lab import kernel
from router.lab.kernel import Peers, detect
from router.lab.topology import LabError


def test_userspace_is_the_stand_in_and_libipsec_whatever_the_kernel_has(monkeypatch):
    monkeypatch.setattr(kernel, "has_ppp", lambda: True)
    monkeypatch.setattr(kernel, "has_esp", lambda: True)
    monkeypatch.setattr(kernel, "has_wireguard", lambda: True)
    assert detect("userspace") == Peers("stand-in", "libipsec", "wireguard-go")
    monkeypatch.setenv("VPNROUTER_LAB_PEERS", "userspace")
    assert detect() == Peers("stand-in", "libipsec")
    assert detect("auto") == Peers("pppd", "kernel", "kernel")  # an explicit choice wins over the environment


@pytest.mark.parametrize("module", [True, False])
def test_wireguard_is_the_kernels_where_it_has_the_module_and_wireguard_go_elsewhere(monkeypatch, module):
    """The kernel's PPP and ESP decide nothing about WireGuard, and "kernel" does not insist on it: wireguard-go
    speaks the same protocol on the wire."""
    monkeypatch.delenv("VPNROUTER_LAB_PEERS", raising=False)
    for probe in ("has_ppp", "has_esp"):
        monkeypatch.setattr(kernel, probe, lambda: True)
    monkeypatch.setattr(kernel, "has_wireguard", lambda: module)
    for choice in ("auto", "kernel"):
        peers = detect(choice)
        assert peers.kernel_wireguard is module
        assert ("the kernel's WireGuard" if module else "wireguard-go") in peers.describe()


@pytest.mark.parametrize("ppp,esp", [(True, True), (True, False), (False, True), (False, False)])
def test_auto_takes_what_the_kernel_has(monkeypatch, ppp, esp):
    monkeypatch.delenv("VPNROUTER_LAB_PEERS", raising=False)
    monkeypatch.setattr(kernel, "has_ppp", lambda: ppp)
    monkeypatch.setattr(kernel, "has_esp", lambda: esp)
    monkeypatch.setattr(kernel, "has_wireguard", lambda: False)
    peers = detect()
    assert peers.real_ppp is ppp and peers.kernel_esp is esp
    if ppp and esp:
        assert detect("kernel") == peers
    else:
        with pytest.raises(LabError, match="lacks"):
            detect("kernel")


def test_a_bad_choice_is_named(monkeypatch):
    monkeypatch.setenv("VPNROUTER_LAB_PEERS", "fast")
    with pytest.raises(LabError, match="'fast': one of auto, kernel, userspace"):
        detect()


def test_saved_state_round_trips_and_an_older_lab_ran_the_userspace_peers():
    peers = Peers("pppd", "kernel", "kernel")
    assert Peers.from_dict(peers.to_dict()) == peers
    assert Peers.from_dict(None) == Peers("stand-in", "libipsec", "wireguard-go")
    assert "MPPE" in peers.describe() and "stand-in" in Peers.from_dict({}).describe()


def test_no_ppp_where_dev_ppp_does_not_open(monkeypatch):
    """/dev/ppp may exist as a node without the driver behind it (ENODEV): that is no PPP."""
    def refuse(path, flags):
        raise OSError(19, "No such device", path)
    monkeypatch.setattr(kernel, "_modprobe", lambda *modules: None)
    monkeypatch.setattr(kernel.os, "open", refuse)
    assert kernel.has_ppp() is False


def test_a_missing_program_is_one_line_naming_its_package(monkeypatch):
    """`make demo` on a machine without kmod ended in a traceback from modprobe; now the lab names the package."""
    from router.lab import tools
    tools.installed.cache_clear()
    monkeypatch.setattr(tools.shutil, "which", lambda program: None if program == "modprobe" else f"/bin/{program}")
    monkeypatch.delenv("VPNROUTER_LAB_PEERS", raising=False)
    try:
        with pytest.raises(LabError) as refused:
            detect()
        assert str(refused.value) == ("modprobe is not installed: it comes with the Debian package kmod (apt-get "
                                      "install kmod; `make deps` installs everything the lab needs)")
        assert detect("userspace") == Peers("stand-in", "libipsec")       # which needs no module
    finally:
        tools.installed.cache_clear()


def test_every_program_the_lab_names_comes_with_a_package_the_makefile_installs():
    from pathlib import Path
    from router.lab import tools
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    debs = makefile.split("DEBS :=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split()
    assert set(tools.PACKAGES.values()) <= set(debs), set(tools.PACKAGES.values()) - set(debs)
    assert set(tools.SERVERS) | {p for ps in tools.CLIENTS.values() for p in ps} <= set(tools.PACKAGES)
