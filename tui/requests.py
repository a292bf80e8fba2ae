"""The dashboard's requests to the router: workers that ask and post the answer, and what the answer does.

A request never blocks the screen and never takes the app down: whatever goes
wrong (a refusal, no router, a bug) comes back as a ``RequestAnswered`` with
an error, which is shown as a notification and a line in the event log.
The rules screen (``r``) shows the ``rules`` answer.
Captures run as long as the router sends frames: to a pcap file (``c``) or to
the details screen (``enter``), decoded there.
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from router.control.pcap import PcapWriter

from .client import RequestError
from .decode import decode
from .widgets.screens import DetailsScreen, RulesScreen


class RequestAnswered(Message):
    """The router's answer to a request the dashboard made (or why there was none)."""

    def __init__(self, method: str, params: tuple, result=None, error: RequestError | None = None):
        super().__init__()
        self.method, self.params, self.result, self.error = method, params, result, error


class FrameCaptured(Message):
    """A frame of the capture a details screen asked for."""

    def __init__(self, screen: DetailsScreen, wall_time: float, frame: bytes):
        super().__init__()
        self.screen, self.wall_time, self.frame = screen, wall_time, frame


class RequestsMixin:
    """For the App: needs ``link``, ``model``, ``clock``, ``wallclock``, the capture settings and
    ``refresh_view``."""

    def _request(self, method: str, *params) -> None:
        self.run_worker(self._ask(method, params), group="requests", exit_on_error=False)

    async def _ask(self, method: str, params: tuple) -> None:
        try:
            result = await self.link.call(method, *params)
        except RequestError as exc:
            self.post_message(RequestAnswered(method, params, error=exc))
        except Exception as exc:        # whatever happens to a request, the dashboard stays up
            self.post_message(RequestAnswered(method, params, error=RequestError("failed", str(exc))))
        else:
            self.post_message(RequestAnswered(method, params, result))

    async def _capture_to_file(self, sid: int, path: Path) -> None:
        params = (sid, str(path))
        try:
            writer = PcapWriter(str(path))
        except OSError as exc:
            error = RequestError("file", f"{path}: {exc.strerror}")
            self.post_message(RequestAnswered("capture", params, error=error))
            return
        offset = None

        def on_frame(router_time: float, frame: bytes) -> None:
            nonlocal offset
            if offset is None:      # capture times are the router's monotonic clock: anchor them to ours
                offset = self.wallclock() - router_time
            writer.write(router_time + offset, frame)

        try:
            reason, count = await self.link.capture(sid, self.capture_frames, self.capture_seconds, on_frame)
        except Exception as exc:
            writer.close()
            path.unlink(missing_ok=True)
            error = exc if isinstance(exc, RequestError) else RequestError("failed", str(exc))
            self.post_message(RequestAnswered("capture", params, error=error))
            return
        writer.close()
        self.post_message(RequestAnswered("capture", params, (reason, count)))

    async def _details_capture(self, screen: DetailsScreen, sid: int) -> None:
        def on_frame(router_time: float, frame: bytes) -> None:
            self.post_message(FrameCaptured(screen, self.wallclock(), frame))

        note = screen.set_capture_note
        try:
            reason, count = await self.link.capture(sid, self.details_frames, self.details_seconds, on_frame)
        except Exception as exc:
            message = exc.message if isinstance(exc, RequestError) else str(exc)
            self.call_later(self._if_shown, screen, note, f"no capture: {message}")
            return
        if count == 0:
            text = f"no frames in {self.details_seconds:g} s: the session was quiet"
        else:
            ended = {"count": "", "seconds": " (time is up)", "closed": " (capture closed)"}.get(reason, f" ({reason})")
            text = f"last {count} frames{ended}"
        self.call_later(self._if_shown, screen, note, text)

    def _if_shown(self, screen: DetailsScreen, fn, *args) -> None:
        if screen.is_attached:
            fn(*args)

    def on_frame_captured(self, message: FrameCaptured) -> None:
        if message.screen.is_attached:
            message.screen.add_frame(message.wall_time, decode(message.frame))

    def on_request_answered(self, message: RequestAnswered) -> None:
        if message.error is not None:
            if message.method == "set_passthrough":
                self.model.pending.discard(message.params[0])
            elif message.method == "rules" and isinstance(self.screen, RulesScreen):
                self.screen.show_error(message.error.message)
            self._failed(message.method, message.error.message, message.params)
        else:
            ANSWERS[message.method](self, message.params, message.result)
        self.refresh_view()

    def _switched(self, params: tuple, switches: dict) -> None:
        self.model.switch_answered(params[0], params[1], switches)

    def _rules_read(self, params: tuple, view: dict) -> None:
        self.model.rules_read(view)
        if isinstance(self.screen, RulesScreen):
            self.screen.show_rules(view)

    def _closed(self, params: tuple, result) -> None:
        self.model.confirm_closed(params[0], self.clock())
        self.notify(f"session {params[0]} closed")

    def _captured(self, params: tuple, result: tuple[str, int]) -> None:
        (sid, path), (reason, count) = params, result
        self.notify(f"{count} frames written to {path}", title="capture")
        self.model.note(self.clock(), "link", f"capture of session {sid}: {count} frames in {path} ({reason})")

    def _failed(self, method: str, reason: str, params: tuple = ()) -> None:
        what = {"set_passthrough": "switch", "close_session": "close", "capture": "capture",
                "rules": "reading the rules"}.get(method, method)
        target = f" {params[0]}" if params else ""
        self.notify(f"{what}{target} failed: {reason}", severity="error", title="the router said no")
        self.model.note(self.clock(), "error", f"{what}{target} failed: {reason}")


ANSWERS = {
    "set_passthrough": RequestsMixin._switched,
    "close_session": RequestsMixin._closed,
    "capture": RequestsMixin._captured,
    "rules": RequestsMixin._rules_read,
}
"""What a successful answer does, by method."""
