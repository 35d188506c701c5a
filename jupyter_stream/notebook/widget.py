"""StreamWidget (an anywidget) and WidgetSink, the renderer that feeds it from a stream's events.

The wire protocol (Python -> front end). The text of the panes travels once while streaming, in
custom messages; the synced traits are the durable state (what a saved notebook, a reloaded page or
a late view starts from) and are refreshed only at the start, on a view's request and at the end:

- custom messages ``{"type": "deltas", "seq": n, "items": [[key, text, done], ...], "stats": {...}}``,
  ``n`` going up by one per batch; ``stats`` (as in the ``stats`` trait) rides along at most every
  ``stats_interval`` seconds; ``items`` may be empty when a batch only carries stats. The front end
  applies a batch only if ``seq`` > the last applied one; a snapshot with ``snapshot_seq = s``
  replaces its panes and counts as batch ``s`` applied;
- synced traits: ``title``, ``model_name``, ``status`` (idle|running|done|stopped|error),
  ``status_message``, ``status_log``, ``error``, ``markdown``, ``started_at`` (epoch ms),
  ``lm_calls`` (the prompt inspector), and the snapshot ``panes`` (``[{key, predict, field, text,
  done}]`` in display order) + ``snapshot_seq`` + ``stats``, always set together: at the start
  (empty), when a view asks (``resync``), optionally every ``snapshot_interval`` s once the text has
  grown ``snapshot_growth`` times, and at the end, where the final snapshot also carries the text
  and done flags not yet sent in a batch. ``prediction`` (``{"fields": {...}, "usage": {...}}``) is
  set at the end, in the same update as the final snapshot.
- The final snapshot by reference: once a view has said ``hello``, the final ``panes`` go out as
  ``[{key, predict, field, done, "tail": text not yet in a batch, "len": n}]`` (``n``: the whole
  text's length in UTF-16 code units): a view that applied every batch up to ``snapshot_seq`` fills in
  the text itself (its saved widget state holds it); any other view asks for a ``resync`` and gets
  the text. With no view (a notebook run headless, e.g. by nbclient) the text goes out in full. The
  Python ``panes`` trait always holds the text.
- Text sent by reference: in the synced form of ``prediction``, a field whose value is exactly the text
  of a pane is ``{"$pane": key}``; in ``lm_calls``, ``raw`` and ``reasoning`` may be a list of strings
  and ``{"$pane": key, "end": n}`` (the first ``n`` UTF-16 code units of that pane's text, which only
  grows). The Python values (``widget.prediction``, ``widget.lm_calls``) always hold the full text;
  :func:`resolve_text` turns the synced form back into text.

Held messages: an LM call whose prompt messages exceed :data:`HELD_MESSAGES` characters syncs a
preview of them (each content cut, with ``cut``: the characters left out; the call has ``held``: the
whole messages' characters); the front end asks for them with ``{"type": "messages", "call_id": id}``
when its inspector shows that call and gets ``{"type": "messages", "call_id": id, "messages": [...]}``,
a custom message, so a saved notebook keeps only the preview.

Front end -> Python: ``{"type": "stop"}`` (the Stop button), ``{"type": "hello"}`` (a model came up
in a front end), ``{"type": "messages", "call_id": id}`` (see above) and ``{"type": "resync"}`` (a view that missed batches, a view created while the
stream runs, e.g. a page reloaded mid-stream, or one that cannot fill in a final snapshot sent by
reference, asks for the text).

Example (in a notebook cell, on the kernel's loop)::

    widget = StreamWidget()
    display(widget)
    sink = WidgetSink(widget)
    sink.start(title="predict", model="gpt-4o-mini")
    task = asyncio.ensure_future(consume())      # consume(): async for event in stream: sink.handle(event)
    widget.on_stop(task.cancel)                  # the Stop button
    try:
        prediction = await task
    except asyncio.CancelledError:
        sink.finish(stopped=True)
    except Exception as e:
        sink.finish(error=e)
    else:
        sink.finish(prediction=prediction)

The engine never imports this module.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from ..prediction import is_prediction
from ..streaming.events import LMRequest, LMResponse, PaneLabels, StatusMessage, StreamResponse
from .packed import packed_esm

__all__ = ["STATUSES", "StreamWidget", "WidgetSink", "resolve_text"]

_STATIC = Path(__file__).parent.parent / "static"

STATUSES = ("idle", "running", "done", "stopped", "error")

_EMPTY_STATS: dict[str, Any] = {"elapsed": 0.0, "tokens": 0, "tokens_per_s": None, "ttft": None}

PANE_REF = "$pane"
"""The key of a reference to a pane's text in the synced form of ``prediction`` and ``lm_calls``."""

