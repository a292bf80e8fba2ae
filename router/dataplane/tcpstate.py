"""TCP session tracking for the NAT, after RFC 6146 §3.5.2.2 (as RFC 7857 §3.1 asks).

The RFC names the sides "V6" (inside) and "V4" (outside); here they are
``OUT`` (a packet going out, from the LAN) and ``IN``.  Only SYN, FIN and RST
move the state, plus any packet that revives a session in TRANS; the hot path
calls ``track`` only when one of those can happen.

    CLOSED ──SYN out──▶ SYN_OUT ──SYN in──▶ ESTABLISHED
    CLOSED ──SYN in (port forward)──▶ SYN_IN ──SYN out──▶ ESTABLISHED
    ESTABLISHED ──FIN out──▶ FIN_OUT ──FIN in──▶ FIN_BOTH (transitory, not refreshed)
    ESTABLISHED ──FIN in───▶ FIN_IN  ──FIN out─▶ FIN_BOTH
    any ──RST──▶ TRANS (transitory, RFC 7857 §3.2) ──other packet──▶ ESTABLISHED
"""

from __future__ import annotations

from enum import Enum

from ..packet.frame import TCP_FIN, TCP_RST, TCP_SYN


class TcpState(Enum):
    SYN_OUT = "syn_out"
    SYN_IN = "syn_in"
    ESTABLISHED = "established"
    FIN_OUT = "fin_out"
    FIN_IN = "fin_in"
    FIN_BOTH = "fin_both"
    TRANS = "trans"


ESTABLISHED_LIFETIME = frozenset({TcpState.ESTABLISHED, TcpState.FIN_OUT, TcpState.FIN_IN})


def next_state(state: TcpState, flags: int, outbound: bool) -> TcpState:
    """The state after a packet with TCP ``flags`` in the given direction."""
    if flags & TCP_RST:
        return TcpState.TRANS
    if state is TcpState.TRANS:
        return TcpState.ESTABLISHED
    if flags & TCP_SYN:
        if state is TcpState.SYN_OUT and not outbound or state is TcpState.SYN_IN and outbound:
            return TcpState.ESTABLISHED
        return state
    if flags & TCP_FIN:
        if state is TcpState.ESTABLISHED:
            return TcpState.FIN_OUT if outbound else TcpState.FIN_IN
        if state is TcpState.FIN_OUT and not outbound or state is TcpState.FIN_IN and outbound:
            return TcpState.FIN_BOTH
    return state
