"""`make bench`: vpnrouter beside Linux's kernel NAT, same topology, same run.

Two labs of network namespaces (router/lab/topology.py): one with vpnrouter
on TAPs, one with a namespace doing nftables masquerade, each with one
client and one server.  For each it measures, with iperf3 and ping:
TCP throughput, the received rate of 64-byte UDP frames, and ping RTT.
Prints a table with both figures and their ratio; --json writes them too.
Then, through vpnrouter only, beside the plain UDP rate of the same run: the
rate of 64-byte GRE frames over 16 real PPTP calls (pptp-linux to pptpd,
established through the router), of 64-byte raw ESP frames over 16 SPIs, and
of 64-byte NAT-T (ESP in UDP 4500) frames over 16 UDP flows
(tests/perf/esp_load.py), and of L2TP data over 16 tunnels (tests/perf/l2tp_load.py), each with its ratio
to the plain UDP rate, the
rate the sender offered (a sender slower than the router would show there) and
the share of a CPU the router process used.  Last, forwarding while the
control socket reads a table of 16,000 sessions: the largest RTT of a ping
every 5 ms, with and without the reads; and the dashboard's update cost with
10,000 sessions and 500 events a second, headless (tests/perf/dashboard.py).  Beside the
rates, which move by a third between runs on a shared machine, the
instructions per forwarded frame of the copier and of vpnrouter, counted by
valgrind (tests/perf/instructions.py), which do not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import signal
import subprocess
import sys
import time

from pathlib import Path

from router.lab.topology import ROUTER_WAN, Lab
from tests.perf import instructions
from tests.perf.copier import copier_lab

ROOT = Path(__file__).resolve().parents[2]

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


def tcp_gbps(lab: Lab, seconds: int, *args: str) -> float:
    """TCP bulk through the router: one flow from client to server, or as ``args`` say (``-P 16``, ``-R``)."""
    report = iperf(lab, *args, seconds=seconds)
    return report["end"]["sum_received"]["bits_per_second"] / 1e9


TCP_CASES = (("tcp16_gbps", ("-P", "16"), "TCP 16 flows Gbit/s"), ("tcp_rev_gbps", ("-R",), "TCP reverse Gbit/s"),
             ("tcp16_rev_gbps", ("-P", "16", "-R"), "TCP 16 rev Gbit/s"))
"""Issue 11 asks for TCP with one flow and with 16, in both directions (``-R``: server to client)."""


def udp_pps(lab: Lab, seconds: int) -> tuple[float, float]:
    """Received and sent rates of 64-byte UDP frames (iperf3, as fast as it can)."""
    report = iperf(lab, "-u", "-b", "0", "-l", str(UDP_PAYLOAD), seconds=seconds)
    total = report["end"]["sum"]
    received = total["packets"] - total["lost_packets"]
    return received / total["seconds"], total["packets"] / total["seconds"]


def server_counters(lab: Lab) -> tuple[int, int]:
    """(frames the server's NIC received, datagrams its UDP sockets dropped for a full receive buffer)."""
    ns = lab.server(1)
    nic = int(lab.run_in(ns, "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
    snmp = [line.split() for line in lab.run_in(ns, "cat", "/proc/net/snmp").stdout.splitlines()
            if line.startswith("Udp:")]
    return nic, int(dict(zip(snmp[0], snmp[1]))["RcvbufErrors"])


def udp_delivery(lab: Lab, seconds: int) -> dict:
    """UDP 64 B as ``udp_pps`` measures it, and where the datagrams that iperf3 counts as lost went: the rate
    at which frames reached the server's NIC (what the router, the copier or the kernel forwarded, less what the
    path dropped on its way) and the share of those that the server's own socket dropped (RcvbufErrors): that
    share is the receiving iperf3 falling behind on the shared cores, not the forwarder."""
    nic, socket_drops = server_counters(lab)
    received, sent = udp_pps(lab, seconds)
    nic_after, socket_drops_after = server_counters(lab)
    delivered = nic_after - nic
    return {"udp64_pps": round(received), "udp64_sent_pps": round(sent),
            "udp64_delivered_pps": round(delivered / seconds),
            "udp64_socket_dropped": round((socket_drops_after - socket_drops) / max(delivered, 1), 3)}


def ping_ms(lab: Lab, count: int) -> float:
    """The median round trip of ``count`` pings 20 ms apart, client to server (a median: one ping that meets a
    busy core says nothing of the path)."""
    out = lab.run_in(lab.client(1), "ping", "-c", str(count), "-i", "0.02", SERVER).stdout
    return statistics.median(float(t) for t in re.findall(r"time=([\d.]+)", out))


def gre_pps(lab: Lab, seconds: int, calls: int, progress) -> float:
    """Marked GRE received by the server per second, sent round-robin over ``calls`` real PPTP calls."""
    import tempfile
    from pathlib import Path

    from router.lab.pptp import start_pptp_client, start_pptpd
    base = Path(tempfile.mkdtemp(prefix="vpnrouter-bench-"))
    procs = [start_pptpd(lab, lab.server(1), base / "server")]
    try:
        time.sleep(0.5)
        for i in range(calls):
            procs.append(start_pptp_client(lab, lab.client(1), SERVER, base / f"c{i}"))
        progress(f"GRE: waiting for {calls} PPTP calls")
        deadline = time.monotonic() + 60
        while True:
            live = [s for s in json.loads(_ctl(lab, "sessions", "--json"))
                    if s.get("vpn") == "pptp" and s["proto"] == "gre" and s["peer_call_id"] is not None]
            if len(live) >= calls or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if len(live) < calls:
            raise RuntimeError(f"only {len(live)} of {calls} PPTP calls came up")
        progress(f"GRE over {calls} calls")
        ids = ",".join(str(s["peer_call_id"]) for s in live)
        # Every pptpctrl and pptp process holds a raw GRE socket and would wake for each packet, starving
        # the sender on two cores: they are paused for the measurement (the calls stay up in the router).
        paused = _pids(lab.server(1)) + _pids(lab.client(1))
        _signal(paused, signal.SIGSTOP)
        counter = lab.popen_in(lab.server(1), sys.executable, "-m", "tests.perf.gre_load", "count", str(seconds + 2),
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert counter.stdout.readline().strip() == "ready"
        lab.run_in(lab.client(1), sys.executable, "-m", "tests.perf.gre_load", "send", SERVER, str(seconds), ids,
                   timeout=seconds + 30, cwd=ROOT)
        received = int(counter.communicate(timeout=seconds + 30)[0].strip())
        _signal(paused, signal.SIGCONT)
        return received / seconds
    finally:
        for proc in procs:
            proc.terminate()


def esp_pps(lab: Lab, kind: str, seconds: int, flows: int, progress) -> tuple[float, float, float | None]:
    """Marked raw ESP (kind "esp") or NAT-T (kind "natt") received by the server per second, sent per second,
    and the router's CPU share.

    Raw ESP goes round-robin over ``flows`` SPIs, dealt over every client of the lab (one sending
    process opens a socket in each client namespace); NAT-T over ``flows`` UDP source ports of client 1.
    """
    progress(f"{'raw ESP' if kind == 'esp' else 'NAT-T'} over {flows} {'SPIs' if kind == 'esp' else 'flows'}")
    extra = [",".join(lab.client(i) for i in range(1, lab.clients + 1))] if kind == "esp" else []
    counter = lab.popen_in(lab.server(1), sys.executable, "-m", "tests.perf.esp_load", "count", kind,
                           str(seconds + 60), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert counter.stdout.readline().strip() == "ready"
        cpu = _router_cpu(lab)
        sent = int(lab.run_in(lab.client(1), sys.executable, "-m", "tests.perf.esp_load", "send", kind, SERVER,
                              str(seconds), str(flows), *extra, timeout=seconds + 30, cwd=ROOT).stdout.strip())
        time.sleep(0.5)   # the router's queue drains
        cpu = _router_cpu(lab, since=cpu, seconds=seconds)
        counter.terminate()   # `ip netns exec` execs the counter: it gets the signal, prints its count
        received = int(counter.communicate(timeout=30)[0].strip())
    finally:
        if counter.poll() is None:
            counter.kill()
    return received / seconds, sent / seconds, cpu


def l2tp_pps(lab: Lab, seconds: int, tunnels: int, progress) -> tuple[float, float, float | None]:
    """Marked L2TP data messages received by the LNS per second over ``tunnels`` tunnels (tests/perf/l2tp_load.py),
    sent per second, and the router's CPU share."""
    progress(f"L2TP data over {tunnels} tunnels")
    counter = lab.popen_in(lab.server(1), sys.executable, "-m", "tests.perf.l2tp_load", "lns", str(seconds + 60),
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert counter.stdout.readline().strip() == "ready"
        cpu = _router_cpu(lab)
        out = lab.run_in(lab.client(1), sys.executable, "-m", "tests.perf.l2tp_load", "lac", SERVER, str(seconds),
                         str(tunnels), timeout=seconds + 60, cwd=ROOT).stdout.split()
        sent = int(out[-1])
        time.sleep(0.5)
        cpu = _router_cpu(lab, since=cpu, seconds=seconds)
        counter.terminate()
        received = int(counter.communicate(timeout=30)[0].split()[-1])
    finally:
        if counter.poll() is None:
            counter.kill()
    return received / seconds, sent / seconds, cpu


TABLE_SESSIONS = 16000
FLOWS = """
import socket, sys, time
for i, port in enumerate(range(20000, 20000 + int(sys.argv[2]))):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.sendto(b"x", (sys.argv[1], 9))
    s.close()
    if i % 200 == 199:
        time.sleep(0.02)   # paced, so that the TAP's queue never overflows
"""


FLOOD_PPS = 20_000
"""The WAN flood's offered rate: half of what vpnrouter forwards of 64-byte UDP on these machines."""


def wan_flood(lab: Lab, seconds: int, progress) -> dict:
    """TCP through the NAT alone, then beside a flood of unsolicited UDP from the server to random ports of the
    router's WAN address, FLOOD_PPS a second (tests/integration/wan_attacks.py), from a second process."""
    progress(f"TCP alone, then beside a WAN flood of unsolicited UDP, {FLOOD_PPS:,} a second")
    quiet = tcp_gbps(lab, seconds)
    flood = lab.popen_in(lab.server(1), sys.executable, "-m", "tests.integration.wan_attacks", ROUTER_WAN,
                         "flood", str(seconds + 2), str(FLOOD_PPS), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        flooded = tcp_gbps(lab, seconds)
    finally:
        sent = int(flood.communicate(timeout=seconds + 60)[0] or 0)
    return {"tcp_gbps_before_flood": round(quiet, 3), "tcp_gbps_flooded": round(flooded, 3),
            "flood_sent_pps": round(sent / (seconds + 2))}


def table_read_rtt(lab: Lab, progress, sessions: int = TABLE_SESSIONS, reads: int = 3) -> dict:
    """Forwarding while the session table is read: the largest RTT of a ping every 5 ms, with and without
    ``reads`` reads of a table of ``sessions`` sessions (`ctl sessions --json`), and how long a read takes."""
    progress(f"{sessions} sessions, then a ping every 5 ms while the table is read {reads} times")
    for _ in range(5):      # a busy machine drops some of the first datagrams: send again until all are there
        lab.run_in(lab.client(1), sys.executable, "-c", FLOWS, SERVER, str(sessions), timeout=120)
        if json.loads(_ctl(lab, "status", "--json"))["sessions"] >= sessions:
            break
    count = 400 + 200 * reads

    def max_rtt(during) -> float:
        ping = lab.popen_in(lab.client(1), "ping", "-q", "-i", "0.005", "-c", str(count), SERVER,
                            stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        took = during()
        out = ping.communicate(timeout=60)[0]
        return float(out.rsplit("=", 1)[1].split("/")[2]), took

    quiet, _ = max_rtt(lambda: 0.0)

    def read_table() -> float:
        start = time.monotonic()
        for _ in range(reads):
            table = json.loads(_ctl(lab, "sessions", "--json"))
        assert len(table) >= sessions, f"only {len(table)} sessions"
        return (time.monotonic() - start) / reads

    busy, per_read = max_rtt(read_table)
    return {"table_sessions": sessions, "ping_max_ms_quiet": quiet, "ping_max_ms_reading": busy,
            "table_read_s": round(per_read, 3)}


def integrity(lab: Lab, mebibytes: int = 64, datagrams: int = 50_000) -> dict:
    """Correctness as it goes (tests/perf/integrity.py): a TCP transfer's sha256 at both ends, and UDP datagrams
    counted for reordering, through the router as it forwards at full speed."""
    run = [sys.executable, "-m", "tests.perf.integrity"]
    client, server = lab.client(1), lab.server(1)
    sink = lab.popen_in(server, *run, "tcp-sink", "5201", stdout=subprocess.PIPE, text=True, cwd=ROOT)
    sink.stdout.readline()
    sent = json.loads(lab.run_in(client, *run, "tcp-source", SERVER, "5201", str(mebibytes), timeout=300,
                                 cwd=ROOT).stdout)
    got = json.loads(sink.communicate(timeout=60)[0])
    udp_sink = lab.popen_in(server, *run, "udp-sink", "5202", "60", stdout=subprocess.PIPE, text=True, cwd=ROOT)
    udp_sink.stdout.readline()
    lab.run_in(client, *run, "udp-source", SERVER, "5202", str(datagrams), timeout=120, cwd=ROOT)
    udp = json.loads(udp_sink.communicate(timeout=90)[0])
    return {"tcp_bytes": got["bytes"], "tcp_sha256_equal": got == sent, "udp_sent": datagrams,
            "udp_received": udp["received"], "udp_out_of_order": udp["out_of_order"]}


SCALE_FLOWS = """
import socket, sys, time
host, first_dport, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1000)]
for i, s in enumerate(socks):
    s.bind(("0.0.0.0", 20000 + i))
start = time.monotonic()
for n in range(count):
    socks[n % 1000].sendto(b"x", (host, first_dport + n // 1000))
    if n % 100 == 99:                      # no faster than rate new flows a second
        ahead = (n + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
print(time.monotonic() - start)
"""
OFFERED_FLOWS = 25_000
"""New flows a second offered to the router for its set-up rate (issue 11's goal: 20,000)."""


def _rss_mb(lab: Lab) -> float:
    text = Path(f"/proc/{lab.router_proc.pid}/status").read_text()
    return int(text.split("VmRSS:", 1)[1].split()[0]) / 1024


def _created(lab: Lab) -> int:
    return json.loads(_ctl(lab, "status", "--json"))["counters"]["sessions_created"]


def scale(lab: Lab, seconds: int, progress, sessions: int = 100_000) -> dict:
    """Issue 11's scale figures: new flows set up per second (``OFFERED_FLOWS`` a second offered for two
    seconds), the router's memory growth to ``sessions`` UDP sessions, and the UDP 64 B rate then against the rate
    with a handful of sessions (the best of two runs each)."""
    lab.stop_router()
    lab.start_router(extra_config=f"[limits]\nsessions = {sessions + 32768}\nsessions_per_host = {sessions + 32768}\n")
    ping_ms(lab, 3)
    progress("UDP 64 B with a handful of sessions")
    few = max(udp_pps(lab, seconds)[0] for _ in range(2))
    rss_before = _rss_mb(lab)

    def offer(first_dport: int, count: int, rate: float) -> float:
        return float(lab.run_in(lab.client(1), sys.executable, "-c", SCALE_FLOWS, SERVER, str(first_dport),
                                str(count), str(rate), timeout=300).stdout)

    progress(f"{OFFERED_FLOWS:,} new flows a second for two seconds")
    before = _created(lab)
    took = offer(10000, 2 * OFFERED_FLOWS, OFFERED_FLOWS)
    time.sleep(0.5)
    created = _created(lab) - before
    progress(f"filling the table to {sessions:,} sessions")
    for _ in range(5):
        offer(10000, sessions, 5000)
        if json.loads(_ctl(lab, "status", "--json"))["sessions"] >= sessions:
            break
    table = json.loads(_ctl(lab, "status", "--json"))["sessions"]
    rss_after = _rss_mb(lab)
    progress(f"UDP 64 B with {table:,} sessions")
    full = max(udp_pps(lab, seconds)[0] for _ in range(2))
    return {"scale_sessions": table, "scale_rss_before_mb": round(rss_before, 1),
            "scale_rss_after_mb": round(rss_after, 1), "new_flows_per_s": round(created / took),
            "new_flows_offered": 2 * OFFERED_FLOWS, "new_flows_created": created,
            "udp64_few_sessions_pps": round(few), "udp64_full_table_pps": round(full)}


BEHAVIOURS = (("default", 'profile = "default"', "the default behaviour, restarted likewise"),
              ("port_set", 'profile = "map-e"', "a MAP-E port set (240 ports)"),
              ("apdm", 'mapping = "address-and-port-dependent"', "address-and-port-dependent mapping"))


def behaviour_udp_pps(lab: Lab, seconds: int, progress, rounds: int = 2) -> dict:
    """The UDP 64 B rate with the router restarted under other NAT behaviours (issue 10: at least 0.9 x), each
    measured the same way (a restart, a few pings, one iperf3 run), the default as their baseline, in ``rounds``
    interleaved rounds: the best of each, since other load on the machine only ever lowers a figure."""
    runs: dict[str, list[int]] = {key: [] for key, _, _ in BEHAVIOURS}
    for round_ in range(1, rounds + 1):
        for key, nat, label in BEHAVIOURS:
            progress(f"UDP 64 B with {label} (round {round_} of {rounds})")
            lab.stop_router()
            lab.start_router(extra_config=f"[nat]\n{nat}\n")
            ping_ms(lab, 3)
            received, _ = udp_pps(lab, seconds)
            runs[key].append(round(received))
    result = {f"udp64_{key}_pps": max(values) for key, values in runs.items()}
    result.update({f"udp64_{key}_runs": values for key, values in runs.items()})
    return result


def _router_cpu(lab: Lab, since: float | None = None, seconds: float = 0) -> float | None:
    """CPU seconds the router process has used; with ``since``, its share of one CPU over ``seconds``."""
    if lab.router_proc is None:
        return None
    try:   # `ip netns exec` execs the router: same pid
        fields = Path(f"/proc/{lab.router_proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if since is None or not seconds:
        return used
    return round((used - since) / seconds, 2)


def _pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _ctl(lab: Lab, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "router", "ctl", "--socket", str(lab.socket_path), *args],
                          capture_output=True, text=True, timeout=30, check=True).stdout


def measure(lab: Lab, seconds: int, progress) -> dict:
    progress("ping")
    ping_ms(lab, 5)  # warm ARP caches and sessions
    rtt = ping_ms(lab, 100)
    progress("TCP")
    tcp = tcp_gbps(lab, seconds)
    more_tcp = {}
    for key, args, label in TCP_CASES:
        progress(label.rsplit(" ", 1)[0])
        more_tcp[key] = round(tcp_gbps(lab, seconds, *args), 3)
    progress("UDP 64 B")
    cpu = _router_cpu(lab)
    udp = udp_delivery(lab, seconds)
    result = {"tcp_gbps": round(tcp, 3), **more_tcp, **udp, "ping_ms": round(rtt, 3)}
    if cpu is not None:
        result["udp64_router_cpu"] = _router_cpu(lab, since=cpu, seconds=seconds)
    return result


WAN_MODES = ("map-e", "ds-lite")


def measure_wan(mode: str, seconds: int, progress) -> dict:
    """TCP with one flow, UDP 64 B and the RTT through the router on an IPv6 WAN (``vpnrouter lab --wan``)."""
    lab = Lab(prefix="bw", clients=1, servers=1, wan=mode, keep_state=False)
    try:
        lab.up(progress=progress)
        lab.start_router()
        progress("ping")
        ping_ms(lab, 5)
        rtt = ping_ms(lab, 100)
        progress("TCP")
        tcp = tcp_gbps(lab, seconds)
        progress("UDP 64 B")
        return {"tcp_gbps": round(tcp, 3), **udp_delivery(lab, seconds), "ping_ms": round(rtt, 3)}
    finally:
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each iperf3 run (default 8)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--calls", type=int, default=16, help="concurrent PPTP calls for the GRE rate (default 16)")
    parser.add_argument("--associations", type=int, default=16,
                        help="ESP SPIs and NAT-T flows for the IPsec rates (default 16)")
    parser.add_argument("--esp-clients", type=int, default=1, metavar="N",
                        help="LAN clients the raw ESP SPIs are dealt over (default 1: all from one client)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    results = {}
    progress = lambda step: print(f"bench: copier: {step}...", file=sys.stderr, flush=True)  # noqa: E731
    with copier_lab(progress) as lab:     # the I/O ceiling: TAP to TAP in Python, no routing
        results["copier"] = measure(lab, args.seconds, progress)
    progress = lambda step: print(f"bench: vpnrouter, Python only: {step}...", file=sys.stderr, flush=True)  # noqa
    python_lab = Lab(prefix="bp", clients=1, servers=1, keep_state=False)
    try:                  # the reference: every frame through the Python data plane
        python_lab.up()
        python_lab.start_router(extra_config="[dataplane]\nfastpath = false\n")
        results["python"] = measure(python_lab, args.seconds, progress)
    finally:
        python_lab.down()
    for name, lab in (("kernel", Lab(prefix="bk", clients=1, servers=1, kernel=True)),
                      ("vpnrouter", Lab(prefix="bv", clients=args.esp_clients, servers=1, keep_state=False))):
        progress = lambda step, name=name: print(f"bench: {name}: {step}...", file=sys.stderr, flush=True)
        try:
            lab.up()
            if not lab.kernel:    # one client makes the 16,000 sessions of the table-read figure
                lab.start_router(extra_config="[limits]\nsessions_per_host = 65536\n")
            results[name] = measure(lab, args.seconds, progress)
            results[name].update(wan_flood(lab, args.seconds, progress))
            if not lab.kernel:
                for kind in ("esp", "natt"):
                    received, sent, cpu = esp_pps(lab, kind, args.seconds, args.associations, progress)
                    results[name][f"{kind}16_pps"] = round(received)
                    results[name][f"{kind}16_sent_pps"] = round(sent)
                    results[name][f"{kind}16_router_cpu"] = cpu
                received, sent, cpu = l2tp_pps(lab, args.seconds, args.associations, progress)
                results[name].update(l2tp16_pps=round(received), l2tp16_sent_pps=round(sent), l2tp16_router_cpu=cpu)
                results[name]["gre16_pps"] = round(gre_pps(lab, args.seconds, args.calls, progress))
                results[name].update(table_read_rtt(lab, progress))
                results[name].update(scale(lab, args.seconds, progress))
                progress("correctness: a TCP transfer's sha256, UDP order")
                results[name]["integrity"] = integrity(lab)
                results[name].update(behaviour_udp_pps(lab, args.seconds, progress))
        finally:
            lab.down()
    for mode in WAN_MODES:           # the same router on an IPv6 WAN, through the lab's BR or AFTR
        progress = lambda step, mode=mode: print(f"bench: vpnrouter, {mode}: {step}...", file=sys.stderr, flush=True)
        results[mode] = measure_wan(mode, args.seconds, progress)
    results["instructions"] = instructions.measure(
        lambda step: print(f"bench: {step}...", file=sys.stderr, flush=True))
    k, v, c, p = results["kernel"], results["vpnrouter"], results["copier"], results["python"]
    print(f"\n{'':<22}{'Linux kernel NAT':>18}{'Python copier':>15}{'vpnrouter':>11}{'/kernel':>9}{'/copier':>9}"
          f"{'Python only':>13}")
    for key, label in (("tcp_gbps", "TCP Gbit/s"), *((key, label) for key, _, label in TCP_CASES),
                       ("udp64_pps", "UDP 64 B pps recv"), ("udp64_delivered_pps", "  at the server's NIC"),
                       ("ping_ms", "ping RTT ms (median)")):
        print(f"{label:<22}{k[key]:>18}{c[key]:>15}{v[key]:>11}{v[key] / k[key]:>9.2f}{v[key] / c[key]:>9.2f}"
              f"{p[key]:>13}")
    print("vpnrouter: established flows forwarded by the fast path ([dataplane] fastpath = true, the default); "
          "Python only: fastpath = false.\ngoals: UDP 64 B at least 1.0 x the copier; RTT at most the copier's; TCP "
          "at least the copier's, and 0.65 x the kernel's with one flow")
    print("UDP 64 B: 'pps recv' is what iperf3 received; 'at the server's NIC' what reached the server, of which its "
          "socket dropped (receive buffer full): " + ", ".join(
              f"{name} {r['udp64_socket_dropped']:.0%}" for name, r in (("kernel", k), ("copier", c),
                                                                        ("vpnrouter", v), ("Python only", p))))
    copier_cpu = c.get("udp64_router_cpu")
    print(f"Python copier: TAP to TAP with the router's I/O and no routing (tests/perf/copier.py), the ceiling for "
          f"Python on TAP; UDP 64 B sent {c['udp64_sent_pps']} pps"
          + ("" if copier_cpu is None else f", copier CPU {copier_cpu:.0%}"))
    counted = results["instructions"]
    print(f"Instructions per frame (valgrind, tests/perf/instructions.py; noise does not move them): UDP 64 B out: "
          f"copier {counted['copier_out']}, vpnrouter {counted['vpnrouter_out']} (goal at most 2,500), Python only "
          f"{counted['python_out']}; in: vpnrouter {counted['vpnrouter_in']}, Python only {counted['python_in']}; "
          f"an unsolicited datagram (dropped in Python): {counted['vpnrouter_unsolicited']}; under MAP-E (Python, "
          f"into and out of the softwire): out {counted['map-e_out']}, in {counted['map-e_in']}")
    print(f"\n{'vpnrouter, same run, by WAN':<28}{'TCP Gbit/s':>11}{'UDP 64 B pps recv':>19}{'at the NIC':>12}"
          f"{'ping ms':>9}")
    for name, figures in (("ipv4 (fast path)", v), ("ipv4, Python only", p),
                          *((f"{mode} (Python)", results[mode]) for mode in WAN_MODES)):
        print(f"{name:<28}{figures['tcp_gbps']:>11}{figures['udp64_pps']:>19}{figures['udp64_delivered_pps']:>12}"
              f"{figures['ping_ms']:>9}")
    print("map-e: through the lab's BR (RFC 7597), ds-lite: through its AFTR (RFC 6333), each a userspace softwire "
          "endpoint (router/lab/softwire.py) in its own namespace; the router encapsulates in Python, with the TAP "
          "offloads off.")
    print(f"\nvpnrouter, same run: GRE 64 B over {args.calls} PPTP calls {v['gre16_pps']} pps received, "
          f"plain UDP 64 B {v['udp64_pps']} pps (ratio {v['gre16_pps'] / v['udp64_pps']:.2f})")
    spread = f", {args.esp_clients} clients" if args.esp_clients > 1 else ""
    n = args.associations
    print(f"\n{'vpnrouter, same run, 64 B':<32}{'pps recv':>10}{'ratio':>7}{'pps sent':>10}{'router CPU':>12}"
          f"{'pps/CPU':>9}")
    for key, label in (("udp64", "plain UDP (iperf3)"), ("esp16", f"raw ESP, {n} SPIs{spread}"),
                       ("natt16", f"NAT-T, {n} UDP flows"), ("l2tp16", f"L2TP data, {n} tunnels")):
        pps, cpu = v[key + "_pps"], v.get(key + "_router_cpu")
        print(f"{label:<32}{pps:>10}{pps / v['udp64_pps']:>7.2f}{v[key + '_sent_pps']:>10}"
              f"{'' if cpu is None else f'{cpu:.0%}':>12}{'' if not cpu else round(pps / cpu):>9}")
    print(f"vpnrouter, same run, scale: {v['scale_sessions']:,} UDP sessions, router RSS "
          f"{v['scale_rss_before_mb']} -> {v['scale_rss_after_mb']} MB "
          f"(+{v['scale_rss_after_mb'] - v['scale_rss_before_mb']:.0f} MB; goal at most 100); "
          f"{v['new_flows_per_s']:,} new flows a second ({v['new_flows_created']:,} of {v['new_flows_offered']:,} "
          f"offered at {OFFERED_FLOWS:,} a second; goal 20,000); "
          f"UDP 64 B {v['udp64_full_table_pps']} pps with the table full, {v['udp64_few_sessions_pps']} with a few "
          f"(ratio {v['udp64_full_table_pps'] / v['udp64_few_sessions_pps']:.2f}; goal at least 0.95)")
    check = v["integrity"]
    print(f"vpnrouter, same run, correctness: TCP {check['tcp_bytes'] >> 20} MiB, sha256 "
          f"{'equal at both ends' if check['tcp_sha256_equal'] else 'DIFFERENT'}; UDP {check['udp_sent']:,} "
          f"numbered datagrams, {check['udp_received']:,} received, {check['udp_out_of_order']} out of order")
    base = v["udp64_default_pps"]
    for key, _, label in BEHAVIOURS:
        pps = v[f"udp64_{key}_pps"]
        print(f"vpnrouter, same run: plain UDP 64 B with {label}: {pps} pps (best of {v[f'udp64_{key}_runs']})"
              + ("" if key == "default" else f" (ratio to the default {pps / base:.2f}; goal at least 0.90)"))
    for who, figures in (("Linux kernel NAT", k), ("vpnrouter", v)):
        print(f"{who}, same run: TCP {figures['tcp_gbps_before_flood']} Gbit/s alone, {figures['tcp_gbps_flooded']} "
              f"beside a WAN flood of unsolicited UDP at {figures['flood_sent_pps']} pps (ratio "
              f"{figures['tcp_gbps_flooded'] / figures['tcp_gbps_before_flood']:.2f})")
    print(f"\nvpnrouter, same run: a ping every 5 ms, largest RTT {v['ping_max_ms_quiet']} ms alone, "
          f"{v['ping_max_ms_reading']} ms while {v['table_sessions']} sessions were read 3 times "
          f"(`ctl sessions --json`, {v['table_read_s']} s a read; goal: under 50 ms)")
    print("goal: raw ESP, NAT-T, GRE and L2TP at least 0.95 x plain UDP.  pps sent well above pps recv: the router is the limit;\n"
          "router CPU below 100% with that: it was short of CPU, and pps/CPU (received per router CPU second) compares\n"
          "the per-packet cost.")
    print("bench: the dashboard, headless, 10,000 sessions and 500 events a second...", file=sys.stderr, flush=True)
    from tests.perf.dashboard import run_bench
    tui = results["tui"] = run_bench(sessions=10_000, events_per_second=500.0, seconds=8.0)
    print(f"\nvpnrouter tui, headless (tests/perf/dashboard.py): {tui['sessions']} sessions, "
          f"{tui['events_offered_per_second']} events/s offered, {tui['events_per_second']} applied "
          f"({'keeps up' if tui['keeps_up'] else 'FALLS BEHIND'}); a screen update {tui['update_ms']['mean']} ms "
          f"(p95 {tui['update_ms']['p95']}, max {tui['update_ms']['max']}), drawing {tui['render_ms']['mean']} ms "
          f"(p95 {tui['render_ms']['p95']}); a key {tui['key_ms']['mean'] if tui['key_ms'] else '-'} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    from tests.perf.report import save
    path, lines, png = save(results)
    print(f"\nratios, this run beside the last one (bench-results/, {path.name}"
          f"{', with a PNG' if png else '; no PNG: matplotlib is missing'}):")
    print("\n".join(f"  {line}" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
