"""What the PPTP helper keeps: a call (RFC 2637 §1.3, its GRE is the flow) and a control connection's state."""

from __future__ import annotations

from enum import Enum

from ..packet.frame import ip_str
from .base import Flow
from .pptp_wire import Direction


class CallState(Enum):
    REQUESTED = "requested"
    ESTABLISHED = "established"
    CLEARING = "clearing"


class PptpCall(Flow):
    """One call: the inside peer's Call ID, its translation, the remote peer's Call ID; its GRE is the flow."""

    __slots__ = ("control", "call_id", "translated_call_id", "peer_call_id", "inside_is_client", "call_state",
                 "deadline")
    proto = "gre"
    vpn = "pptp"

    def __init__(self, cid: int, control, inside_ip: int, remote_ip: int, call_id: int, translated: int,
                 inside_is_client: bool, wan_ip: int, now: float):
        super().__init__(cid, inside_ip, remote_ip, wan_ip, now)
        self.control = control
        self.call_id = call_id
        self.translated_call_id = translated
        self.peer_call_id: int | None = None
        self.inside_is_client = inside_is_client
        self.call_state = CallState.REQUESTED
        self.deadline = 0.0

    # Call IDs stand where ports would.
    def inside(self) -> str:
        return f"{ip_str(self.inside_ip)}:{self.call_id}"

    def outside(self, wan_ip: int) -> str:
        return f"{ip_str(wan_ip)}:{self.translated_call_id}"

    def remote(self) -> str:
        return f"{ip_str(self.remote_ip)}:{'' if self.peer_call_id is None else self.peer_call_id}"

    def state(self) -> str:
        return self.call_state.value

    def details(self) -> dict:
        client, server = (self.inside_ip, self.remote_ip) if self.inside_is_client else (self.remote_ip, self.inside_ip)
        return {"client": ip_str(client), "server": ip_str(server), "call_id": self.call_id,
                "translated_call_id": self.translated_call_id, "peer_call_id": self.peer_call_id,
                "call_state": self.call_state.value}


class Control:
    """The state of one control connection (``session.helper_state``)."""
    __slots__ = ("out", "inbound", "calls", "fin_out", "fin_in")

    def __init__(self) -> None:
        self.out, self.inbound = Direction(), Direction()
        self.calls: dict[int, PptpCall] = {}
        """Inside peer's Call ID -> call."""
        self.fin_out = self.fin_in = False


CALL_STATES = tuple(state.value for state in CallState)
