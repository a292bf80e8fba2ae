"""What the router says, made up for the dashboard's tests and the fake router: sessions and VPN flows, NAT
settings, WAN modes, access rules, and the descriptions of its protocols (the real registry's, and a toy fourth
one) and of what it recognises without a helper (the real recognisers').

The settings come from the router's own modules (``router.behaviour``,
``router.portset``), so the fake cannot drift from what the router sends.
"""

from __future__ import annotations

from router.behaviour import PROFILES
from router.helpers.registry import descriptions
from router.portset import PortSet
from router.recognise import RECOGNISERS, descriptions as recogniser_descriptions
from tui.protocols import read_protocols

DESCRIPTIONS = descriptions()
"""The registry's protocols as ``version()["helpers"]`` describes them (PPTP, L2TP, IPsec)."""
PROTOCOLS = read_protocols(DESCRIPTIONS)[0]
"""The same as the dashboard reads them."""
RECOGNISED = recogniser_descriptions(RECOGNISERS)
"""``version()["recognisers"]``: what the router recognises without a helper (OpenVPN, WireGuard)."""
TOY = {"name": "toy", "title": "Toy", "key": "t", "noun": ["hop", "hops"], "flow_noun": "hop", "flow_proto": "toy",
       "view": {"fields": ["client", "relay", "hop_id", "peer_hop_id", "path", "shaky"], "client": "client",
                "server": "relay", "ids": "hop {hop_id}<>{peer_hop_id}{path:each| via |,|[node]}",
                "legend": "Hop ID client<>relay, via nodes", "mark": "shaky", "fixed": ["path"],
                "ending_events": ["hop_down"],
                "list_events": {"node_up": {"field": "path", "key": "node", "item": ["node"], "add": True},
                                "node_down": {"field": "path", "key": "node", "item": [], "add": False}}},
       "counters": ["toy_hops_up"], "drop_reasons": [], "options": {}, "timeouts": {}}
"""A made-up fourth protocol, described as a helper would describe itself: no code of the dashboard knows it."""


# -- settings as the router describes them ----------------------------------------------------------

def port_set(offset: int, psid_length: int, psid: int) -> dict:
    """An RFC 7597 §5.1 port set as ``status()["nat"]["port_set"]``."""
    return PortSet(offset, psid_length, psid).to_dict()


def profile_nat(name: str) -> dict:
    """``status()["nat"]`` with a profile's settings."""
    return PROFILES[name].nat.to_dict()


WAN_MAP_E = {"mode": "map-e", "ipv6": "2001:db8:ffff::2/64", "gateway6": "2001:db8:ffff::1",
             "map_e": {"ipv4": "198.51.100.194", "psid": 3, "psid_length": 4, "ports": 4032,
                       "ce_ipv6": "2001:db8:a:2300:0:c633:64c2:3", "br": "2001:db8:ffff::1",
                       "end_user_prefix": "2001:db8:a:2300::/56", "mtu": 1460},
             "ds_lite": None, "passthrough_effective": True, "note": None}
"""``status()["wan"]`` of a MAP-E CE (RFC 7597), as issue 20 words it."""
WAN_DS_LITE = {"mode": "ds-lite", "ipv6": "2001:db8:ffff::2/64", "gateway6": "2001:db8:ffff::1", "map_e": None,
               "ds_lite": {"aftr": "2001:db8:ffff::1", "b4_ipv4": "192.0.0.2", "mtu": 1460},
               "passthrough_effective": False,
               "note": "DS-Lite: the AFTR does the NAT; the passthrough switches have no effect"}
"""``status()["wan"]`` of a DS-Lite B4 (RFC 6333): the NAT is the provider's."""

DEMO_RULES = [{"vpn": "pptp", "client": "192.168.77.12", "server": "0.0.0.0/0", "action": "deny"},
              {"vpn": "any", "client": "192.168.77.0/24", "server": "198.51.100.0/24", "action": "allow"}]
"""Rules for a look at the rules screen (``r``)."""


# -- sessions as the router describes them ----------------------------------------------------------

def nat_session(sid: int, proto: str = "udp", inside: str | None = None, remote: str | None = None,
                state: str | None = None, seed: int | None = None, **extra) -> dict:
    n = sid if seed is None else seed
    session = {
        "id": sid, "proto": proto,
        "inside": inside or f"192.168.77.{10 + n % 200}:{40000 + n % 20000}",
        "outside": f"203.0.113.1:{20000 + n % 40000}",
        "remote": remote or f"198.51.100.{1 + n % 250}:{53 if proto == 'udp' else 443}",
        "state": state or ("established" if proto == "tcp" else "active"),
        "idle": float(n % 30), "age": float(60 + n % 600),
        "packets_in": n * 3 % 1000, "packets_out": n * 2 % 1000,
        "bytes_in": n * 3000 % 1_000_000, "bytes_out": n * 200 % 100_000,
    }
    session.update(extra)
    return session


