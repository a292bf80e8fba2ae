"""RFC 4787 NAT behaviour seen from outside: coturn's STUN server and its RFC 5780 discovery client.

RFC 5780 behaviour discovery needs a STUN server with two addresses and two
ports, so it can answer a CHANGE-REQUEST from the other address or port and
tell the client where those are (OTHER-ADDRESS).  ``StunServer`` runs
``turnserver --stun-only`` that way in a WAN namespace; ``discover()`` runs
``turnutils_natdiscovery`` in a client namespace and reads its report into
RFC 4787's terms.

What the tool does (coturn 4.6.1, ``src/apps/natdiscovery/natdiscovery.c``).
Every request of one test leaves from the same local port (``-L IP -l PORT``);
an unanswered one costs 3 s and prints ``STUN receive timeout..``.  P is the
server's primary address, A its alternate, p and a the two ports:

    -m  mapping, RFC 5780 §4.3: to P:p, then to A:p; the same mapped address
        is "Endpoint Independent"; else to A:a: the same as from A:p is
        "Address Dependent", a third one "Address and Port Dependent".
    -f  filtering, §4.4: to P:p, then CHANGE-REQUEST ip+port (the answer
        comes from A:a): answered is "Endpoint Independent"; else change port
        only (from P:a): answered is "Address Dependent", else "Address and
        Port Dependent".
    -H  hairpinning, §4.5: to P:p from L1, then a binding request from a second
        local port to L1's mapped address: it arrives at L1 ("Received a
        request (maybe a successful hairpinning)") or both sockets time out.

The tool prints a verdict line, but on a timeout in ``-m`` it compares a
stale address and would say "Endpoint Independent"; so the verdict is taken
only when it agrees with what the printed responses show (who answered, from
where, with which mapped address), and anything else raises
``DiscoveryError`` with the tool's output.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STUN_PORT = 3478
ALT_PORT = 3479
REPLY_TIMEOUTS = 3.0
"""Seconds natdiscovery waits for each answer (fixed in the tool)."""

MAPPINGS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
FILTERINGS = MAPPINGS
VERDICT_TERMS = {"Endpoint Independent": "endpoint-independent", "Address Dependent": "address-dependent",
                 "Address and Port Dependent": "address-and-port-dependent"}
"""natdiscovery's words -> RFC 4787's (§4.1 mapping, §5 filtering)."""

FLAGS = {"mapping": "-m", "filtering": "-f", "hairpinning": "-H"}
HEADERS = {"mapping": "-= Mapping Behavior Discovery =-", "filtering": "-= Filtering Behavior Discovery =-",
           "hairpinning": "-= Hairpinning Behavior Discovery =-"}

_RESPONSE = re.compile(r"^RFC 5780 response \d+$", re.M)
_VERDICT = re.compile(r"^NAT with (.+) (Mapping|Filtering)!$", re.M)
_NO_NAT = "No NAT! (Endpoint Independent Mapping)"
_TIMEOUT = "STUN receive timeout.."
_HAIRPIN = "Received a request (maybe a successful hairpinning)"
_ADDRESS = {name: re.compile(rf"IPv4\. {label}:[ :]*([\d.]+):(\d+)$", re.M) for name, label in (
    ("origin", "Response origin"), ("other", "Other addr"), ("mapped", "UDP reflexive addr"),
    ("local", "Local addr"))}

Address = tuple[str, int]


class DiscoveryError(RuntimeError):
    pass


# -- the server -----------------------------------------------------------------------------------

@dataclass
class StunServer:
    """``turnserver --stun-only`` on ``primary`` and ``alternate`` (added to ``device`` if missing), ports p and a.

    Its config, log, pid file and the SQLite file it always opens live in
    ``directory``; no TLS, DTLS, TCP, CLI, database server or syslog.
    """
    ns: str
    primary: str
    alternate: str
    directory: Path
    device: str = "eth0"
    prefix_len: int = 24
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "turnserver.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "turnserver.log"

    def config(self) -> str:
        d = self.directory
        return ("# RFC 5780 discovery needs two listening addresses of one family (coturn then turns it on)\n"
                "# and an alternate port for CHANGE-REQUEST.\n"
                f"listening-ip={self.primary}\nlistening-ip={self.alternate}\n"
                f"listening-port={STUN_PORT}\nalt-listening-port={ALT_PORT}\n"
                "stun-only\nno-tcp\nno-tls\nno-dtls\nno-cli\n"
                f"userdb={d}/turndb\npidfile={d}/turnserver.pid\n"
                f"log-file={self.log_path}\nsimple-log\nno-stdout-log\nverbose\nlog-binding\n")

    def start(self, wait: float = 10.0) -> StunServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        shown = _run(["ip", "-4", "-o", "addr", "show", "dev", self.device], self.ns).stdout
        if f" {self.alternate}/" not in shown:
            _run(["ip", "addr", "add", f"{self.alternate}/{self.prefix_len}", "dev", self.device], self.ns)
        self.config_path.write_text(self.config())
        with open(self.directory / "turnserver.stdout", "w") as out:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "turnserver", "-c", str(self.config_path)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wanted = {f"{ip}:{port}" for ip in (self.primary, self.alternate) for port in (STUN_PORT, ALT_PORT)}
        deadline = time.monotonic() + wait
        while not wanted <= self.listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DiscoveryError(f"turnserver did not open {sorted(wanted)} in {self.ns}: {self.log()}")
            time.sleep(0.05)
        return self

    def listening(self) -> set[str]:
        rows = _run(["ss", "-Hnlu"], self.ns).stdout.splitlines()
        return {row.split()[3] for row in rows if len(row.split()) > 3}

    def log(self) -> str:
        text = ""
        for path in (self.directory / "turnserver.stdout", self.log_path):
            if path.exists():
                text += f"\n--- {path}\n{path.read_text()[-3000:]}"
        return text

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> StunServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the client -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Response:
    """One RFC 5780 Binding response as natdiscovery printed it."""
    origin: Address
    """RESPONSE-ORIGIN: where the server sent it from."""
    other: Address
    """OTHER-ADDRESS: the server's alternate address and port."""
    mapped: Address
    """XOR-MAPPED-ADDRESS: where the server saw the request come from."""
    local: Address


