"""``[nat]`` behaviour as RFC 5780 discovery sees it from the WAN (issue 10, RFC 4787).

coturn's ``turnutils_natdiscovery`` on a LAN client asks ``turnserver --stun-only``
on a WAN server with two addresses (tests/integration/natdiscovery.py):

    nd-c1 192.168.77.11 ── vpnrouter 192.168.77.1 / 198.51.100.1 ──┐
    nd-c2 192.168.77.12 ── Linux NAT (nd-kr) .254 / .254 ───────────┼── nd-s1 198.51.100.10 + .11  STUN
                                                                    └── nd-s2 198.51.100.20  no NAT before it

The host without NAT and Linux's masquerade are measured too: they show the
harness tells the behaviours apart, and the second is the evidence for the
"linux" profile.  Each setting gets a fresh router process.
"""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager

import pytest

from router.lab.topology import Lab, sh
from tests.integration.conftest import lab_for
from tests.integration.natdiscovery import FILTERINGS, MAPPINGS, DiscoveryError, StunServer, discover, parse

STUN, STUN_ALT = "198.51.100.10", "198.51.100.11"
NO_NAT_HOST = "198.51.100.20"
C1, C2 = "192.168.77.11", "192.168.77.12"
WAN = "198.51.100.1"
KERNEL_LAN, KERNEL_WAN = "192.168.77.254", "198.51.100.254"
PORT_ASSIGNMENTS = ("preserve", "sequential", "random")

PORTS = itertools.count(20001, 7)
"""Local ports, each used once and none next to another, below Linux's ephemeral range."""


def kernel_nat(lab: Lab, client: str) -> None:
    """Linux's NAT beside the router on the same bridges, on addresses of its own; ``client`` routes through it.
    ``lab.down()`` removes it with the lab's namespaces."""
    lab.kernel_nat(KERNEL_LAN, KERNEL_WAN)
    sh("ip", "route", "replace", "default", "via", KERNEL_LAN, ns=client)


@pytest.fixture(scope="module")
def nat_lab():
    with lab_for("nd", clients=2, servers=2, router=False) as lab:      # each test starts its own
        kernel_nat(lab, lab.client(2))
        with StunServer(lab.server(1), STUN, STUN_ALT, lab.state_dir / "stun"):
            yield lab


@contextmanager
def router(lab: Lab, **nat):
    """The router with these ``[nat]`` keys, for the length of the block."""
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in nat.items())   # as JSON: TOML's strings, bools
    lab.start_router(extra_config=f"[nat]\n{table}")
    try:
        yield
    finally:
        lab.stop_router()


def behind_router(lab: Lab, test: str):
    """Discover ``test`` from nd-c1 through the router; it must have translated to the WAN address."""
    result = discover(test, lab.client(1), STUN, (C1, next(PORTS)))
    assert result.translated and result.mapped[0] == WAN, result.output
    return result


# -- the harness, against behaviours we know --------------------------------------------------------

def test_without_nat_everything_is_endpoint_independent(nat_lab):
    results = {test: discover(test, nat_lab.server(2), STUN, (NO_NAT_HOST, next(PORTS)))
               for test in ("mapping", "filtering", "hairpinning")}
    assert {test: (r.behaviour, r.translated) for test, r in results.items()} == {
        "mapping": ("endpoint-independent", False), "filtering": ("endpoint-independent", False),
        "hairpinning": (True, False)}


def test_linux_masquerade_is_endpoint_independent_with_port_dependent_filtering(nat_lab):
    """nftables masquerade: conntrack lets in replies only from the endpoint sent to; no hairpinning; ports kept."""
    results = {test: discover(test, nat_lab.client(2), STUN, (C2, next(PORTS)))
               for test in ("mapping", "filtering", "hairpinning")}
    assert {test: r.behaviour for test, r in results.items()} == {
        "mapping": "endpoint-independent", "filtering": "address-and-port-dependent", "hairpinning": False}
    assert all(r.translated and r.mapped == (KERNEL_WAN, r.local[1]) for r in results.values())


