"""A fake router for the dashboard's tests: the control socket (router.control.protocol) on a Unix socket.

It runs its own asyncio loop in a thread, so a test drives the real app in
its loop while the fake answers from another, as the real router would from
its process.  Every method a test calls is thread-safe and returns once the
fake has done it.  It keeps a table of sessions, the switches with their modes,
the NAT profile and the access rules, answers the methods of control protocol 3
(``router.control.schema``; ``version`` with the real registry's descriptions
of its protocols unless told others), numbers its events with ``seq``, and
records each request in ``requests``.  ``attempt()`` decides a VPN attempt as the router's
admission does (rules first, then single passthrough) and tells the refusals.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import random
import threading
from pathlib import Path

import msgpack

from router.behaviour import PROFILES, Rule, parse_rule
from router.control import protocol, schema

from .samples import DEMO_RULES, DESCRIPTIONS, RECOGNISED, demo_table, nat_session, profile_nat


class FakeRouter:
    def __init__(self, path: str | Path, sessions=(), helpers: list[dict] | None = None, uptime: float = 3723.0,
                 modes: dict | None = None, rules=(), default_action: str = "allow", profile: str = "default",
                 recognisers: list[dict] | None = RECOGNISED):
        self.path = str(path)
        self.sessions: dict[int, dict] = {s["id"]: dict(s) for s in sessions}
        self.helpers: list[dict] | None = DESCRIPTIONS if helpers is None else helpers
        """``version()["helpers"]``: the protocols, in the order of their switches; set to None, the fake is a
        router too old to describe them."""
        self.protos = schema.flow_protos(self.helpers)
        self.recognisers = recognisers
        """``version()["recognisers"]``; None: a router too old to have them."""
        self.extra_status: dict = {}
        """Added to ``status``: what a test wants the router to say besides (``dataplane``, say)."""
        self.modes: dict[str, str] = dict(modes or {h["name"]: "multi" for h in self.helpers})
        """Each switch's mode: "off", "single" or "multi"."""
        self._mode_when_on = {name: "multi" if mode == "off" else mode for name, mode in self.modes.items()}
        self.nat = profile_nat(profile)
        self.rules: list[Rule] = [parse_rule(rule, "rule") for rule in rules]
        """In order: the first that matches decides."""
        self.hits: list[int] = [0] * len(self.rules)
        self.default_action = default_action
        self.uptime = uptime
        self.uptime_step = 1.0
        """Seconds the uptime grows at each ``status`` (deterministic rates)."""
        self.counters: dict[str, int] = {f"{c}_{p}": 0 for c in schema.PORT_COUNTERS for p in schema.PORTS}
        self.seq = 0
        self.requests: list[tuple[str, list]] = []
        self.refuse: dict[str, tuple[str, str]] = {}
        """method -> (code, message): answer that method with this error."""
        self.frames: dict[int, list[bytes]] = {}
        """Session id -> frames a capture of it sends."""
        self.capture_wait = 0.2
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._capture_ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._load: asyncio.Task | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-router", daemon=True)
        self._thread.start()

    # -- life -------------------------------------------------------------------------------------

    def _run(self, fn, *args):
        """Run ``fn(*args)`` (a coroutine function or a plain one) in the fake's loop; return its result."""
        async def call():
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(30)

    def start(self) -> "FakeRouter":
        self._run(self._start)
        return self

    async def _start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, path=self.path)

    def stop(self) -> None:
        """Stop as a router does: close the socket, end every connection, remove the socket file."""
        self._run(self._stop)

    async def _stop(self) -> None:
        if self._load is not None:
            self._load.cancel()
            self._load = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self._subscribers.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def __enter__(self) -> "FakeRouter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what a test makes happen -----------------------------------------------------------------

    def publish(self, event: dict) -> int:
        """Send an event to every subscriber with the next seq; returns the seq."""
        return self._run(self._publish, dict(event))

    def _publish(self, event: dict) -> int:
        event.setdefault("time", 0.0)
        event["seq"], self.seq = self.seq, self.seq + 1
        data = protocol.notification(schema.NOTIFY_EVENT, [event])
        for writer in list(self._subscribers):
            writer.write(data)
        return event["seq"]

    def open_session(self, session: dict) -> None:
        def do():
            self.sessions[session["id"]] = dict(session)
            self._publish({"type": "session_opened", "session": dict(session)})
        self._run(do)

    def close_session(self, sid: int, reason: str = "timeout") -> None:
        def do():
            session = self.sessions.pop(sid)
            self._publish({"type": "session_closed", "session": session, "reason": reason})
        self._run(do)

    def update_sessions(self, updates: list[dict]) -> None:
        """A ``sessions_updated`` event; the table takes the new values too."""
        def do():
            for u in updates:
                if u["id"] in self.sessions:
                    self.sessions[u["id"]].update(u)
            self._publish({"type": "sessions_updated", "sessions": [dict(u) for u in updates]})
        self._run(do)

    def skip_seq(self, count: int) -> None:
        """Lose ``count`` events: the next event's seq jumps (a gap)."""
        def do():
            self.seq += count
        self._run(do)

    def change_quietly(self, fn) -> None:
        """Change the table without telling anyone (what a gap hides): ``fn(sessions)``."""
        self._run(fn, self.sessions)

    def attempt(self, vpn: str, client: str, server: str) -> str:
        """A LAN client tries to open a VPN: "allowed", or the ``vpn`` event's kind it was refused with."""
        return self._run(self._attempt, vpn, client, server)

    def _attempt(self, vpn: str, client: str, server: str) -> str:
        addresses = int(ipaddress.IPv4Address(client)), int(ipaddress.IPv4Address(server))
        index = next((i for i, rule in enumerate(self.rules) if rule.matches(vpn, *addresses)), None)
        if index is not None:
            self.hits[index] += 1
        action = self.default_action if index is None else self.rules[index].action
        details = {"type": "vpn", "vpn": vpn, "client": client, "server": server, "suppressed": 0}
        if action == "deny":
            self._publish({**details, "event": "denied", "rule": None if index is None else index + 1,
                           "action": action})
            return "denied"
        holder = self._holder(vpn)
        if holder is not None and holder != client:
            self._publish({**details, "event": "refused_single", "holder": holder})
            return "refused_single"
        return "allowed"

    def apply_profile(self, name: str) -> dict:
        """What ``set_profile`` does, made to happen by the test."""
        return self._run(self._apply_profile, name, False)

    def subscriber_count(self) -> int:
        return self._run(lambda: len(self._subscribers))

    def start_load(self, events_per_second: float, updated_per_batch: int = 1000, seed: int = 1) -> None:
        """Make events at a steady rate: sessions opened and closed, drops, and a sessions_updated twice a
        second with ``updated_per_batch`` sessions (as the real router's UPDATE_INTERVAL)."""
        def do():
            self._load = asyncio.ensure_future(self._make_load(events_per_second, updated_per_batch, seed))
        self._run(do)

    def stop_load(self) -> None:
        def do():
            if self._load is not None:
                self._load.cancel()
                self._load = None
        self._run(do)

    async def _make_load(self, rate: float, per_batch: int, seed: int) -> None:
        rng = random.Random(seed)
        next_id = max(self.sessions, default=0) + 1
        tick, started, sent, last_update = 0.01, self.loop.time(), 0, self.loop.time()
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            due = int((now - started) * rate) - sent
            for _ in range(due):
                kind = rng.random()
                if kind < 0.4:
                    session = nat_session(next_id, seed=next_id)
                    next_id += 1
                    self.sessions[session["id"]] = session
                    self._publish({"type": "session_opened", "session": dict(session)})
                elif kind < 0.8 and self.sessions:
                    oldest = [sid for sid in itertools.islice(iter(self.sessions), 60)
                              if not schema.is_vpn_flow(self.sessions[sid], self.protos)]
                    if not oldest:
                        continue
                    session = self.sessions.pop(rng.choice(oldest))
                    self._publish({"type": "session_closed", "session": session, "reason": "timeout"})
                else:
                    self._publish({"type": "packet_dropped", "reason": "unsolicited", "port": "wan",
                                   "summary": f"udp 198.51.100.{rng.randrange(1, 255)}:53 > 203.0.113.1:4000",
                                   "suppressed": 0})
                sent += 1
            if now - last_update >= 0.5 and self.sessions:
                last_update = now
                ids = rng.sample(list(self.sessions), min(per_batch, len(self.sessions)))
                updates = []
                for sid in ids:
                    s = self.sessions[sid]
                    s["packets_in"] += 3
                    s["packets_out"] += 2
                    s["bytes_in"] += 3000
                    s["bytes_out"] += 200
                    updates.append({k: s[k] for k in schema.UPDATE_FIELDS})
                self._publish({"type": "sessions_updated", "sessions": updates})
                sent += 1
                self.counters["frames_in_lan"] += 1000
                self.counters["bytes_in_lan"] += 100000

    # -- the control socket -----------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        unpacker = protocol.unpacker()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                unpacker.feed(data)
                for message in unpacker:
                    msgid, method, params = protocol.parse_request(message)
                    self.requests.append((method, list(params)))
                    await self._answer(writer, msgid, method, params)
        except (ConnectionError, protocol.ProtocolError, msgpack.UnpackException):
            pass
        finally:
            self._subscribers.discard(writer)
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer, msgid: int, method: str, params: list) -> None:
        if method in self.refuse:
            code, message = self.refuse[method]
            writer.write(protocol.response(msgid, protocol.error(code, message), None))
            return
        if method == "sessions":
            items = list(self.sessions.values())
            writer.write(protocol.array_response_head(msgid, len(items)) + protocol.pack_items(items))
            return
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            writer.write(protocol.response(msgid, protocol.error("unknown_method", f"no method {method!r}"), None))
            return
        try:
            result = handler(writer, params)
        except LookupError as exc:
            writer.write(protocol.response(msgid, protocol.error("not_found", str(exc.args[0])), None))
        except ValueError as exc:
            writer.write(protocol.response(msgid, protocol.error("bad_params", str(exc)), None))
        else:
            writer.write(protocol.response(msgid, None, result))

    def _m_version(self, writer, params):
        answer = {"protocol": schema.PROTOCOL_VERSION, "router": "fake"}
        if self.recognisers is not None:
            answer["recognisers"] = self.recognisers
        return answer if self.helpers is None else {**answer, "helpers": self.helpers}

    def _m_status(self, writer, params):
        self.uptime += self.uptime_step
        return {"uptime": self.uptime, "passthrough": self.switches, "passthrough_mode": dict(self.modes),
                "passthrough_holder": {name: self._holder(name) for name in self.modes}, "nat": dict(self.nat),
                "rules": {"default_action": self.default_action, "count": len(self.rules)},
                "counters": dict(self.counters),
                "sessions": sum(1 for s in self.sessions.values() if not schema.is_vpn_flow(s, self.protos)),
                "protocol": schema.PROTOCOL_VERSION, "ports": {}, **self.extra_status}

    @property
    def switches(self) -> dict[str, bool]:
        return {name: mode != "off" for name, mode in self.modes.items()}

    def _holder(self, vpn: str) -> str | None:
        """In single mode, the client of the first session or flow of ``vpn`` in the table."""
        if self.modes.get(vpn) != "single":
            return None
        for s in self.sessions.values():
            if s.get("vpn") == vpn:
                return s.get("client") or s["inside"].rsplit(":", 1)[0]
        return None

    def _m_set_passthrough(self, writer, params):
        if len(params) != 2 or params[0] not in self.modes or not (
                isinstance(params[1], bool) or params[1] in ("on", *schema.PASSTHROUGH_MODES)):
            raise ValueError('params: [name, value] with value a boolean or "on", "off", "single" or "multi"')
        self._set_mode(params[0], params[1], later=True)
        return self.switches

    def _set_mode(self, name: str, value, later: bool) -> None:
        """As the router: "on" brings back the mode the switch had before it went off."""
        if value is True or value == "on":
            mode = self._mode_when_on[name]
        else:
            mode = "off" if value is False else value
        if mode != "off":
            self._mode_when_on[name] = mode
        if self.modes[name] != mode:
            self.modes[name] = mode
            self._tell({"type": "switch_changed", "name": name, "on": mode != "off", "mode": mode}, later)

    def _tell(self, event: dict, later: bool) -> None:
        """Publish now, or (answering a request) just after the answer is written."""
        if later:
            self.loop.call_soon(self._publish, event)
        else:
            self._publish(event)

    def _m_set_profile(self, writer, params):
        if len(params) != 1 or not isinstance(params[0], str):
            raise ValueError("params: [name]")
        return self._apply_profile(params[0], True)

    def _apply_profile(self, name: str, later: bool) -> dict:
        if name not in PROFILES:
            raise LookupError(f"no profile {name!r} (known: {', '.join(PROFILES)})")
        self.nat = profile_nat(name)
        for vpn in self.modes:
            self._set_mode(vpn, PROFILES[name].passthrough, later)
        self._tell({"type": "profile_changed", "name": name, "nat": dict(self.nat)}, later)
        return dict(self.nat)

    def _m_rules(self, writer, params):
        return self._rules_view()

    def _rules_view(self) -> dict:
        return {"default_action": self.default_action,
                "rules": [{"index": i + 1, **rule.to_dict(), "hits": self.hits[i]}
                          for i, rule in enumerate(self.rules)]}

    def _m_add_rule(self, writer, params):
        if len(params) not in (1, 2) or not isinstance(params[0], dict):
            raise ValueError("params: [{vpn, client, server, action}, position?] with position from 1")
        rule = parse_rule(params[0], "rule")
        position = params[1] if len(params) == 2 else len(self.rules) + 1
        if not isinstance(position, int) or not 1 <= position <= len(self.rules) + 1:
            raise ValueError(f"position: from 1 to {len(self.rules) + 1}")
        self.rules.insert(position - 1, rule)
        self.hits.insert(position - 1, 0)
        return self._rules_view()

    def _m_del_rule(self, writer, params):
        index = params[0] if len(params) == 1 else None
        if not isinstance(index, int) or not 1 <= index <= len(self.rules):
            raise LookupError(f"no rule {index} (there are {len(self.rules)})")
        del self.rules[index - 1]
        del self.hits[index - 1]
        return self._rules_view()

    def _m_subscribe(self, writer, params):
        self._subscribers.add(writer)
        return {"seq": self.seq, "protocol": schema.PROTOCOL_VERSION}

    def _m_unsubscribe(self, writer, params):
        self._subscribers.discard(writer)
        return True

    def _m_close_session(self, writer, params):
        sid = params[0] if params else None
        if sid not in self.sessions:
            raise LookupError(f"no session or flow with id {sid}")
        session = self.sessions.pop(sid)
        self.loop.call_soon(self._publish, {"type": "session_closed", "session": session,
                                            "reason": "closed_by_request"})
        return True

    def _m_capture(self, writer, params):
        sid, count, seconds = params
        if sid not in self.sessions:
            raise LookupError(f"no session or flow with id {sid}")
        cid = next(self._capture_ids)
        frames = self.frames.get(sid, [])[:count]

        async def stream():
            for n, frame in enumerate(frames):
                writer.write(protocol.notification(schema.NOTIFY_CAPTURE, [cid, 1000.0 + n / 10, frame]))
            if len(frames) < count:
                await asyncio.sleep(min(seconds, self.capture_wait))
            reason = "count" if len(frames) >= count else "seconds"
            writer.write(protocol.notification(schema.NOTIFY_CAPTURE_END, [cid, reason, len(frames)]))

        self.loop.call_soon(asyncio.ensure_future, stream())
        return {"capture": cid}


def main(argv: list[str] | None = None) -> int:
    """Serve the fake router until Ctrl-C, to look at the dashboard without root:
    ``python -m tests.tui.fake_router /tmp/fake.sock`` then ``vpnrouter tui --socket /tmp/fake.sock``."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m tests.tui.fake_router", description=main.__doc__)
    parser.add_argument("socket")
    parser.add_argument("--sessions", type=int, default=0, help="NAT sessions besides the demo table")
    parser.add_argument("--rate", type=float, default=0.0, help="events per second to make")
    args = parser.parse_args(argv)
    table = demo_table() + [nat_session(i) for i in range(100, 100 + args.sessions)]
    with FakeRouter(args.socket, table, rules=DEMO_RULES) as fake:
        if args.rate:
            fake.start_load(args.rate, updated_per_batch=min(1000, len(table)))
        print(f"fake router on {args.socket} with {len(table)} sessions; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