@dataclass(frozen=True, slots=True)
class Discovery:
    test: str
    """"mapping", "filtering" or "hairpinning"."""
    behaviour: str | bool
    """RFC 4787's term (``MAPPINGS``, ``FILTERINGS``), or whether hairpinning works."""
    translated: bool
    """False where the tool said "No NAT!": the server saw the local address itself."""
    responses: tuple[Response, ...]
    output: str

    @property
    def local(self) -> Address:
        return self.responses[0].local

    @property
    def mapped(self) -> Address:
        """The first mapping the server saw (the address and port a NAT assigned)."""
        return self.responses[0].mapped


def discover(test: str, ns: str, server: str, local: Address, timeout: float = 30.0) -> Discovery:
    """Run ``turnutils_natdiscovery`` for ``test`` in ``ns`` from ``local`` against ``server`` (its primary address)."""
    cmd = ["ip", "netns", "exec", ns, "turnutils_natdiscovery", FLAGS[test], "-L", local[0], "-l", str(local[1]),
           "-p", str(STUN_PORT), server]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise DiscoveryError(f"{' '.join(cmd)} exited with {result.returncode}:\n{output}")
    try:
        return parse(test, output, server)
    except DiscoveryError as exc:
        raise DiscoveryError(f"{' '.join(cmd)}: {exc}") from None


