"""The lab's softwire end (router/lab/softwire.py) as a MAP-E BR and as a DS-Lite AFTR, in real namespaces.

No router here: a namespace ``swt-ce`` on br-v6 plays the CE or B4 with raw IPv4-in-IPv6 sockets (the
router's WAN address 2001:db8:ffff::2, and the CE's MAP address), and the lab's server answers over UDP or
with its kernel's ICMP.  Every packet that comes back is taken apart with scapy, its checksums recomputed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from router.lab import softwire
from router.lab.softwire import (ACCESS_BRIDGE, AFTR, BR, END_USER_PREFIX, EA_BITS, GATEWAY4, PSID_OFFSET,
                                 ROUTER_LINK6, RULE_IPV4_PREFIX, RULE_IPV6_PREFIX, TUN_MTU, TUN_NAME, TUNNEL_ADDRESS)
from router.lab.tools import LabError
from router.lab.topology import Lab
from router.mape import MapRule, ce_address_for, derive_ce
from tests.integration.conftest import require_root, wait_for

PREFIX = "swt"
CE_NS = f"{PREFIX}-ce"
RULE = MapRule.from_strings(RULE_IPV6_PREFIX, RULE_IPV4_PREFIX, EA_BITS, PSID_OFFSET)
CE = derive_ce(RULE, IPv6Network(END_USER_PREFIX))
CE_IPV4, CE_MAP6 = str(CE.ipv4_address), str(CE.map_ipv6_address)
CE_PORT = CE.port_set.ports()[0]
OTHER_PSID_PORT = CE_PORT + (1 << (16 - PSID_OFFSET - CE.psid_length))
"""The same A bits, the next PSID: a port of another CE's set."""
SERVER = Lab.server_ip(1)
SERVER_PORT = 7000
B4_HOST = "192.168.77.11"

CE_SCRIPT = """
import socket, sys
def raw(address):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    sock.bind((address, 0))
    return sock
tunnel_end, listen, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
listener = raw(listen)
listener.settimeout(wait)
for item in sys.argv[4:]:
    source, packet = item.split("=")
    raw(source).sendto(bytes.fromhex(packet), (tunnel_end, 0))
try:
    data, peer = listener.recvfrom(65535)
    print(peer[0], data.hex())
except TimeoutError:
    print("nothing")
"""
"""In the CE's namespace: send each SOURCE=HEX as IPv4-in-IPv6 to the tunnel end, print the first packet back."""
UDP_ECHO = """
import json, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
sock.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    data, peer = sock.recvfrom(65535)
except TimeoutError:
    print("null", flush=True)
    sys.exit(0)
sock.sendto(b"echo:" + data, peer)
print(json.dumps([peer[0], peer[1], data.decode()]), flush=True)
"""
"""In a server's namespace: answer the first UDP datagram, then print who sent it and what."""


@pytest.fixture(scope="module")
def swlab() -> Iterator[Lab]:
    """The lab's switch and one server, no clients and no router; the CE's namespace on br-v6."""
    require_root()
    lab = Lab(prefix=PREFIX, clients=0, servers=1)
    try:
        remove_ce_and_softwires(lab)
        lab.up()
        ce_namespace(lab)
        yield lab
    finally:
        remove_ce_and_softwires(lab)
        lab.down()


def remove_ce_and_softwires(lab: Lab) -> None:
    softwire.remove_softwires(lab)
    lab._remove_namespace(CE_NS)


def ce_namespace(lab: Lab) -> None:
    lab._namespace(CE_NS)
    for setting in ("net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0"):
        lab.run_in(CE_NS, "sysctl", "-qw", setting)
    softwire.ensure_access_bridge(lab)
    lab.run_in(lab.switch, "ip", "link", "add", "v-ce", "type", "veth", "peer", "name", "eth0", "netns", CE_NS)
    lab.run_in(lab.switch, "ip", "link", "set", "v-ce", "master", ACCESS_BRIDGE, "up")
    for address in (f"{ROUTER_LINK6}/64", f"{CE_MAP6}/128"):
        lab.run_in(CE_NS, "ip", "addr", "add", address, "dev", "eth0", "nodad")
    lab.run_in(CE_NS, "ip", "link", "set", "eth0", "up")