_MIN_REF = 32
"""Texts shorter than this are sent as they are (a reference would not be much shorter)."""


HELD_MESSAGES = 64 * 1024
"""An LM call whose prompt messages hold more characters than this keeps them in the kernel: the synced
``lm_calls`` (and so a saved notebook's widget state) holds a preview of each message, and the inspector
asks for the whole messages when it is opened."""

_PREVIEW = 2_000
"""Characters of each message's content in the preview of held messages."""


def _payload_size(content: Any) -> int:
    try:
        return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))
    except (TypeError, ValueError):
        return 0


# ------------------------------------------------------------------------ text by reference


def _len16(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (JavaScript's ``string.length``)."""
    # surrogatepass: a lone surrogate (JSON allows "\ud800") is one unit, as in JavaScript.
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def _prefix16(text: str, n: int) -> str:
    """The first ``n`` UTF-16 code units of ``text`` (JavaScript's ``text.slice(0, n)``)."""
    if text.isascii():
        return text[:n]
    return text.encode("utf-16-le", "surrogatepass")[: 2 * n].decode("utf-16-le", "surrogatepass")


def _compact(text: str, panes: Iterable[tuple[str, str]]) -> str | list[Any]:
    """``text`` with the whole texts of ``panes`` (``(key, text)``, in the order they appear) replaced by
    references ``{"$pane": key, "end": n}``; ``text`` itself when none appears in it."""
    parts: list[Any] = []
    cursor = 0
    for key, pane_text in panes:
        if len(pane_text) < _MIN_REF:
            continue
        i = text.find(pane_text, cursor)
        if i < 0:
            continue
        if i > cursor:
            parts.append(text[cursor:i])
        parts.append({PANE_REF: key, "end": _len16(pane_text)})
        cursor = i + len(pane_text)
    if not parts:
        return text
    if cursor < len(text):
        parts.append(text[cursor:])
    return parts


def resolve_text(value: Any, panes: Mapping[str, str] | Iterable[Mapping[str, Any]]) -> Any:
    """The text of a value in its synced form: a string as it is, ``{"$pane": key}`` (with an optional
    ``end``) as that pane's text, a list of those joined. ``panes``: ``{key: text}`` or the ``panes``
    trait. Any other value is returned unchanged; a reference to an unknown pane resolves to ``""``.

        >>> resolve_text(["<", {"$pane": "p.answer", "end": 3}, ">"], {"p.answer": "Paris"})
        '<Par>'
    """
    texts = panes if isinstance(panes, Mapping) else {p.get("key"): p.get("text", "") for p in panes}

    def one(part: Any) -> str | None:
        if isinstance(part, str):
            return part
        if isinstance(part, dict) and isinstance(part.get(PANE_REF), str):
            text = texts.get(part[PANE_REF]) or ""
            end = part.get("end")
            return _prefix16(text, end) if isinstance(end, int) else text
        return None

    if isinstance(value, list):
        pieces = [one(p) for p in value]
        return "".join(pieces) if all(p is not None for p in pieces) else value
    text = one(value)
    return value if text is None else text


def _prediction_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``prediction``: a field equal to the text of a pane of ``widget.panes`` (set in
    the same update, at the end of the stream) is sent as ``{"$pane": key}``."""
    fields = value.get("fields") if isinstance(value, dict) else None
    if not isinstance(fields, dict) or not fields:
        return value
    by_text: dict[str, str] = {}
    for pane in widget.panes:
        text = pane.get("text")
        if isinstance(text, str) and len(text) >= _MIN_REF and text not in by_text:
            by_text[text] = pane.get("key", "")
    if not by_text:
        return value
    out = {name: {PANE_REF: by_text[v]} if isinstance(v, str) and v in by_text else v for name, v in fields.items()}
    return {**value, "fields": out}


def _panes_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``panes``: the final snapshot by reference (see the module docstring) when the
    sink set one for exactly this value, else the panes with their text."""
    ref = widget._panes_by_ref
    return ref[1] if ref is not None and ref[0] is value else value


def _lm_calls_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``lm_calls``: in ``raw`` and ``reasoning``, the text of a pane of the call's
    own pane group (``group``: its label, see :class:`~jupyter_stream.streaming.events.PaneLabels`) is sent
    as a reference (the front end has that text from the deltas or the snapshot)."""
    if not isinstance(value, list) or not value:
        return value
    value = [_preview_messages(call) for call in value]
    by_predict: dict[str, list[tuple[str, str]]] = {}
    for key, predict, text in widget._pane_texts():
        if len(text) >= _MIN_REF:
            by_predict.setdefault(predict, []).append((key, text))
    if not by_predict:
        return value
    out = []
    for call in value:
        candidates = by_predict.get(call.get("group")) if isinstance(call, dict) else None
        if candidates:
            call = dict(call)
            for name in ("raw", "reasoning"):
                text = call.get(name)
                if isinstance(text, str) and text:
                    call[name] = _compact(text, candidates)
        out.append(call)
    return out


def _message_chars(messages: Any) -> int:
    return sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))


def _preview_messages(call: Any) -> Any:
    """``call`` with its messages cut to a preview when they are too big to sync (see :data:`HELD_MESSAGES`):
    each content keeps its first ``_PREVIEW`` characters and says how many it lost (``cut``); ``held`` is
    the characters of the whole messages, which the front end asks for (``{"type": "messages"}``)."""
    messages = call.get("messages") if isinstance(call, dict) else None
    if not isinstance(messages, list):
        return call
    total = _message_chars(messages)
    if total <= HELD_MESSAGES:
        return call
    preview = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str) and len(content) > _PREVIEW:
            m = {**m, "content": content[:_PREVIEW], "cut": len(content) - _PREVIEW}
        preview.append(m)
    return {**call, "messages": preview, "held": total}


# --------------------------------------------------------------------------------- the widget


class StreamWidget(anywidget.AnyWidget):
    """Shows one stream: header, status line, per-field token panes, prediction, prompt inspector, Stop.

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
    stats = t.Dict(default_value=dict(_EMPTY_STATS)).tag(sync=True)
    panes = t.List(t.Dict()).tag(sync=True, to_json=_panes_to_json)
    snapshot_seq = t.Int(0).tag(sync=True)
    prediction = t.Dict().tag(sync=True, to_json=_prediction_to_json)
    lm_calls = t.List(t.Dict()).tag(sync=True, to_json=_lm_calls_to_json)

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
        self._panes_by_ref: tuple[list[Any], list[Any]] | None = None
        self._stop_callbacks: list[Callable[[], Any]] = []
        self._resync_callback: Callable[[], Any] | None = None
        self._text_source: Callable[[], list[tuple[str, str, str]]] | None = None
        super().__init__(**kwargs)
        self.on_msg(self._on_frontend_msg)

    def __repr__(self) -> str:
        """What a viewer without widgets shows as plain text (a headless run's output, a terminal)."""
        title = f" {self.title}" if self.title else ""
        return f"<jupyter_stream{title}: {self.status}>"

    @property
    def uid(self) -> str:
        """This widget's id (unique, also across kernels): what its cell's static snapshot refers to."""
        return self._uid

    @property
    def last_seq(self) -> int:
        """The seq of the last delta batch sent."""
        return self._delta_seq

    def _pane_texts(self) -> list[tuple[str, str, str]]:
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
            if self._panes_by_ref is not None:  # the stream ended; its final snapshot went by reference
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
        self._panes_by_ref = None
        self.send_state(["panes", "snapshot_seq"])


# ------------------------------------------------------------------------------------ the sink


class _Pane:
    """The text of one field: new parts since the last snapshot, plus the joined text before them."""

    __slots__ = ("key", "predict", "field", "parts", "joined", "done")

    def __init__(self, key: str, predict: str, field: str) -> None:
        self.key = key
        self.predict = predict
        self.field = field
        self.parts: list[str] = []
        self.joined = ""
        self.done = False

    def text(self) -> str:
        if self.parts:
            self.joined = self.joined + "".join(self.parts)
            self.parts.clear()
        return self.joined


def _json_default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except TypeError:
            return dump()
    if is_prediction(value):
        return dict(value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def pretty(value: Any) -> str:
    """A field value for display: strings as they are, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError):
        return repr(value)


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy (what a synced trait may hold)."""
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))
    except (TypeError, ValueError):
        return str(value)


def _completion_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    for name in ("completion_tokens", "output_tokens"):
        n = usage.get(name)
        if isinstance(n, int) and not isinstance(n, bool):
            return n
    return None


class WidgetSink:
    """Consumes a stream's events into a :class:`StreamWidget`.

    Per event the work is O(len(chunk)): the chunk goes into a pending batch and the pane's parts.
    Batched deltas go out at most ``1/flush_interval`` times a second, and never more than
    ``max_messages_per_s`` widget messages (batches and trait updates alike) in any second: at an event
    when that allows, else by a trailing flush (``loop.call_later`` on the running loop, or a
    ``threading.Timer`` where no loop runs) so the end of a burst is not held back. The live stats ride
    in the batches, at most every ``stats_interval`` seconds. The ``panes`` snapshot goes out at the
    start, when a view asks for it (a view that missed batches or was created mid-stream), at the end,
    and, if ``snapshot_interval`` is set, at most every ``snapshot_interval`` seconds once the text has
    grown ``snapshot_growth`` times since the last snapshot (so all of them together stay within
    ``growth / (growth - 1)`` times the text).

    ``timer``: ``"auto"`` (the running loop if there is one, else a thread), ``"thread"`` (always a
    ``threading.Timer``: use it when you feed the sink from a blocking loop in a cell, where the kernel's
    loop cannot run the trailing flush), or ``"none"`` (no trailing flush).

    The widget's Python traits follow the wire: ``panes``/``snapshot_seq``/``stats`` hold the last
    snapshot (``texts()`` and ``stats`` are the live values), ``lm_calls`` gets a reply at the next flush,
    ``prediction`` is set by ``finish``.
    """

    def __init__(
        self,
        widget: StreamWidget | None = None,
        flush_interval: float = 1 / 25,
        snapshot_interval: float | None = None,
        *,
        timer: str = "auto",
        snapshot_growth: float = 2.0,
        max_messages_per_s: int = 25,
        stats_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timer not in ("auto", "thread", "none"):
            raise ValueError(f"timer must be 'auto', 'thread' or 'none', not {timer!r}")
        self.widget = widget if widget is not None else StreamWidget()
        self.flush_interval = max(0.0, float(flush_interval))
        self.snapshot_interval = None if snapshot_interval is None else max(0.0, float(snapshot_interval))
        self.snapshot_growth = max(1.0, float(snapshot_growth))
        self.max_messages_per_s = max(1, int(max_messages_per_s))
        self.stats_interval = max(0.0, float(stats_interval))
        self.timer = timer
        self._clock = clock
        self._lock = threading.RLock()
        self._trailing: Any = None
        self._trailing_at = 0.0
        self._reset()
        self._started = False
        self._finished = False

    # ------------------------------------------------------------------------------ public API

    def start(self, *, title: str | None = None, model: str | None = None, markdown: bool | None = None) -> None:
        """Begin a stream: status "running", ``started_at`` now, empty panes (also when reusing a widget)."""
        with self._lock:
            self._cancel_trailing()
            self._reset()
            self._started = True
            self._finished = False
            now = self._clock()
            self._t0 = now
            self._last_snapshot = now
            w = self.widget
            w._resync_callback = self._on_resync
            w._text_source = self._live_texts
            w._panes_by_ref = None
            w.stop_requested = False
            with w.hold_sync():
                if title is not None:
                    w.title = str(title)
                if model is not None:
                    w.model_name = str(model)
                if markdown is not None:
                    w.markdown = bool(markdown)
                w.status = "running"
                w.status_message = ""
                w.status_log = []
                w.error = ""
                w.started_at = time.time() * 1000.0
                w.stats = dict(_EMPTY_STATS)
                w.prediction = {}
                w.lm_calls = []
                # An empty snapshot at the current seq clears the panes of a reused widget.
                w.panes = []
                w.snapshot_seq = w._delta_seq
            self._note_sent(now)

    def handle(self, event: Any) -> None:
        """Feed one event: StreamResponse, StatusMessage, LMRequest, LMResponse or the final Prediction.

        Other types are ignored. Starts the sink if ``start`` was not called. The Prediction is kept
        (its usage counts at once) and shown by ``finish``.
        """
        if type(event) is StreamResponse:  # the hot path
            self._on_chunk(event)
        elif isinstance(event, StreamResponse):
            self._on_chunk(event)
        elif isinstance(event, StatusMessage):
            self._on_status(event)
        elif isinstance(event, LMRequest):
            self._on_request(event)
        elif isinstance(event, LMResponse):
            self._on_response(event)
        elif is_prediction(event):  # ours, or a DSPy program's own dspy.Prediction
            with self._lock:
                self._ensure_started()
                self._set_prediction(event)

    __call__ = handle

    def flush(self) -> None:
        """Send the pending deltas, the stats and a finished LM call now, whatever the rate."""
        with self._lock:
            if self._started and not self._finished:
                self._flush_locked(self._clock(), force=True)

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        """End the stream in one update: final snapshot (with the text not yet sent in a batch), stats,
        status done/stopped/error, the prediction and the LM calls.

        An ``error`` shows as ``"TypeName: message"`` in red; the panes keep their partial text. A
        ``CancelledError``/``KeyboardInterrupt`` passed as ``error`` counts as stopped.
        """
        with self._lock:
            self._ensure_started()
            self._cancel_trailing()
            if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                error, stopped = None, True
            status = "error" if error is not None else "stopped" if stopped else "done"
            if prediction is not None:
                self._set_prediction(prediction)
            if status == "done":
                for pane in self._panes.values():
                    pane.done = True
            now = self._clock()
            w = self.widget
            with w.hold_sync():
                self._snapshot_locked(now, by_ref=w.views_seen)
                if self._calls_dirty:
                    self._set_calls()
                if self._prediction is not None:
                    w.prediction = self._prediction
                if error is not None:
                    w.error = f"{type(error).__name__}: {error}"
                w.status = status
            self._finished = True
            self._note_sent(now)

    # ----------------------------------------------------------------------------- inspection

    @property
    def started(self) -> bool:
        return self._started

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def tokens(self) -> int:
        """Tokens so far: LM usage where known, else the number of chunks with text."""
        return self._usage_tokens + (self._chunks - self._chunks_at_usage)

    @property
    def stats(self) -> dict[str, Any]:
        """The live stats (the ``stats`` trait holds them as of the last snapshot)."""
        with self._lock:
            return self._stats(self._clock()) if self._started else dict(_EMPTY_STATS)

    def texts(self) -> dict[str, str]:
        """The full text of each pane, by key, in display order."""
        with self._lock:
            return {key: pane.text() for key, pane in self._panes.items()}

    # ------------------------------------------------------------------------------- internals

    def _reset(self) -> None:
        self._panes: dict[str, _Pane] = {}
        self._labels = PaneLabels()
        self._pending: dict[str, list[Any]] = {}
        self._total_chars = 0
        self._t0 = self._clock()
        self._last_flush = float("-inf")
        self._last_snapshot = float("-inf")
        self._snapshot_chars = 0
        self._first_chunk_at: float | None = None
        self._chunks = 0
        self._chunks_at_usage = 0
        self._usage_tokens = 0
        self._saw_usage = False
        self._lm_ttft: float | None = None
        self._stats_dirty = False
        self._last_stats_sent = float("-inf")
        self._status_log: list[str] = []
        self._lm_calls: list[dict[str, Any]] = []
        self._calls_dirty = False
        self._call_model = ""
        self._prediction: dict[str, Any] | None = None
        # Send times (our clock) of the widget's last max_messages_per_s messages.
        self._sent: collections.deque[float] = collections.deque(maxlen=self.max_messages_per_s)
        self._sent_total = self._messages_total()

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    def _live_texts(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(p.key, p.predict, p.text()) for p in self._panes.values()]

    def _on_chunk(self, ev: StreamResponse) -> None:
        with self._lock:
            if not self._started:
                self.start(title=ev.predict_name)
            if self._finished:
                return
            now = self._clock()
            predict = self._labels(ev.predict_name, ev.call_id)  # one pane per LM call ("react[2]")
            key = f"{predict}.{ev.signature_field_name}" if predict else ev.signature_field_name
            pane = self._panes.get(key)
            if pane is None:
                pane = self._panes[key] = _Pane(key, predict, ev.signature_field_name)
            pend = self._pending.get(key)
            if pend is None:
                pend = self._pending[key] = [[], False]
            chunk = ev.chunk
            if chunk:
                pane.parts.append(chunk)
                pend[0].append(chunk)
                self._chunks += 1
                self._total_chars += len(chunk)
                if self._first_chunk_at is None:
                    self._first_chunk_at = now
            if ev.is_last_chunk and not pane.done:
                pane.done = True
                pend[1] = True
            self._stats_dirty = True
            self._maybe_flush(now)

    def _on_status(self, ev: StatusMessage) -> None:
        with self._lock:
            self._ensure_started()
            message = str(ev.message)
            self._status_log.append(message)
            if len(self._status_log) > 500:
                del self._status_log[: len(self._status_log) - 500]
            w = self.widget
            with w.hold_sync():
                w.status_message = message
                w.status_log = list(self._status_log)
            self._note_sent(self._clock())

    def _on_request(self, ev: LMRequest) -> None:
        with self._lock:
            self._ensure_started()
            entry = {
                "call_id": ev.call_id,
                "predict": ev.predict_name,
                "group": self._labels(ev.predict_name, ev.call_id),
                "model": ev.model,
                "messages": _jsonable(list(ev.messages or [])),
                "raw": "",
                "reasoning": "",
                "usage": {},
                "ttft": None,
                "duration": None,
                "cached": False,
                "done": False,
            }
            self._lm_calls.append(entry)
            self._calls_dirty = False  # this update carries every call, a finished one too
            w = self.widget
            with w.hold_sync():
                if not w.model_name and ev.model:
                    w.model_name = str(ev.model)
                w.lm_calls = list(self._lm_calls)
            self._note_sent(self._clock())

    def _on_response(self, ev: LMResponse) -> None:
        with self._lock:
            self._ensure_started()
            index = None
            for i in range(len(self._lm_calls) - 1, -1, -1):
                c = self._lm_calls[i]
                if c["call_id"] == ev.call_id and not c["done"]:
                    index = i
                    break
            entry = {
                "call_id": ev.call_id,
                "predict": ev.predict_name,
                "group": self._labels(ev.predict_name, ev.call_id),
                "model": ev.model,
                "messages": [] if index is None else self._lm_calls[index]["messages"],
                "raw": ev.raw or "",
                "reasoning": ev.reasoning or "",
                "usage": _jsonable(dict(ev.usage or {})),
                "ttft": ev.ttft,
                "duration": ev.duration,
                "cached": bool(ev.cached),
                "done": True,
            }
            # A new dict (not an in-place edit) so the trait sees the change; sent with the next flush
            # (or the next update, or the end), after the deltas holding the text its reply refers to.
            if index is None:
                self._lm_calls.append(entry)
            else:
                self._lm_calls[index] = entry
            self._calls_dirty = True
            # Tokens: this call's usage replaces the chunks counted for it.
            n = _completion_tokens(ev.usage)
            if n is not None:
                self._usage_tokens += n
                self._saw_usage = True
            else:
                self._usage_tokens += self._chunks - self._chunks_at_usage
            self._chunks_at_usage = self._chunks
            if self._lm_ttft is None and ev.ttft is not None:
                self._lm_ttft = float(ev.ttft)
            self._stats_dirty = True
            if ev.model and not self._call_model:
                self._call_model = str(ev.model)
            self._maybe_flush(self._clock())

    def _set_prediction(self, prediction: Any) -> None:
        if hasattr(prediction, "items"):
            try:
                items = list(prediction.items())
            except TypeError:
                items = []
        else:
            items = [("value", prediction)]
        fields = {str(name): pretty(value) for name, value in items}
        usage: Any = {}
        get_usage = getattr(prediction, "get_lm_usage", None)
        if callable(get_usage):
            try:
                usage = _jsonable(get_usage() or {})
            except Exception:  # noqa: BLE001 - usage is optional
                usage = {}
        if not self._saw_usage and isinstance(usage, dict):
            counts = [_completion_tokens(u) for u in usage.values()]
            if counts and all(c is not None for c in counts):
                self._usage_tokens = sum(c for c in counts if c is not None)
                self._chunks_at_usage = self._chunks
                self._saw_usage = True
                self._stats_dirty = True
        self._prediction = {"fields": fields, "usage": usage if isinstance(usage, dict) else {}}

    # ---- flushing

    def _messages_total(self) -> int:
        w = self.widget
        return w.messages_sent + w.state_updates_sent

    def _note_sent(self, now: float) -> None:
        """Record the widget messages sent since the last call (ours or not) as sent at ``now``."""
        total = self._messages_total()
        for _ in range(min(total - self._sent_total, self.max_messages_per_s)):
            self._sent.append(now)
        self._sent_total = total

    def _next_flush_in(self, now: float) -> float | None:
        """Seconds until the next flush may go out (<= 0: now), or None when there is nothing to send."""
        if self._pending or self._calls_dirty:
            wait = 0.0
        elif self._stats_dirty:
            wait = self._last_stats_sent + self.stats_interval - now
        else:
            return None
        wait = max(wait, self.flush_interval - (now - self._last_flush))
        if wait <= 0:
            self._note_sent(now)
            if len(self._sent) >= self.max_messages_per_s:
                wait = self._sent[0] + 1.0 - now
        return wait

    def _maybe_flush(self, now: float) -> None:
        wait = self._next_flush_in(now)
        if wait is None:
            return
        if wait <= 0:
            self._flush_locked(now)
        elif self._trailing is None or self._trailing_at > now + wait + 0.001:
            self._schedule_trailing(wait)

    def _flush_locked(self, now: float, force: bool = False) -> None:
        self._cancel_trailing()
        stats = None
        if self._stats_dirty and (force or now - self._last_stats_sent >= self.stats_interval):
            stats = self._stats(now)
            self._stats_dirty = False
            self._last_stats_sent = now
        self._send_deltas(stats)
        self._last_flush = now
        if self._calls_dirty:
            with self.widget.hold_sync():
                self._set_calls()
        if (
            self.snapshot_interval is not None
            and now - self._last_snapshot >= self.snapshot_interval
            and self._total_chars >= self.snapshot_growth * max(1, self._snapshot_chars)
        ):
            self._snapshot_locked(now)
        self._note_sent(now)
        if self._stats_dirty:  # held back by stats_interval: a trailing flush sends them
            wait = self._next_flush_in(now)
            if wait is not None:
                self._schedule_trailing(wait)

    def _set_calls(self) -> None:
        """Set ``lm_calls`` (and ``model_name`` if it is still empty): call inside ``hold_sync``."""
        self._calls_dirty = False
        w = self.widget
        if not w.model_name and self._call_model:
            w.model_name = self._call_model
        w.lm_calls = list(self._lm_calls)

    def _send_deltas(self, stats: dict[str, Any] | None = None) -> None:
        if not self._pending and stats is None:
            return
        items = []
        for key, (parts, done) in self._pending.items():
            items.append([key, parts[0] if len(parts) == 1 else "".join(parts), done])
        self._pending = {}
        w = self.widget
        w._delta_seq += 1
        msg: dict[str, Any] = {"type": "deltas", "seq": w._delta_seq, "items": items}
        if stats is not None:
            msg["stats"] = stats
        w.send(msg)

    def _snapshot_locked(self, now: float, *, by_ref: bool = False) -> None:
        """Set ``panes`` + ``snapshot_seq`` + ``stats`` (one update). The snapshot holds every chunk
        handled so far, so the pending deltas are dropped: it is batch ``snapshot_seq`` plus them.
        ``by_ref``: on the wire, each pane carries only its pending text (``tail``) and its length."""
        pending = self._pending
        self._pending = {}
        panes = [
            {"key": p.key, "predict": p.predict, "field": p.field, "text": p.text(), "done": p.done}
            for p in self._panes.values()
        ]
        w = self.widget
        wire = None
        if by_ref:
            wire = []
            for pane in panes:
                parts = pending.get(pane["key"])
                tail = "".join(parts[0]) if parts else ""
                wire.append({
                    "key": pane["key"], "predict": pane["predict"], "field": pane["field"],
                    "done": pane["done"], "tail": tail, "len": _len16(pane["text"]),
                })
        with w.hold_sync():  # sent on leaving: _panes_to_json sees the trait's own (validated) list
            w.snapshot_seq = w._delta_seq
            w.panes = panes
            w._panes_by_ref = None if wire is None else (w.panes, wire)
            w.stats = self._stats(now)
        self._stats_dirty = False
        self._last_stats_sent = now
        self._last_snapshot = now
        self._snapshot_chars = self._total_chars

    def _stats(self, now: float) -> dict[str, Any]:
        elapsed = max(0.0, now - self._t0)
        tokens = self.tokens
        ttft = self._lm_ttft
        if ttft is None and self._first_chunk_at is not None:
            ttft = self._first_chunk_at - self._t0
        generating = elapsed - ttft if ttft is not None else elapsed
        rate = tokens / generating if tokens and generating >= 0.05 else None
        return {
            "elapsed": round(elapsed, 3),
            "tokens": tokens,
            "tokens_per_s": round(rate, 2) if rate is not None else None,
            "ttft": round(ttft, 3) if ttft is not None else None,
        }

    def _on_resync(self) -> None:
        """A view missed some batches, or was created mid-stream: a fresh snapshot now."""
        with self._lock:
            if not self._started or self._finished:
                return
            now = self._clock()
            self._snapshot_locked(now)
            self._last_flush = now
            self._note_sent(now)

    # ---- the trailing flush

    def _schedule_trailing(self, delay: float) -> None:
        if self.timer == "none" or self._finished:
            return
        self._cancel_trailing()
        delay = max(0.0, delay)
        self._trailing_at = self._clock() + delay
        if self.timer == "auto":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._trailing = loop.call_later(delay, self._on_trailing)
                return
        timer = threading.Timer(delay, self._on_trailing)
        timer.daemon = True
        self._trailing = timer
        timer.start()

    def _cancel_trailing(self) -> None:
        trailing, self._trailing = self._trailing, None
        if trailing is not None:
            trailing.cancel()

    def _on_trailing(self) -> None:
        with self._lock:
            self._trailing = None
            if self._finished or not self._started:
                return
            now = self._clock()
            wait = self._next_flush_in(now)
            if wait is None:
                return
            if wait > 0.001:  # a timer that fired early (or a flush happened since): wait the rest
                self._schedule_trailing(wait)
            else:
                self._flush_locked(now)
