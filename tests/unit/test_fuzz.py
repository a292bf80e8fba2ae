"""Fuzzing (issue 12): every parser and ``receive_frame`` as a whole, the control socket's reader, the corpus.

Each frame target (``tests.fuzz.program``) starts from a valid conversation
of its protocol and mutates it: frames flipped, truncated, extended, fields
set to extremes, random frames from either port, time jumps with the timer.
What must hold after every frame is in ``program.Checker``: no exception,
every checksum right where the input's was, tables within their limits,
nothing reaching the LAN from the WAN but for live sessions, and every table
empty once every timeout has passed.  ``VPNROUTER_FUZZ_EXAMPLES`` sets the
examples per target (120 by default); ``python -m tests.fuzz`` runs long
campaigns with atheris on the same inputs.
"""

import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.packet import Raw

from router.control import protocol
from router.helpers.l2tp_tunnel import MAX_SESSIONS
from tests.fuzz import control, program, scripts, targets
from tests.fuzz.scripts import tcp_connection
from tests.unit import l2tp_frames as l2tp
from tests.unit import pptp_frames as pptp
from tests.unit.frames import C1, LAN, S1, WAN, from_lan, from_wan, make_router, wire

EXAMPLES = int(os.environ.get("VPNROUTER_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
INPUTS = st.binary(max_size=400)


# -- the frame targets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", program.FRAME_TARGETS)
@FUZZ
@given(data=INPUTS)
def test_frames_never_break_the_router(target, data):
    program.run(target, data)


@pytest.mark.parametrize("target", scripts.SCRIPTS)
def test_conversations_work_unmutated(target):
    """The empty input plays the conversation as it is: it must do what it is there for."""
    checker = program.run(target, b"")
    counters = checker.r.counters
    assert checker.frames == len(scripts.script(target))
    expected = {"pptp": "pptp_calls_up", "gre": "pptp_calls_up", "l2tp": "l2tp_sessions_up",
                "ike": "ipsec_ike_sas_up", "esp": "ipsec_esp_learned", "tcp": "sessions_created",
                "udp": "sessions_created", "icmp": "echo_replies_sent", "arp": "arp_replies_sent",
                "ipv4": "fragments_made", "ethernet": "drop_non_ipv4"}[target]
    assert counters.get(expected, 0) >= 1, f"{target}: {expected} stayed 0"


@FUZZ
@given(frame=st.binary(max_size=200), port=st.sampled_from([LAN, WAN]))
def test_pure_random_bytes_from_either_port(frame, port):
    """Random bytes as a whole frame, and behind a header that gets them to the IPv4 or ARP parser."""
    checker = program.Checker(make_router())
    mac = checker.r.macs[port]
    for head in (b"", bytes(12) + mac + bytes(6) + b"\x08\x00", bytes(12) + mac + bytes(6) + b"\x08\x06"):
        data = bytearray(head + frame)
        program.fix_checksums(data)
        checker.feed(port, data, 1.0)
    checker.finish(1.0)


@settings(max_examples=EXAMPLES * 10, deadline=None)
@given(data=st.binary(max_size=120))
def test_parsers_alone(data):
    """The parsers that are functions of the bytes (ARP, an ICMP error's quote, the IKE header)."""
    program.probe(data)


# -- the control socket ----------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats() | st.text(max_size=12)
           | st.binary(max_size=12) | st.sampled_from(["pptp", "l2tp", "ipsec", "on", "off", "single", "multi",
                                                      "allow", "deny", "any", "192.168.77.0/24", "default"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-2, 2), inner, max_size=4), max_leaves=8)
REQUESTS = st.builds(lambda msgid, method, params: [0, msgid, method, params],
                     st.integers(0, 2 ** 32 - 1) | VALUES, st.sampled_from(targets.CONTROL_METHODS) | VALUES,
                     st.lists(VALUES, max_size=4) | VALUES)
MESSAGES = st.lists(REQUESTS | VALUES, min_size=1, max_size=3)


@settings(max_examples=EXAMPLES * 3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(messages=MESSAGES, cut=st.integers(0, 8), flips=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)),
                                                                   max_size=3))
def test_control_requests_get_an_answer_never_an_exception(messages, cut, flips):
    stream = bytearray(b"".join(msgpack.packb(m) for m in messages))
    for at, value in flips:
        if at < len(stream):
            stream[at] = value
    stream = stream[:len(stream) - cut] if cut < len(stream) else stream
    control.check(bytes(stream))


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(data=INPUTS)
def test_control_target(data):
    """The control target's own input format, as atheris fuzzes it."""
    targets.run("control", data)