def parse(test: str, output: str, server: str) -> Discovery:
    """natdiscovery's output for ``test`` -> a ``Discovery``; ``DiscoveryError``, with the output, when unclear."""
    if HEADERS[test] not in output:
        _fail(f"no {HEADERS[test]!r}", output)
    responses = _responses(output)
    if not responses:
        _fail("no RFC 5780 response (the server did not answer, or sent no OTHER-ADDRESS)", output)
    primary, other = (server, STUN_PORT), responses[0].other
    if responses[0].origin != primary or other[0] == server or other[1] == STUN_PORT:
        _fail(f"the first response came from {responses[0].origin} naming {other} as the other address", output)
    timeouts = output.count(_TIMEOUT)
    translated = responses[0].mapped != responses[0].local
    if test != "hairpinning" and (_NO_NAT in output) == translated:   # -H never says "No NAT!"
        _fail("the tool's 'No NAT!' disagrees with the addresses it printed", output)
    read = {"mapping": _mapping, "filtering": _filtering, "hairpinning": _hairpinning}[test]
    behaviour = read(responses, timeouts, output, primary, other)
    return Discovery(test, behaviour, translated, responses, output)


def _mapping(responses, timeouts, output, primary, other) -> str:
    """RFC 5780 §4.3, from the mapped addresses; it must agree with the tool's verdict."""
    origins = [r.origin for r in responses]
    expected = [primary, (other[0], STUN_PORT), other][:len(responses)]
    if timeouts or len(responses) not in (2, 3) or origins != expected:
        _fail(f"mapping test: responses from {origins}, {timeouts} timeouts", output)
    first, second = responses[0].mapped, responses[1].mapped
    if len(responses) == 2:
        mine = "endpoint-independent" if first == second else None
    else:
        mine = None if first == second else (
            "address-dependent" if second == responses[2].mapped else "address-and-port-dependent")
    return _agreed(mine, "Mapping", output)


def _filtering(responses, timeouts, output, primary, other) -> str:
    """RFC 5780 §4.4, from which CHANGE-REQUEST answers arrived; it must agree with the tool's verdict."""
    answered = tuple(r.origin for r in responses[1:])
    mine = {((other,), 0): "endpoint-independent", (((primary[0], other[1]),), 1): "address-dependent",
            ((), 2): "address-and-port-dependent"}.get((answered, timeouts))
    return _agreed(mine, "Filtering", output)


def _hairpinning(responses, timeouts, output, primary, other) -> bool:
    if len(responses) != 1:
        _fail(f"hairpinning test: {len(responses)} responses", output)
    if _HAIRPIN in output and timeouts == 0:
        return True
    if _HAIRPIN not in output and timeouts == 2:
        return False
    _fail("hairpinning test: neither the request arrived nor both sockets timed out", output)


def _agreed(mine: str | None, kind: str, output: str) -> str:
    verdicts = [VERDICT_TERMS.get(words) for words, k in _VERDICT.findall(output) if k == kind]
    if len(verdicts) != 1 or verdicts[0] is None:
        _fail(f"expected one 'NAT with ... {kind}!' verdict, found {verdicts}", output)
    if mine != verdicts[0]:
        _fail(f"the tool says {verdicts[0]} but its responses show {mine}", output)
    return mine


def _responses(output: str) -> tuple[Response, ...]:
    blocks = _RESPONSE.split(output)[1:]
    responses = []
    for block in blocks:
        found = {name: pattern.search(block) for name, pattern in _ADDRESS.items()}
        missing = [name for name, match in found.items() if match is None]
        if missing:
            _fail(f"a response without {missing}", output)
        responses.append(Response(**{name: (m.group(1), int(m.group(2))) for name, m in found.items()}))
    return tuple(responses)


def _fail(reason: str, output: str):
    raise DiscoveryError(f"{reason}; natdiscovery printed:\n{output}")


def _run(cmd: list[str], ns: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise DiscoveryError(f"{' '.join(cmd)} in {ns}: {result.stderr.strip()}")
    return result