@contextmanager
def endpoint(lab: Lab, build) -> Iterator[subprocess.Popen]:
    proc = build(lab)
    try:
        yield proc
    finally:
        softwire.stop_endpoint(proc)
        softwire.remove_softwires(lab)


@pytest.fixture(scope="class")
def br(swlab) -> Iterator[subprocess.Popen]:
    with endpoint(swlab, softwire.build_br) as proc:
        softwire.server_routes_map_e(swlab)
        yield proc


@pytest.fixture(scope="class")
def aftr(swlab) -> Iterator[subprocess.Popen]:
    with endpoint(swlab, softwire.build_aftr) as proc:
        yield proc


# -- helpers ---------------------------------------------------------------------------------------------------------

def from_ce(lab: Lab, *sends: tuple[str, bytes], listen: str, wait: float = 5.0) -> tuple[str, IP] | None:
    """Each (IPv6 source, inner packet) sent from the CE's namespace; the first packet back to ``listen``, as
    (IPv6 source, inner IPv4), or None."""
    items = [f"{source}={bytes(packet).hex()}" for source, packet in sends]
    out = lab.run_in(CE_NS, sys.executable, "-c", CE_SCRIPT, TUNNEL_ADDRESS, listen, str(wait), *items).stdout.split()
    return None if out == ["nothing"] else (out[0], checked(bytes.fromhex(out[1])))


@contextmanager
def udp_echo(lab: Lab, wait: float = 10.0) -> Iterator[list]:
    """A UDP answerer on the server; the list gets [peer address, port, data] (or None) once it is done."""
    proc = lab.popen_in(lab.server(1), sys.executable, "-c", UDP_ECHO, str(SERVER_PORT), str(wait),
                        stdout=subprocess.PIPE, text=True)
    heard: list = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield heard
        heard.append(json.loads(proc.stdout.readline()))
    finally:
        proc.kill()
        proc.wait()


def checked(packet: bytes) -> IP:
    """The IPv4 packet, after checking its header's and its transport's checksums against scapy's own."""
    ip = IP(packet)
    fresh = ip.copy()
    del fresh.chksum
    if hasattr(fresh.payload, "chksum"):
        del fresh.payload.chksum
    rebuilt = IP(bytes(fresh))
    assert ip.chksum == rebuilt.chksum, "IPv4 header checksum"
    assert getattr(ip.payload, "chksum", None) == getattr(rebuilt.payload, "chksum", None), "transport checksum"
    return ip


def counters(lab: Lab, mode: str) -> dict:
    return softwire.read_stats(lab, mode).get("counters", {})


def increases(lab: Lab, mode: str, before: dict, **expected: int) -> dict:
    """How much each named counter grew since ``before``, once all have grown by ``expected`` (or ten seconds
    have passed: the endpoint writes its file every half second)."""
    def grown() -> dict:
        now = counters(lab, mode)
        return {name: now.get(name, 0) - before.get(name, 0) for name in expected}
    wait_for(lambda: all(grown()[name] >= n for name, n in expected.items()), 10)
    return grown()


def tun_mtu(lab: Lab, mode: str) -> int:
    out = lab.run_in(softwire.namespace(lab, mode), "ip", "-j", "link", "show", TUN_NAME).stdout
    return json.loads(out)[0]["mtu"]


def ce_udp(sport: int, payload: bytes, src: str = CE_IPV4, dst: str = SERVER, dport: int = SERVER_PORT) -> IP:
    return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)


