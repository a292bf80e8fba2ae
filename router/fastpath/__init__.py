"""The fast path for established flows: compiled C that repeats what the Python data plane decided.

Theory of operation
-------------------
The Python data plane (``router.dataplane``) stays the reference and the
only place where a decision is made.  After it forwards a frame of an
established flow (a TCP session in ESTABLISHED, a UDP session, a helper's
flow whose helper agrees: ``Helper.offload``), ``FastPathRouter`` installs an
entry in the flow cache (``_flowcache.c``): the frame's key, the rewrite
Python just did (address, port, RFC 1624 deltas, the next hop's Ethernet
addresses and how long ARP vouches for them, a payload ID to restore) and an
accounting callable.  The cache then forwards the frames it has an entry
for, in place, and nothing else: a frame it does not own (ARP, a new flow, a
TCP segment with SYN, FIN or RST, a fragment, anything for the router, a
helper's control message, a session under capture, anything unusual) goes
to Python untouched, before the next one is read, so no flow is reordered.

Before Python looks at anything (a frame, the timer, the control socket's
views, the state file), the counts of the frames the cache forwarded are
handed back (``sync``): packets, bytes and last-seen times land where the
Python path would have put them, so every decision sees the same state.
Entries are withdrawn before anything that changes a decision: a session or
flow that ends, a TCP state change, a helper's own change (``withdraw``), a
capture, an ARP entry that changes, a switch, rule or profile change, a
restore.

``make_router`` builds the router the configuration asks for: with the fast
path (``[dataplane] fastpath = true``, the default) where the extension is
built, else the Python one, saying why (``FASTPATH_MISSING``).
"""

from __future__ import annotations

from ..config import Config
from ..dataplane.router import Router

try:
    from . import _flowcache
except ImportError as exc:        # no compiler when it was installed: the router runs in Python
    _flowcache = None
    FASTPATH_MISSING: str | None = f"the fast path is not built ({exc})"
else:
    FASTPATH_MISSING = None


def make_router(config: Config, helpers, rng=None) -> Router:
    """The router for ``config``: a ``FastPathRouter`` if it asks for the fast path and it is built."""
    if config.wan_link is not None:       # an IPv6 WAN: Python encapsulates (router.dataplane.softwire)
        from ..dataplane.softwire import softwire_router
        return softwire_router(config, helpers, rng=rng)
    if config.fastpath and _flowcache is not None:
        from .router import FastPathRouter
        return FastPathRouter(config, helpers, rng=rng)
    router = Router(config, helpers, rng=rng)
    router.python_only = "[dataplane] fastpath = false" if not config.fastpath else FASTPATH_MISSING
    return router
