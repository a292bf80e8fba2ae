"""Planted bugs in the fast path, each caught by the differential tests (issue 19).

A bug in the C flow cache is planted by editing a copy of its sources and
building them (gcc, as ``pip install`` does); one in its Python side by
replacing a method for the test.  Each must make ``caught()``, a run of the
differential scenarios of ``test_fastpath.py``, fail.  A planted bug whose
text is no longer in the source fails here too, so the list cannot go stale
without anyone noticing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sysconfig
from pathlib import Path

import pytest

from router.dataplane.router import Router
from router.fastpath import router as fastpath_router
from tests.unit import test_fastpath as scenarios
from tests.unit.differential import Mismatch

FASTPATH = Path(__file__).resolve().parents[2] / "router" / "fastpath"
SOURCES = ("_flowcache.c", "forward.c", "table.c", "flowcache.h")

C_BUGS = {
    "a wrong checksum delta (the full one where the kernel completes a partial sum)":
        ("put16(f + at, partial_update(value, e->addr_delta));", "put16(f + at, partial_update(value, e->l4_delta));"),
    "no TTL decrement": ("    ip[8] -= 1;\n", "\n"),
    "a stale ARP header (the next hop's MAC used past its ARP lifetime)":
        ("if (now > e->arp_expires)", "if (0)"),
    "a TCP segment with FIN, SYN or RST forwarded by the cache": ("(l4[13] & 7)", "(l4[13] & 0)"),
    "a datagram beyond the MTU forwarded whole": ("if (tot_len > fc->mtu[out] && !f[1])", "if (0)"),
    "a GSO super-frame counted as one packet": ("e->segments += segments_of(f, tot_len);", "e->segments += 1;"),
    "last-seen never handed back": ("    e->last_now = now;\n", "\n"),
    "a first fragment forwarded by the cache": ("if (be16(ip + 6) & 0x3FFF)", "if (be16(ip + 6) & 0x1FFF)"),
    "an L2TP Tunnel ID restored without its checksum":
        ("udp_payload_u16(f, l4, tunnel_at, e->restore_value);", "put16(f + tunnel_at, e->restore_value);"),
    "an ICMP query's checksum given the pseudo-header's address delta (ICMP has none)":
        ("put16(f + l4 + 2, csum_update(be16(f + l4 + 2), e->l4_delta));",
         "put16(f + l4 + 2, csum_update(be16(f + l4 + 2), e->addr_delta));"),
    "a GRE Call ID not restored": ("put16(f + l4 + e->restore_at, e->restore_value);", "(void)0;"),
}
"""What the C bug is: (the source's text, what it becomes)."""


def _no_sync_receive(self, port, frame, now):
    out = self.cache.forward(port, frame, now)
    if out >= 0:
        self.outbox[out].append(frame)
        return
    Router.receive_frame(self, port, frame, now)


PYTHON_BUGS = {
    "a missed withdrawal: a closed session's entries stay": ("__init__", lambda original: lambda self, *a, **k: (
        original(self, *a, **k), setattr(self.nat, "closing", None))[0]),
    "a missed withdrawal: a helper's changes keep their entries": ("_withdraw", lambda original: lambda self, o: None),
    "an ARP change not withdrawn": ("_arp", lambda original: Router._arp),
    "no sync before Python decides": ("receive_frame", lambda original: _no_sync_receive),
}
"""What the Python bug is: (the ``FastPathRouter`` method replaced, a function of the original giving the new)."""


def caught() -> str | None:
    """The first differential scenario that fails, or None."""
    cases = [scenarios.test_every_flow_kind_in_bursts, scenarios.test_expiry_with_traffic_only_on_the_fast_path,
             scenarios.test_a_neighbour_with_a_new_mac_gets_the_next_frame,
             scenarios.test_a_neighbour_past_its_arp_lifetime,
             scenarios.test_a_nat_t_session_that_changes_its_spi_back_and_forth,
             scenarios.test_an_inbound_esp_spi_paired_by_what_the_cache_forwarded_last,
             scenarios.test_sessions_and_flows_closed_by_request,
             scenarios.test_gso_super_frames_count_the_segments_they_stand_for,
             scenarios.test_captures_started_mid_flow_see_every_frame]
    for case in cases:
        try:
            case()
        except (Mismatch, AssertionError) as exc:
            return f"{getattr(case, '__name__', case)}: {str(exc).splitlines()[0]}"
    return None


def build(text: str, planted: str, where: Path):
    """The flow cache built in ``where`` from its sources with ``text`` (found once in them) become ``planted``,
    loaded under its own file."""
    sources = {name: (FASTPATH / name).read_text() for name in SOURCES}
    (holder,) = [name for name, source in sources.items() if source.count(text) == 1]
    sources[holder] = sources[holder].replace(text, planted)
    for name, source in sources.items():
        (where / name).write_text(source)
    so = where / f"_flowcache{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    *(str(where / name) for name in SOURCES if name.endswith(".c")), "-o", str(so)],
                   check=True, capture_output=True)
    loader = importlib.machinery.ExtensionFileLoader("_flowcache", str(so))
    spec = importlib.util.spec_from_file_location("_flowcache", str(so), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_unplanted_fast_path_passes():
    assert caught() is None


@pytest.mark.parametrize("bug", list(C_BUGS))
def test_a_planted_bug_in_the_flow_cache_is_caught(bug, tmp_path, monkeypatch):
    text, planted = C_BUGS[bug]
    found = [name for name in SOURCES if (FASTPATH / name).read_text().count(text) == 1]
    assert len(found) == 1, f"the planted bug's text is not once in the flow cache's sources: {text!r}"
    monkeypatch.setattr(fastpath_router, "_flowcache", build(text, planted, tmp_path))
    assert caught() is not None, f"nothing caught {bug}"


@pytest.mark.parametrize("bug", list(PYTHON_BUGS))
def test_a_planted_bug_in_the_python_side_is_caught(bug, monkeypatch):
    method, plant = PYTHON_BUGS[bug]
    original = getattr(fastpath_router.FastPathRouter, method)
    monkeypatch.setattr(fastpath_router.FastPathRouter, method, plant(original))
    assert caught() is not None, f"nothing caught {bug}"