def assert_udp_round_trip_through_br(lab: Lab, port: int, text: str) -> None:
    """A datagram from the CE's address and ``port`` reaches the server, whose answer comes back encapsulated to
    the CE's MAP address."""
    with udp_echo(lab) as heard:
        back = from_ce(lab, (CE_MAP6, ce_udp(port, text.encode())), listen=CE_MAP6)
    assert heard == [[CE_IPV4, port, text]]
    assert back is not None
    source, reply = back
    assert (source, reply.src, reply.dst, reply[UDP].sport, reply[UDP].dport) == \
        (TUNNEL_ADDRESS, SERVER, CE_IPV4, SERVER_PORT, port)
    assert bytes(reply[UDP].payload) == b"echo:" + text.encode()


def route_to_ce(lab: Lab) -> str:
    return lab.run_in(lab.server(1), "ip", "route", "get", CE_IPV4).stdout


def run_in_server(lab: Lab, code: str) -> None:
    lab.run_in(lab.server(1), sys.executable, "-c", code)


# -- pure parts --------------------------------------------------------------------------------------------------------

def test_the_port_of_an_icmp_error_is_the_quoted_datagrams_other_side():
    error = IP(src=SERVER, dst=CE_IPV4) / ICMP(type=3, code=3) / bytes(ce_udp(CE_PORT, b"x"))[:28]
    assert softwire.port_of(bytes(error), softwire.Side.DESTINATION) == CE_PORT
    assert softwire.BorderRelay(RULE).to_ipv6(bytes(error)) == CE.map_ipv6_address


def test_the_aftr_forgets_its_oldest_b4_first():
    aftr = softwire.Aftr(size=2)
    for host, b4 in (("192.168.77.11", "2001:db8::1"), ("192.168.77.12", "2001:db8::2"),
                     ("192.168.77.13", "2001:db8::3")):
        aftr.from_ipv6(IPv6Address(b4), bytes(IP(src=host, dst=SERVER) / UDP()))
    with pytest.raises(softwire.Dropped) as dropped:
        aftr.to_ipv6(bytes(IP(src=SERVER, dst="192.168.77.11") / UDP()))
    assert dropped.value.reason == softwire.Drop.UNKNOWN_B4
    assert str(aftr.to_ipv6(bytes(IP(src=SERVER, dst="192.168.77.13") / UDP()))) == "2001:db8::3"


def test_help_names_every_option(capsys):
    common = ("--address", "--tun", "--link-mtu", "--stats")
    options = {BR: ("--rule-ipv6-prefix", "--rule-ipv4-prefix", "--ea-bits", "--psid-offset"), AFTR: ("--bindings",)}
    for mode, own in options.items():
        with pytest.raises(SystemExit):
            softwire.parser().parse_args([mode, "--help"])
        out = capsys.readouterr().out
        assert all(option in out for option in own + common), out
        assert "40 bytes less (RFC 2473 §7.1)" in " ".join(out.split())


def test_the_router_gets_the_shared_address_and_psid_the_lab_announces():
    assert (CE_IPV4, CE.psid) == (softwire.MAP_IPV4, 3)


def test_the_endpoint_kind_says_userspace():
    assert softwire.endpoint_kind().startswith("userspace (raw IPv6 socket + TUN)")


# -- MAP-E -------------------------------------------------------------------------------------------------------------