def pptp_call(sid: int, client: str = "192.168.77.11", server: str = "198.51.100.7", call_id: int = 0,
              translated: int = 17, peer: int | None = 33, state: str = "established") -> dict:
    return {"id": sid, "proto": "gre", "inside": f"{client}:{call_id}", "outside": f"203.0.113.1:{translated}",
            "remote": f"{server}:{'' if peer is None else peer}", "state": state, "idle": 1.0, "age": 125.0,
            "packets_in": 420, "packets_out": 380, "bytes_in": 61_234, "bytes_out": 40_120, "vpn": "pptp",
            "client": client, "server": server, "call_id": call_id, "translated_call_id": translated,
            "peer_call_id": peer, "call_state": state}


def l2tp_tunnel(sid: int, client: str = "192.168.77.12", lns: str = "198.51.100.8", tunnel_id: int = 5,
                translated: int = 5, peer: int | None = 9, sessions=((1, 4, "established"),)) -> dict:
    return {"id": sid, "proto": "l2tp", "inside": f"{client}:{tunnel_id}", "outside": f"203.0.113.1:{translated}",
            "remote": f"{lns}:{peer}", "state": "established", "idle": 2.0, "age": 300.0,
            "packets_in": 1000, "packets_out": 900, "bytes_in": 150_000, "bytes_out": 90_000, "vpn": "l2tp",
            "client": client, "lns": lns, "tunnel_id": tunnel_id, "translated_tunnel_id": translated,
            "peer_tunnel_id": peer, "host_name": "lac1",
            "sessions": [{"session_id": a, "peer_session_id": b, "state": st} for a, b, st in sessions]}


def ipsec_sa(sid: int, client: str = "192.168.77.13", gateway: str = "198.51.100.9", natt: bool = True,
             ambiguous: bool = False) -> dict:
    return {"id": sid, "proto": "esp", "inside": client, "outside": "203.0.113.1", "remote": gateway,
            "state": "established", "idle": 0.0, "age": 42.0, "packets_in": 77, "packets_out": 81,
            "bytes_in": 9_876, "bytes_out": 10_240, "vpn": "ipsec", "client": client, "gateway": gateway,
            "ike_spi_i": "1122334455667788", "ike_spi_r": "99aabbccddeeff00", "esp_spi_out": "c0ffee01",
            "esp_spi_in": "0badf00d", "natt": natt, "ports": [{"inside": 4500, "outside": 4500, "remote": 4500}],
            "ambiguous": ambiguous}


def toy_hop(sid: int, client: str = "192.168.77.15", relay: str = "198.51.100.30", hop_id: int = 7,
            peer: int | None = 70, path=("n1",), shaky: bool = False) -> dict:
    """A flow of the toy protocol (``TOY``)."""
    return {"id": sid, "proto": "toy", "inside": f"{client}:{hop_id}", "outside": f"203.0.113.1:{hop_id}",
            "remote": f"{relay}:{peer}", "state": "hopping", "idle": 3.0, "age": 30.0, "packets_in": 5,
            "packets_out": 6, "bytes_in": 500, "bytes_out": 600, "vpn": "toy", "client": client, "relay": relay,
            "hop_id": hop_id, "peer_hop_id": peer, "path": [{"node": node} for node in path], "shaky": shaky}


def recognised(sid: int, name: str = "wireguard", client: str = "192.168.77.16", server: str = "198.51.100.40",
               by: str = "first bytes") -> dict:
    """A NAT session the router recognised without a helper (``name`` as ``RECOGNISED`` lists it)."""
    description = next(d for d in RECOGNISED if d["name"] == name)
    return nat_session(sid, description["proto"], inside=f"{client}:{40000 + sid}",
                       remote=f"{server}:{description['port']}", recognised=name, recognised_by=by)


def demo_table(nat: int = 12) -> list[dict]:
    """A small deterministic table: a call, a tunnel, two associations (one ambiguous), NAT sessions."""
    sessions = [pptp_call(1), l2tp_tunnel(2), ipsec_sa(3), ipsec_sa(4, client="192.168.77.14", natt=False,
                                                                  ambiguous=True)]
    sessions.append(nat_session(5, "tcp", inside="192.168.77.11:40001", remote="198.51.100.7:1723", vpn="pptp"))
    sessions += [nat_session(i, "tcp" if i % 3 == 0 else "udp") for i in range(6, 6 + nat)]
    return sessions
