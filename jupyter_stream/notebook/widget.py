"""StreamWidget, the anywidget that shows one stream: its traits and its messages with the front end.

Its wire protocol is described in :mod:`jupyter_stream.notebook.wire`; :class:`~jupyter_stream.notebook.sink.
WidgetSink` feeds it from a stream's events. The engine never imports this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from .packed import packed_esm
from .wire import _lm_calls_to_json, _panes_to_json, _payload_size, _prediction_to_json, _variants_to_json

__all__ = ["STATUSES", "StreamWidget"]

_STATIC = Path(__file__).parent.parent / "static"

STATUSES = ("idle", "running", "done", "stopped", "error")

EMPTY_STATS: dict[str, Any] = {"elapsed": 0.0, "tokens": 0, "tokens_per_s": None, "ttft": None}


# --------------------------------------------------------------------------------- the widget


class StreamWidget(anywidget.AnyWidget):
    """Shows one stream: header, status line, per-field token panes, prediction, prompt inspector, Stop; or a
    comparison of variants, a column each (``variants``), with the word diff of their predictions (``diff``).
    ``run_diff``: what changed since the previous run of the same cell (``%%stream``), when there was one.

    ``on_stop(callback)`` registers a callable (no arguments) run when the Stop button is clicked.
    ``messages_sent``/``bytes_sent`` count the custom messages sent (and their JSON payload bytes);
    ``state_updates_sent``/``state_bytes_sent`` the trait updates (their synced form). ``views_seen``
    turns true when a front end has shown the model (it said ``hello``).
    """

    # The code travels packed (about 12 kB instead of 28 kB per widget); the loader adds the stylesheet.
    _esm = packed_esm((_STATIC / "widget.js").read_text("utf-8"), (_STATIC / "widget.css").read_text("utf-8"))

    _uid = t.Unicode().tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    status = t.Enum(STATUSES, default_value="idle").tag(sync=True)
    status_message = t.Unicode("").tag(sync=True)
    status_log = t.List(t.Unicode()).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    markdown = t.Bool(False).tag(sync=True)
    started_at = t.Float(0.0).tag(sync=True)
    stats = t.Dict(default_value=dict(EMPTY_STATS)).tag(sync=True)
    panes = t.List(t.Dict()).tag(sync=True, to_json=_panes_to_json)
    snapshot_seq = t.Int(0).tag(sync=True)
    prediction = t.Dict().tag(sync=True, to_json=_prediction_to_json)
    lm_calls = t.List(t.Dict()).tag(sync=True, to_json=_lm_calls_to_json)
    variants = t.List(t.Dict()).tag(sync=True, to_json=_variants_to_json)
    diff = t.List(t.Dict()).tag(sync=True)
    run_diff = t.Dict().tag(sync=True)

    @t.default("_uid")
    def _default_uid(self) -> str:
        return uuid.uuid4().hex

    def __init__(self, **kwargs: Any) -> None:
        # Set before the base __init__, which already syncs state.
        self.messages_sent = 0
        self.bytes_sent = 0
        self.state_updates_sent = 0
        self.state_bytes_sent = 0
        self.stop_requested = False
        self._delta_seq = 0
        self.views_seen = False
        self.final_by_ref: tuple[list[Any], list[Any]] | None = None
        self._stop_callbacks: list[Callable[[], Any]] = []
        self._resync_callback: Callable[[], Any] | None = None
        self._text_source: Callable[[], list[tuple[str, str, str]]] | None = None
        """The feeding sink's (see :meth:`attach`)."""
        self.shown_text: str | None = None
        """The plain text of the widget's output, where it differs from ``repr`` (set by ``WidgetDisplay``: the
        output is never updated, so it names no status that would go stale)."""
        super().__init__(**kwargs)
        self.on_msg(self._on_frontend_msg)

    def __repr__(self) -> str:
        """What a viewer without widgets shows as plain text (a headless run's output, a terminal)."""
        title = f" {self.title}" if self.title else ""
        return f"<jupyter_stream{title}: {self.status}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if self.shown_text is not None and bundle:
            bundle[0]["text/plain"] = self.shown_text
        return bundle

    @property
    def uid(self) -> str:
        """This widget's id (unique, also across kernels): what its cell's static snapshot refers to."""
        return self._uid

    @property
    def last_seq(self) -> int:
        """The seq of the last delta batch sent."""
        return self._delta_seq

    def next_seq(self) -> int:
        """The seq of a new delta batch (one more than the last)."""
        self._delta_seq += 1
        return self._delta_seq

    def attach(self, *, resync: Callable[[], Any], texts: Callable[[], list[tuple[str, str, str]]]) -> None:
        """The sink that feeds this widget: what a view's ``resync`` request calls, and where the live text of
        the panes comes from (``(key, predict, text)`` each), for the synced forms sent by reference."""
        self._resync_callback, self._text_source = resync, texts
        self.final_by_ref = None

    def pane_texts(self) -> list[tuple[str, str, str]]:
        """``(key, predict, text)`` of every pane as streamed so far (the sink's, else the ``panes`` trait)."""
        source = self._text_source
        if source is not None:
            return source()
        return [(str(p.get("key", "")), str(p.get("predict", "")), str(p.get("text", ""))) for p in self.panes]

    def on_stop(self, callback: Callable[[], Any], remove: bool = False) -> None:
        """Run ``callback()`` when the front end's Stop button is clicked (``remove=True`` unregisters)."""
        if remove:
            if callback in self._stop_callbacks:
                self._stop_callbacks.remove(callback)
        elif callback not in self._stop_callbacks:
            self._stop_callbacks.append(callback)

    def send(self, content: Any, buffers: Any = None) -> None:
        """Send a custom message (counted in ``messages_sent``/``bytes_sent``)."""
        self.messages_sent += 1
        self.bytes_sent += _payload_size(content)
        super().send(content, buffers)

    def _send(self, msg: Any, buffers: Any = None) -> None:
        if isinstance(msg, dict) and msg.get("method") == "update":
            self.state_updates_sent += 1
            self.state_bytes_sent += _payload_size(msg.get("state"))
        super()._send(msg, buffers)

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "stop":
            self.stop_requested = True
            for callback in list(self._stop_callbacks):
                try:
                    callback()
                except Exception:  # one failing callback must not keep the others from running
                    self.log.exception("jupyter_stream: a Stop callback failed")
        elif kind == "hello":
            self.views_seen = True
        elif kind == "messages":  # the inspector opened a call whose messages stayed in the kernel
            self._send_held_messages(content.get("call_id"))
        elif kind == "resync":
            if self.final_by_ref is not None:  # the stream ended; its final snapshot went by reference
                self._send_panes_in_full()
            elif self._resync_callback is not None:
                self._resync_callback()

    def _send_held_messages(self, call_id: Any) -> None:
        """Send the whole prompt messages of the LM call ``call_id`` (a custom message: never saved state)."""
        for call in self.lm_calls:
            if call.get("call_id") == call_id:
                self.send({"type": "messages", "call_id": call_id, "messages": call.get("messages", [])})
                return

    def _send_panes_in_full(self) -> None:
        """Drop the final snapshot's reference form and send ``panes`` with their text."""
        self.final_by_ref = None
        self.send_state(["panes", "snapshot_seq"])
