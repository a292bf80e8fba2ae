"""`make bench`: vpnrouter beside Linux's kernel NAT, same topology, same run.

Two labs of network namespaces (router/lab/topology.py): one with vpnrouter
on TAPs, one with a namespace doing nftables masquerade, each with one
client and one server.  For each it measures, with iperf3 and ping:
TCP throughput, the received rate of 64-byte UDP frames, and ping RTT.
Prints a table with both figures and their ratio; --json writes them too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from router.lab.topology import Lab

SERVER = "198.51.100.10"
UDP_PAYLOAD = 18   # 14 Ethernet + 20 IP + 8 UDP + 18 = 60 bytes, 64 with the FCS


def iperf(lab: Lab, *args: str, seconds: int) -> dict:
    server = lab.popen_in(lab.server(1), "iperf3", "-s", "-1", stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        result = lab.run_in(lab.client(1), "iperf3", "-c", SERVER, "-t", str(seconds), "-J", *args,
                            timeout=seconds + 30)
    finally:
        server.wait(10)
    return json.loads(result.stdout)


def tcp_gbps(lab: Lab, seconds: int) -> float:
    report = iperf(lab, seconds=seconds)
    return report["end"]["sum_received"]["bits_per_second"] / 1e9


def udp_pps(lab: Lab, seconds: int) -> float:
    report = iperf(lab, "-u", "-b", "0", "-l", str(UDP_PAYLOAD), seconds=seconds)
    total = report["end"]["sum"]
    received = total["packets"] - total["lost_packets"]
    return received / total["seconds"]


def ping_ms(lab: Lab, count: int) -> float:
    out = lab.run_in(lab.client(1), "ping", "-q", "-c", str(count), "-i", "0.02", SERVER).stdout
    return float(out.rsplit("=", 1)[1].split("/")[1])


def measure(lab: Lab, seconds: int, progress) -> dict:
    progress("ping")
    ping_ms(lab, 5)  # warm ARP caches and sessions
    rtt = ping_ms(lab, 50)
    progress("TCP")
    tcp = tcp_gbps(lab, seconds)
    progress("UDP 64 B")
    udp = udp_pps(lab, seconds)
    return {"tcp_gbps": round(tcp, 3), "udp64_pps": round(udp), "ping_ms": round(rtt, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each iperf3 run (default 8)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    results = {}
    for name, lab in (("kernel", Lab(prefix="bk", clients=1, servers=1, kernel=True)),
                      ("vpnrouter", Lab(prefix="bv", clients=1, servers=1))):
        progress = lambda step, name=name: print(f"bench: {name}: {step}...", file=sys.stderr, flush=True)
        try:
            lab.up()
            if not lab.kernel:
                lab.start_router()
            results[name] = measure(lab, args.seconds, progress)
        finally:
            lab.down()
    k, v = results["kernel"], results["vpnrouter"]
    print(f"\n{'':<22}{'Linux kernel NAT':>18}{'vpnrouter':>14}{'ratio':>8}")
    for key, label in (("tcp_gbps", "TCP Gbit/s"), ("udp64_pps", "UDP 64 B pps recv"), ("ping_ms", "ping RTT ms")):
        print(f"{label:<22}{k[key]:>18}{v[key]:>14}{v[key] / k[key]:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
