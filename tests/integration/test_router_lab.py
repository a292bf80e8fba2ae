"""The real router process between real network stacks: two clients, two servers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from router.helpers.registry import names
from tests.integration.conftest import ROOT, ctl, wait_for
from tests.integration.peers import payload

S1, S2 = "198.51.100.10", "198.51.100.20"
C1, C2 = "192.168.77.11", "192.168.77.12"
WAN = "198.51.100.1"



def test_ping_through_the_router(lab):
    for c, s in (("vt-c1", S1), ("vt-c2", S2)):
        result = lab.run_in(c, "ping", "-c", "3", "-i", "0.2", "-W", "2", s)
        assert " 0% packet loss" in result.stdout
    assert " 0% packet loss" in lab.run_in("vt-c1", "ping", "-c", "1", "-W", "2", "192.168.77.1").stdout


def test_concurrent_tcp_downloads_arrive_intact(lab, peers):
    size = 24 * 1024 * 1024
    servers = [peers.start("vt-s1", "serve-tcp", 9000, size, 1, 2), peers.start("vt-s2", "serve-tcp", 9000, size, 2, 2)]
    fetches = [lab.popen_in(c, *peers.cmd("fetch-tcp", s, 9000), cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for c in ("vt-c1", "vt-c2") for s in (S1, S2)]
    results = [f.communicate(timeout=120)[0].split() for f in fetches]
    for server in servers:
        server.wait(30)
    expected = {s: hashlib.sha256(payload(size, seed)).hexdigest() for s, seed in ((S1, 1), (S2, 2))}
    assert results == [[str(size), expected[s]] for _ in ("c1", "c2") for s in (S1, S2)]
    sessions = json.loads(ctl(lab, "sessions", "--json"))
    tcp = [s for s in sessions if s["proto"] == "tcp" and s["remote"].endswith(":9000")]
    assert len(tcp) == 4 and all(s["bytes_in"] > size for s in tcp)
    assert {s["inside"].split(":")[0] for s in tcp} == {C1, C2}
    dataplane = json.loads(ctl(lab, "status", "--json"))["dataplane"]      # the default: the fast path runs
    assert dataplane["path"] == "fast" and dataplane["hits"] > 1000, dataplane
    assert "dataplane   fast path (C)" in ctl(lab, "status")


def test_udp_both_ways(lab, peers):
    echo = peers.start("vt-s1", "udp-echo", 7000, 2)
    assert peers.run("vt-c1", "udp-ask", S1, 7000) == f"echo:hello:{WAN}"
    assert peers.run("vt-c2", "udp-ask", S1, 7000) == f"echo:hello:{WAN}"
    echo.wait(10)


def test_icmp_port_unreachable_reaches_the_client_socket(lab, peers):
    assert peers.run("vt-c1", "udp-ask", S2, 7999) == "refused"


def test_nothing_unsolicited_reaches_the_lan(lab, peers):
    before = json.loads(ctl(lab, "status", "--json"))["counters"]["drop_unsolicited"]
    listener = peers.start("vt-c1", "udp-listen", 6000, 3)
    sender = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', ('%s', p)) for p in (6000, 6001, 6000)]" % WAN
    lab.run_in("vt-s1", sys.executable, "-c", sender)
    syn = lab.run_in("vt-s1", sys.executable, "-c",
                     "import socket; s=socket.socket(); s.settimeout(2)\ntry: s.connect(('%s', 22))\nexcept OSError as e: print(type(e).__name__)" % WAN,
                     check=False)
    out, _ = listener.communicate(timeout=10)
    assert out == "" and "timeout" in syn.stdout.lower()
    after = json.loads(ctl(lab, "status", "--json"))["counters"]["drop_unsolicited"]
    assert after - before >= 4


def test_port_forward(lab, peers):
    server = peers.start("vt-c2", "serve-tcp", 8000, 100000, 7, 1)
    assert peers.run("vt-s2", "fetch-tcp", WAN, 8080).split() == [
        "100000", hashlib.sha256(payload(100000, 7)).hexdigest()]
    server.wait(10)


def test_still_forwarding_after_malformed_burst(lab):
    burst = """