# -- the router -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mapping", MAPPINGS)
def test_mapping(nat_lab, mapping):
    """RFC 4787 §4.1, measured as RFC 5780 §4.3 does."""
    with router(nat_lab, mapping=mapping):
        assert behind_router(nat_lab, "mapping").behaviour == mapping


@pytest.mark.parametrize("filtering", FILTERINGS)
def test_filtering(nat_lab, filtering):
    """RFC 4787 §5, measured as RFC 5780 §4.4 does."""
    with router(nat_lab, filtering=filtering):
        assert behind_router(nat_lab, "filtering").behaviour == filtering


@pytest.mark.parametrize("hairpinning", (True, False))
def test_hairpinning(nat_lab, hairpinning):
    """RFC 4787 §6, RFC 5780 §4.5.  The hairpinned request is unsolicited for its mapping: filtering is open."""
    with router(nat_lab, hairpinning=hairpinning, filtering="endpoint-independent"):
        assert behind_router(nat_lab, "hairpinning").behaviour is hairpinning


def test_the_linux_profile_behaves_as_linux_masquerade_measured(nat_lab):
    """The "linux" profile against the kernel's NAT beside it, by the same discovery (README's profile table)."""
    linux = {test: discover(test, nat_lab.client(2), STUN, (C2, next(PORTS))).behaviour
             for test in ("mapping", "filtering", "hairpinning")}
    with router(nat_lab, profile="linux"):
        ours = {test: behind_router(nat_lab, test).behaviour for test in ("mapping", "filtering", "hairpinning")}
    assert ours == linux


@pytest.mark.parametrize("assignment", PORT_ASSIGNMENTS)
def test_port_assignment(nat_lab, assignment):
    """RFC 4787 §4.2.1, RFC 6056: two new mappings from free, non-adjacent client ports; the ports the server sees."""
    with router(nat_lab, port_assignment=assignment):
        first, second = behind_router(nat_lab, "mapping"), behind_router(nat_lab, "mapping")
    seen = [first.mapped[1], second.mapped[1]]
    own = [first.local[1], second.local[1]]
    if assignment == "preserve":
        assert seen == own
    elif assignment == "sequential":
        assert seen[0] != own[0] and seen[1] == seen[0] + 1, (own, seen)
    else:
        assert seen[0] != own[0] and seen[1] not in (own[1], seen[0] + 1), (own, seen)


# -- the reading of natdiscovery's output ----------------------------------------------------------------

STALE = """
-= Mapping Behavior Discovery =-

========================================
RFC 5780 response 1
No ALG: Mapped == XOR-Mapped
0: : IPv4. Response origin: : 198.51.100.10:3478
0: : IPv4. Response origin: : 198.51.100.10:3478
0: : IPv4. Other addr: : 198.51.100.11:3479
0: : IPv4. UDP reflexive addr: 198.51.100.1:21057
0: : IPv4. Local addr: : 192.168.77.11:21057
STUN receive timeout..

========================================
NAT with Endpoint Independent Mapping!
========================================
"""
"""What coturn 4.6.1 printed when the request to the alternate address went unanswered (a Linux NAT out of ports)."""


def test_a_verdict_the_responses_do_not_show_is_refused():
    """After a timeout natdiscovery compares a stale address and says "Endpoint Independent"."""
    with pytest.raises(DiscoveryError, match="responses from"):
        parse("mapping", STALE, STUN)
    assert parse("mapping", STALE.replace("STUN receive timeout..", """
========================================
RFC 5780 response 2
No ALG: Mapped == XOR-Mapped
0: : IPv4. Response origin: : 198.51.100.11:3478
0: : IPv4. Other addr: : 198.51.100.11:3479
0: : IPv4. UDP reflexive addr: 198.51.100.1:21057
0: : IPv4. Local addr: : 192.168.77.11:21057"""), STUN).behaviour == "endpoint-independent"
