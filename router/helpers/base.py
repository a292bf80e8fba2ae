"""The small interface every VPN passthrough helper implements.

Modelled on Linux's conntrack helpers (``struct nf_conntrack_helper``): a
helper names the flows it attaches to, sees each packet of those flows after
the NAT has matched the session and before it rewrites the addresses, keeps
its protocol's state on the session (``session.helper_state``), and answers
with a verdict.  It never does I/O and never reads the clock: ``now`` comes
in as an argument.  A helper may rewrite its own protocol's payload in place
(same length, so TCP sequence numbers never change) and must then fix the
transport checksum it changed, with the deltas in ``router.packet.checksum``.

A helper imports ``router.packet`` only, never another helper.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable, Protocol


class Verdict(Enum):
    FORWARD = "forward"
    DROP = "drop"


class Helper(Protocol):
    name: str
    """The passthrough switch this helper belongs to: "pptp", "l2tp" or "ipsec"."""

    def attaches_to(self, proto: int, inside_port: int, remote_port: int) -> bool:
        """Whether a new session of this protocol and these ports is this helper's."""

    def packet(self, session, frame: bytearray, ip: int, l4: int, outbound: bool, now: float) -> Verdict:
        """One packet of an attached session, before its addresses are translated."""

    def closed(self, session, now: float) -> None:
        """The session ended (timeout, RST, switch turned off)."""

    def describe(self, session) -> Iterable[tuple[str, object]]:
        """Extra fields for ``ctl sessions --json`` (such as call IDs)."""