import random
from scapy.all import Ether, IP, UDP, TCP, ICMP, sendp, Raw, get_if_hwaddr
rnd = random.Random(3)
mac = get_if_hwaddr("eth0")   # a bridge drops frames from the zero MAC
frames = []
base = [Ether(src=mac, dst="02:76:72:01:64:01")/IP(dst="198.51.100.1")/UDP(dport=53)/b"abcd",
        Ether(src=mac, dst="02:76:72:01:64:01")/IP(dst="198.51.100.1")/TCP(flags="S"),
        Ether(src=mac, dst="02:76:72:01:64:01")/IP(dst="198.51.100.1")/ICMP(type=3)/IP(src="198.51.100.1")/UDP()]
for i in range(600):
    raw = bytearray(bytes(rnd.choice(base)))
    for _ in range(rnd.randint(1, 6)):
        raw[rnd.randrange(14, len(raw))] = rnd.randrange(256)
    raw = raw[:rnd.randint(14, len(raw))]
    frames.append(Raw(bytes(raw)))
sendp(frames, iface="eth0", verbose=False)
print(len(frames))
"""
    assert lab.run_in("vt-s1", sys.executable, "-c", burst, timeout=120).stdout.strip() == "600"
    assert " 0% packet loss" in lab.run_in("vt-c1", "ping", "-c", "2", "-i", "0.2", "-W", "2", S1).stdout
    status = json.loads(ctl(lab, "status", "--json"))
    counters = status["counters"]
    assert counters["drop_bad_ip_checksum"] + counters["drop_bad_ip_header"] > 100, {k: v for k, v in counters.items() if v}


def test_thousands_of_control_connections_leave_forwarding_untouched(lab):
    """2,000 clients while a ping crosses every 20 ms: 1,000 send garbage, then 1,000 hold a connection, idle or
    with half a message, past `max_clients` (256)."""
    import resource
    import selectors
    import socket
    from router.control import protocol
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    log = lab.state_dir / "router.log"
    logged = len(log.read_text().splitlines())
    ping = lab.popen_in("vt-c1", "ping", "-q", "-c", "150", "-i", "0.02", "-W", "2", S1, stdout=subprocess.PIPE,
                        text=True)
    garbage, holders = [], []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(lab.socket_path))
            s.sendall(b"\xc1" * 8)                    # never valid MessagePack
            garbage.append(s)
        answers = []
        for s in garbage:
            s.settimeout(10)
            answers.append(s.recv(4096))
        for i in range(1000):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(lab.socket_path))
            if i % 2:
                s.sendall(protocol.request(i, "status", [])[:5])
            holders.append(s)
        busy = 0
        with selectors.DefaultSelector() as waiting:
            for s in holders:
                waiting.register(s, selectors.EVENT_READ)
            while ready := waiting.select(3.0):    # none for 3 s: the rest are being served, and say nothing
                for key, _ in ready:
                    waiting.unregister(key.fileobj)
                    busy += b"busy" in key.fileobj.recv(4096)
        out, _ = ping.communicate(timeout=60)
    finally:
        for s in garbage + holders:
            s.close()
        if ping.poll() is None:
            ping.kill()
    assert all(b"bad_request" in a or b"busy" in a for a in answers), [a for a in answers if b"bad_request" not in a][:3]
    assert 1000 - 256 <= busy <= 1000
    assert " 0% packet loss" in out, out
    assert wait_for(lambda: subprocess.run(
        [sys.executable, "-m", "router", "ctl", "--socket", str(lab.socket_path), "status"], cwd=ROOT,
        capture_output=True, timeout=30).returncode == 0)
    refusals = [line for line in log.read_text().splitlines()[logged:] if "refused" in line]
    assert 1 <= len(refusals) <= 10, refusals        # counted, not a line per connection


def test_ctl_tables_and_switches(lab):
    table = ctl(lab, "sessions")
    assert table.splitlines()[0].split()[:4] == ["PROTO", "INSIDE", "OUTSIDE", "REMOTE"]
    assert "passthrough pptp on" in ctl(lab, "status")
    assert ctl(lab, "passthrough", "pptp", "off").strip() == "pptp passthrough off"
    assert json.loads(ctl(lab, "status", "--json"))["passthrough"] == {vpn: vpn != "pptp" for vpn in names()}
    ctl(lab, "passthrough", "pptp", "on")


def test_clean_exit_on_sigterm(lab):
    """Stops the router the other tests use, then starts it again."""
    assert lab.stop_router(timeout=5) == 0   # None would mean it had to be killed after 5 s
    assert not lab.socket_path.exists()
    lab.start_router()
    assert " 0% packet loss" in lab.run_in("vt-c1", "ping", "-c", "1", "-W", "2", S1).stdout



def test_tap_that_cannot_be_opened_exits_2_with_one_line(lab, tmp_path):
    config = tmp_path / "bad-tap.toml"
    config.write_text('[lan]\ntap = "lo"\naddress = "192.168.77.1/24"\n[wan]\ntap = "wan9"\n'
                      f'address = "198.51.100.1/24"\n[control]\nsocket = "{tmp_path}/c.sock"\n')
    result = lab.run_in(lab.client(1), sys.executable, "-m", "router", "run", "--config", str(config),
                        check=False, cwd=ROOT)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("vpnrouter: cannot open TAP 'lo'")


def test_ctl_capture_writes_a_pcap_tshark_reads(lab, peers, tmp_path):
    """`ctl capture ID -w FILE`: the session's frames as the router forwards them, in a file tshark opens."""
    echo = peers.start("vt-s2", "udp-echo", 7001, 30)
    assert peers.run("vt-c2", "udp-ask", S2, 7001, 47001).startswith("echo:")
    (session,) = [s for s in json.loads(ctl(lab, "sessions", "--json")) if s["remote"] == f"{S2}:7001"]
    pcap = tmp_path / "capture.pcap"
    capture = subprocess.Popen([sys.executable, "-m", "router", "ctl", "--socket", str(lab.socket_path), "capture",
                                str(session["id"]), "-w", str(pcap), "--count", "4", "--seconds", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(20):        # until the capture has its four frames (two asks, two answers), bounded
        peers.run("vt-c2", "udp-ask", S2, 7001, 47001)
        if capture.poll() is not None:
            break
    _, err = capture.communicate(timeout=30)
    echo.kill()
    assert capture.returncode == 0, err
    assert "4 frames written" in err
    fields = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
                             "-e", "udp.srcport", "-e", "udp.dstport"], capture_output=True, text=True, timeout=60)
    assert fields.returncode == 0, fields.stderr
    rows = [line.split("\t") for line in fields.stdout.splitlines()]
    assert len(rows) == 4
    for src, dst, sport, dport in rows:     # as sent: outbound leaves from the WAN address, inbound reaches C2
        assert (src, dport) == (WAN, "7001") or (dst, sport) == (C2, "7001")


def test_ctl_close_ends_a_live_session(lab, peers):
    echo = peers.start("vt-s1", "udp-echo", 7002, 3)
    try:
        assert peers.run("vt-c1", "udp-ask", S1, 7002).startswith("echo:")
        (session,) = [s for s in json.loads(ctl(lab, "sessions", "--json")) if s["remote"] == f"{S1}:7002"]
        assert ctl(lab, "close", str(session["id"])).strip() == f"closed {session['id']}"
        assert not [s for s in json.loads(ctl(lab, "sessions", "--json")) if s["id"] == session["id"]]
        result = subprocess.run([sys.executable, "-m", "router", "ctl", "--socket", str(lab.socket_path), "close",
                                 str(session["id"])], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and "not_found" in result.stderr
    finally:
        echo.kill()