@pytest.mark.parametrize("target", ["pptp", "l2tp", "ike", "esp"])
def test_tables_name_every_table_a_helper_keeps(target):
    """The end-of-run checks find a helper's tables through ``Helper.tables()`` and a flow's bounded ones through
    ``Flow.tables()``, not by attribute names: so a table missing from them (a new one, a renamed one) fails
    here, at every step of its conversation, instead of going unchecked."""
    checker = program.Checker(make_router())
    steps_with_flows = 0
    for step, (port, frame) in enumerate(scripts.script(target)):
        checker.feed(port, bytearray(frame), 1.0 + step / 100)
        for helper in checker.r.helpers:
            steps_with_flows += bool(helper.flows())
            _all_tables_named(helper)
    assert steps_with_flows, "the conversation made no flow"


def _all_tables_named(helper) -> None:
    named = {id(table) for table in helper.tables().values()}
    kept = {name for name, value in vars(helper).items() if isinstance(value, (dict, set, list))}
    assert {name for name in kept if id(getattr(helper, name)) not in named} == set(), helper.name
    for flow in helper.flows():
        bounded = {id(table) for table, _ in flow.tables().values()}
        containers = {name for name in flow.__slots__ if isinstance(getattr(flow, name, None), (dict, list))}
        assert {name for name in containers if id(getattr(flow, name)) not in bounded} <= UNBOUNDED, helper.name


UNBOUNDED = {"ike_sas", "sessions"}
"""Flow tables with no bound of their own: an association's IKE SAs (one per rekey, kept as they expire with it)
and its NAT sessions (held to the router's session limits)."""


def test_parse_request_refuses_all_but_requests():
    assert protocol.parse_request([0, 1, "status", []]) == (1, "status", [])
    for message in ([0, -1, "x", []], [1, 1, "x", []], {"a": 1}, [0, 1, 2, []], None, [0, 1, "x"], [0, 1, "x", 5]):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_request(message)


# -- the regression corpus -------------------------------------------------------------------------------

def _corpus_params():
    for target, path in targets.cases():
        yield pytest.param(target, path, id=f"{target}/{path.name}")


@pytest.mark.parametrize("target, path", list(_corpus_params()))
def test_corpus_replays(target, path):
    """Every input that once failed, replayed: a bug that returns fails here."""
    targets.run(target, path.read_bytes())


# -- table sizes -------------------------------------------------------------------------------------------

def _many_flows(helper: str) -> list:
    """One LAN host opening 40 VPN flows, in the way each helper allows."""
    if helper == "ipsec":     # raw ESP to 40 gateways: an association each, no NAT session at all
        return [(LAN, wire(from_lan(C1, f"192.0.2.{i}", Raw((0x1000 + i).to_bytes(4, "big") + bytes(20)),
                                    proto=50))) for i in range(1, 41)]
    if helper == "l2tp":      # 40 SCCRQs with their own Tunnel IDs on one NAT session
        return [(LAN, wire(from_lan(C1, S1, UDP(sport=1701, dport=1701) / Raw(l2tp.sccrq(100 + i)))))
                for i in range(40)]
    messages = [(True, bytes(pptp.OCRQ(call_id=100 + i, call_serial_number=i))) for i in range(40)]
    return tcp_connection(C1, S1, 40000, 1723, messages)[:-3]    # 40 calls on one control connection


@pytest.mark.parametrize("helper", ["pptp", "l2tp", "ipsec"])
def test_helper_flows_stay_within_the_session_limit(helper):
    checker = program.Checker(make_router(limits={"sessions": 16, "sessions_per_host": 8}))
    for port, frame in _many_flows(helper):
        checker.feed(port, bytearray(frame), 1.0)


def test_an_l2tp_tunnel_keeps_at_most_max_sessions():
    checker = program.Checker(make_router())
    lac = [l2tp.sccrq(5), l2tp.scccn(77)] + [l2tp.icrp(77, i, 2000 + i) for i in range(1, MAX_SESSIONS + 20)]
    checker.feed(LAN, wire(from_lan(C1, S1, UDP(sport=1701, dport=1701) / Raw(lac[0]))), 1.0)
    checker.feed(WAN, wire(from_wan(S1, UDP(sport=1701, dport=1701) / Raw(l2tp.sccrp(5, 77)))), 1.0)
    for message in lac[1:]:
        checker.feed(LAN, wire(from_lan(C1, S1, UDP(sport=1701, dport=1701) / Raw(message))), 1.0)


def test_the_timer_heap_stays_proportionate_to_the_sessions():
    r = make_router()
    r.receive_frame(LAN, wire(from_lan(C1, S1, TCP(sport=40000, dport=80, flags="S", seq=1))), 1.0)
    r.receive_frame(WAN, wire(from_wan(S1, TCP(sport=80, dport=40000, flags="SA", seq=1, ack=2))), 1.0)
    for flags in "RA" * 500:
        r.receive_frame(LAN, wire(from_lan(C1, S1, TCP(sport=40000, dport=80, flags=flags, seq=2))), 2.0)
        r.take_outbox(WAN)
    assert len(r.nat) == 1
    assert len(r.nat._heap) <= 8, "timer heap entries for one session"
