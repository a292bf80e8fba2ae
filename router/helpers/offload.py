"""What a helper tells the fast path (``router.fastpath``): may more frames like this one skip me, and how.

The Python data plane decides every flow; the fast path only repeats what it
did to an established flow's last frame.  For a NAT session a helper is
attached to (IKE and NAT-T, L2TP on 1701) and for a helper's own portless
flows (GRE calls, raw ESP), the router asks the helper after each frame it
forwarded: ``Helper.offload`` or ``Helper.offload_flow`` looks at the frame as it was sent and
answers with an ``Offload`` (yes, and what to do besides the NAT's rewrite)
or None (every frame comes to me).  A helper that later changes what it would do with such
frames (a new SPI on a NAT-T session, a tunnel's IDs) withdraws the entries
first, with ``HelperContext.withdraw(owner)`` on an object it named in
``owners``; a flow that ends withdraws its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SPLIT_NATT_SPI = 1
"""The frames of one NAT-T session are told apart by the SPI of their ESP-in-UDP (RFC 3948 §2.1)."""
SPLIT_L2TP_TUNNEL = 2
"""The frames of one L2TP UDP session are told apart by the Tunnel ID of their data messages (RFC 2661 §3.1):
the fast path takes only data messages, the Tunnel ID where the header's flags put it."""


@dataclass(frozen=True, slots=True)
class Offload:
    """A helper's yes to the fast path for frames like the one just forwarded."""
    payload_id: int = 0
    """What the frames carry that the helper tells flows apart by: the GRE Call ID, the ESP SPI (portless flows),
    or with ``split`` the NAT-T SPI or the L2TP Tunnel ID; 0 for nothing."""
    split: int = 0
    """For a NAT session: how its frames are told apart (``SPLIT_NATT_SPI``, ``SPLIT_L2TP_TUNNEL``); 0 for not."""
    restore: int | None = None
    """A 16-bit payload ID written in place as the helper does (an inbound GRE Call ID, an inbound L2TP Tunnel
    ID), the transport checksum following; None for none."""
    restore_at: int = 0
    """Where ``restore`` is written in a portless datagram, from its header (with ``split``: the split's ID)."""
    count_payload: bool = False
    """Whether ``account`` is told the payload bytes (the helper counts an L2TP message's length)."""
    owners: tuple = ()
    """The helper's objects whose change withdraws the entry (``HelperContext.withdraw``)."""
    account: Callable[[int, int, float], None] | None = None
    """What the helper counts of these frames, called at each sync with (frames, payload bytes, time of the
    last one); payload bytes with ``count_payload`` (the L2TP message lengths), else 0."""