class TestBorderRelay:
    def test_the_tun_mtu_is_the_link_mtu_less_40(self, swlab, br):
        assert tun_mtu(swlab, BR) == TUN_MTU == 1460

    def test_udp_from_the_ce_reaches_the_server_and_the_reply_returns_to_its_map_address(self, swlab, br):
        assert str(ce_address_for(RULE, IPv4Address(CE_IPV4), CE_PORT)) == CE_MAP6
        assert_udp_round_trip_through_br(swlab, CE_PORT, "hello")

    def test_spoofed_packets_are_dropped_and_counted(self, swlab, br):
        before = counters(swlab, BR)
        spoofs = [(ROUTER_LINK6, ce_udp(CE_PORT, b"wrong IPv6 source")),          # not the CE's MAP address
                  (CE_MAP6, ce_udp(OTHER_PSID_PORT, b"another CE's port")),        # a port of PSID 4
                  (CE_MAP6, ce_udp(80, b"nobody's port")),                         # A = 0: in no CE's set
                  (CE_MAP6, ce_udp(CE_PORT, b"outside the rule", src="198.51.100.50"))]
        with udp_echo(swlab) as heard:
            from_ce(swlab, *spoofs, (CE_MAP6, ce_udp(CE_PORT + 1, b"genuine")), listen=CE_MAP6)
        assert heard == [[CE_IPV4, CE_PORT + 1, "genuine"]]       # the first datagram the server got
        assert increases(swlab, BR, before, drop_spoofed=4) == {"drop_spoofed": 4}

    def test_an_echo_reply_finds_the_ce_by_its_identifier(self, swlab, br):
        request = IP(src=CE_IPV4, dst=SERVER) / ICMP(type=8, id=CE_PORT + 2, seq=1) / Raw(b"ping")
        source, reply = from_ce(swlab, (CE_MAP6, request), listen=CE_MAP6)
        assert (source, reply.src, reply.dst) == (TUNNEL_ADDRESS, SERVER, CE_IPV4)
        assert (reply[ICMP].type, reply[ICMP].id, bytes(reply[ICMP].payload)) == (0, CE_PORT + 2, b"ping")

    def test_an_icmp_error_finds_the_ce_by_the_port_it_quotes(self, swlab, br):
        to_closed_port = ce_udp(CE_PORT + 3, b"anyone?", dport=9)
        source, error = from_ce(swlab, (CE_MAP6, to_closed_port), listen=CE_MAP6)
        assert (source, error.src, error.dst) == (TUNNEL_ADDRESS, SERVER, CE_IPV4)
        assert (error[ICMP].type, error[ICMP].code) == (3, 3)
        quoted = IP(bytes(error[ICMP].payload))
        assert (quoted.src, quoted[UDP].sport, quoted[UDP].dport) == (CE_IPV4, CE_PORT + 3, 9)

    def test_packets_without_a_port_are_dropped_and_counted(self, swlab, br):
        before = counters(swlab, BR)
        gre = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 47).sendto(bytes(8), ({CE_IPV4!r}, 0))"
        fragment = bytes(IP(src=SERVER, dst=CE_IPV4, proto=17, frag=100) / Raw(bytes(32)))
        later_fragment = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW); "
                          f"s.sendto(bytes.fromhex({fragment.hex()!r}), ({CE_IPV4!r}, 0))")
        run_in_server(swlab, gre)
        run_in_server(swlab, later_fragment)
        from_ce(swlab, (CE_MAP6, IP(src=CE_IPV4, dst=SERVER, proto=47) / Raw(bytes(8))), listen=CE_MAP6, wait=0.2)
        assert increases(swlab, BR, before, drop_no_port=3) == {"drop_no_port": 3}      # two from the server

    def test_malformed_inner_packets_are_counted_and_the_endpoint_lives_on(self, swlab, br):
        before = counters(swlab, BR)
        whole = bytes(ce_udp(CE_PORT + 4, b"x" * 60))
        truncated = whole[:40]                                     # total length says 89
        inner_ipv6 = bytes(IPv6(src=CE_MAP6, dst="2001:db8:5::10") / UDP(sport=CE_PORT, dport=SERVER_PORT))
        from_ce(swlab, (CE_MAP6, whole[:10]), (CE_MAP6, truncated), (CE_MAP6, inner_ipv6), listen=CE_MAP6, wait=0.2)
        assert increases(swlab, BR, before, drop_truncated=2, drop_not_ipv4=1) == \
            {"drop_truncated": 2, "drop_not_ipv4": 1}
        assert br.poll() is None
        assert_udp_round_trip_through_br(swlab, CE_PORT + 4, "still there")

    def test_a_server_learns_the_tunnel_mtu_from_the_br(self, swlab, br):
        """RFC 2473 §7.1: a DF packet too big for the tunnel gets "fragmentation needed" with the TUN's MTU."""
        big = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "s.setsockopt(socket.IPPROTO_IP, 10, 2); "          # IP_MTU_DISCOVER, IP_PMTUDISC_DO (DF set)
               f"s.sendto(bytes(1472), ({CE_IPV4!r}, {CE_PORT}))")
        run_in_server(swlab, big)
        route = swlab.run_in(swlab.server(1), "ip", "route", "get", CE_IPV4).stdout
        assert wait_for(lambda: f"mtu {TUN_MTU}" in route_to_ce(swlab), 10), route_to_ce(swlab)
        assert f"via {GATEWAY4}" in route


