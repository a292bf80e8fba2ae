"""What crosses the router with TAP offloads has correct checksums, recomputed independently.

Linux does not verify a CHECKSUM_PARTIAL packet delivered locally, so a
working transfer alone proves nothing about the partial checksums the router
adjusts.  Here the bridge ports facing a client and a server have transmit
checksumming and segmentation off: the kernel completes every checksum in
software from the router's partial value before the host sees it (a wrong
one would now be dropped by the receiving TCP), and a capture on the host's
interface is checked packet by packet with scapy.
"""

from __future__ import annotations

import hashlib
import subprocess
import time

from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from tests.integration.peers import payload
from tests.oracle import check_checksums

S1, C1 = "198.51.100.10", "192.168.77.11"
WAN = "198.51.100.1"


def test_checksums_of_forwarded_tcp_both_ways(lab, peers, tmp_path):
    for port in ("v-s1", "v-c1"):
        lab.run_in(lab.switch, "ethtool", "-K", port, "tx", "off", "tso", "off", "gso", "off")
    captures = {}
    for ns, name in (("vt-s1", "server"), ("vt-c1", "client")):
        path = tmp_path / f"{name}.pcap"
        captures[name] = (path, lab.popen_in(ns, "tcpdump", "-i", "eth0", "-U", "-B", "16384", "-w", str(path), "tcp port 9100",
                                             stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    size = 3 * 1024 * 1024
    try:
        server = peers.start("vt-s1", "serve-tcp", 9100, size, 11, 1)
        result = peers.run("vt-c1", "fetch-tcp", S1, 9100).split()
        server.wait(30)
        assert result == [str(size), hashlib.sha256(payload(size, 11)).hexdigest()]
        time.sleep(0.5)
    finally:
        for _, proc in captures.values():
            proc.terminate()
            proc.wait(5)
        for port in ("v-s1", "v-c1"):
            lab.run_in(lab.switch, "ethtool", "-K", port, "tx", "on", "tso", "on", "gso", "on", check=False)
    server_side = [p for p in rdpcap(str(captures["server"][0])) if TCP in p]
    client_side = [p for p in rdpcap(str(captures["client"][0])) if TCP in p]
    # What the server received came through the router from the client, and the other way round.
    received_by_server = [p for p in server_side if p[IP].src == WAN]
    received_by_client = [p for p in client_side if p[IP].src == S1]
    assert len(received_by_client) > 100 and received_by_server
    for packet in received_by_server + received_by_client:
        check_checksums(packet, completed_by_linux=True)    # the bridge port completed it