# -- DS-Lite -----------------------------------------------------------------------------------------------------------

class TestAftr:
    def test_the_tun_mtu_is_the_link_mtu_less_40(self, swlab, aftr):
        assert tun_mtu(swlab, AFTR) == TUN_MTU

    def test_b4_traffic_leaves_masqueraded_and_the_reply_returns_to_the_b4(self, swlab, aftr):
        with udp_echo(swlab) as heard:
            back = from_ce(swlab, (ROUTER_LINK6, ce_udp(40000, b"from the LAN", src=B4_HOST)), listen=ROUTER_LINK6)
        [[address, _, data]] = heard
        assert (address, data) == (GATEWAY4, "from the LAN")
        assert back is not None
        source, reply = back
        assert (source, reply.src, reply.dst) == (TUNNEL_ADDRESS, SERVER, B4_HOST)
        assert (reply[UDP].sport, reply[UDP].dport, bytes(reply[UDP].payload)) == \
            (SERVER_PORT, 40000, b"echo:from the LAN")
        assert wait_for(lambda: softwire.read_stats(swlab, AFTR).get("bindings") == 1, 10)

    def test_ipv4_to_an_unknown_b4_is_dropped_and_counted(self, swlab, aftr):
        before = counters(swlab, AFTR)
        send = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.168.77.99', 9))"
        swlab.run_in(softwire.namespace(swlab, AFTR), sys.executable, "-c", send)
        assert increases(swlab, AFTR, before, drop_unknown_b4=1) == {"drop_unknown_b4": 1}

    def test_malformed_inner_packets_are_counted_and_the_endpoint_lives_on(self, swlab, aftr):
        before = counters(swlab, AFTR)
        inner_ipv6 = bytes(IPv6(src=ROUTER_LINK6, dst="2001:db8:5::10") / UDP())
        from_ce(swlab, (ROUTER_LINK6, bytes(7)), (ROUTER_LINK6, inner_ipv6), listen=ROUTER_LINK6, wait=0.2)
        assert increases(swlab, AFTR, before, drop_truncated=1, drop_not_ipv4=1) == \
            {"drop_truncated": 1, "drop_not_ipv4": 1}
        assert aftr.poll() is None

    def test_the_pptp_helper_status_says_what_the_kernel_has(self, swlab, aftr):
        ns = softwire.namespace(swlab, AFTR)
        missing = softwire.pptp_helper_missing(ns)
        rules = swlab.run_in(ns, "nft", "list", "ruleset").stdout
        assert ('type "pptp"' in rules) == (missing is None)
        assert "masquerade" in rules
        expected = "nf_conntrack_pptp" if missing is None else "no PPTP helper"
        assert softwire.aftr_pptp_helper_status(swlab).startswith(expected)
        assert softwire.aftr_pptp_helper_status().startswith(expected)       # the kernel's, without a lab

    def test_sigterm_ends_it_cleanly(self, swlab, aftr):
        aftr.send_signal(signal.SIGTERM)
        assert aftr.wait(10) == 0
        assert softwire.read_stats(swlab, AFTR)["counters"]["encapsulated"] >= 1
        links = swlab.run_in(softwire.namespace(swlab, AFTR), "ip", "-br", "link").stdout
        assert TUN_NAME not in links

    def test_an_endpoint_that_cannot_start_is_a_lab_error(self, swlab, aftr):
        with pytest.raises(LabError, match="exited with 1: softwire aftr: .*Cannot assign requested address"):
            softwire.start_endpoint(swlab, AFTR, "--address", "2001:db8:ffff::99")
