"""StreamWidget (an anywidget) and WidgetSink, the renderer that feeds it from a stream's events.

The wire protocol (Python -> front end):

- synced traits: ``title``, ``model_name``, ``status`` (idle|running|done|stopped|error),
  ``status_message``, ``status_log``, ``error``, ``markdown``, ``started_at`` (epoch ms), ``stats``,
  ``panes`` (the snapshot: ``[{key, predict, field, text, done}]`` in display order), ``snapshot_seq``,
  ``prediction`` (``{"fields": {...}, "usage": {...}}``), ``lm_calls``;
- custom messages ``{"type": "deltas", "seq": n, "items": [[key, text, done], ...]}``, ``n`` going up
  by one per batch. The front end applies a batch only if ``seq`` > the last applied one; a snapshot
  with ``snapshot_seq = s`` replaces its panes and counts as batch ``s`` applied. So a page reload,
  a second view or a saved notebook shows the full text from the ``panes`` trait alone.

Front end -> Python: ``{"type": "stop"}`` (the Stop button) and ``{"type": "resync"}`` (a view that
missed batches, e.g. reloaded mid-stream, asks for a fresh snapshot).

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
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from ..prediction import Prediction
from ..streaming.events import LMRequest, LMResponse, StatusMessage, StreamResponse

__all__ = ["STATUSES", "StreamWidget", "WidgetSink"]

_STATIC = Path(__file__).parent.parent / "static"

STATUSES = ("idle", "running", "done", "stopped", "error")

_EMPTY_STATS: dict[str, Any] = {"elapsed": 0.0, "tokens": 0, "tokens_per_s": None, "ttft": None}


def _payload_size(content: Any) -> int:
    try:
        return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))
    except (TypeError, ValueError):
        return 0


class StreamWidget(anywidget.AnyWidget):
    """Shows one stream: header, status line, per-field token panes, prediction, prompt inspector, Stop.

    ``on_stop(callback)`` registers a callable (no arguments) run when the Stop button is clicked.
    ``messages_sent``/``bytes_sent`` count the custom messages sent (and their JSON payload bytes);
    ``state_updates_sent``/``state_bytes_sent`` the trait updates.
    """

    _esm = _STATIC / "widget.js"
    _css = _STATIC / "widget.css"

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
    panes = t.List(t.Dict()).tag(sync=True)
    snapshot_seq = t.Int(0).tag(sync=True)
    prediction = t.Dict().tag(sync=True)
    lm_calls = t.List(t.Dict()).tag(sync=True)

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
        self._stop_callbacks: list[Callable[[], Any]] = []
        self._resync_callback: Callable[[], Any] | None = None
        super().__init__(**kwargs)
        self.on_msg(self._on_frontend_msg)

    @property
    def last_seq(self) -> int:
        """The seq of the last delta batch sent."""
        return self._delta_seq

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
        elif kind == "resync":
            callback = self._resync_callback
            if callback is not None:
                callback()


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
    if isinstance(value, Prediction):
        return value.to_dict()
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
    Batched deltas go out at most ``1/flush_interval`` times a second: at an event when the last flush
    is older than ``flush_interval``, and by a trailing flush (``loop.call_later`` on the running loop,
    or a ``threading.Timer`` where no loop runs) so the end of a burst is not held back. The ``panes``
    snapshot trait is refreshed at most every ``snapshot_interval`` seconds while streaming (less
    often for big texts, keeping snapshots under ``snapshot_bytes_per_s``), and always in ``finish``.

    ``timer``: ``"auto"`` (the running loop if there is one, else a thread), ``"thread"`` (always a
    ``threading.Timer``: use it when you feed the sink from a blocking loop in a cell, where the kernel's
    loop cannot run the trailing flush), or ``"none"`` (no trailing flush).
    """

    def __init__(
        self,
        widget: StreamWidget | None = None,
        flush_interval: float = 1 / 30,
        snapshot_interval: float = 1.0,
        *,
        timer: str = "auto",
        snapshot_bytes_per_s: float = 250_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timer not in ("auto", "thread", "none"):
            raise ValueError(f"timer must be 'auto', 'thread' or 'none', not {timer!r}")
        self.widget = widget if widget is not None else StreamWidget()
        self.flush_interval = max(0.0, float(flush_interval))
        self.snapshot_interval = max(0.0, float(snapshot_interval))
        self.snapshot_bytes_per_s = float(snapshot_bytes_per_s)
        self.timer = timer
        self._clock = clock
        self._lock = threading.RLock()
        self._trailing: Any = None
        self._reset()
        self._started = False
        self._finished = False

    # ------------------------------------------------------------------------------ public API

    def start(self, title: str | None = None, model: str | None = None, *, markdown: bool | None = None) -> None:
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

    def handle(self, event: Any) -> None:
        """Feed one event: StreamResponse, StatusMessage, LMRequest, LMResponse or the final Prediction.

        Other types are ignored. Starts the sink if ``start`` was not called.
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
        elif isinstance(event, Prediction):
            with self._lock:
                self._ensure_started()
                self._set_prediction(event)

    __call__ = handle

    def flush(self) -> None:
        """Send the pending deltas (and stats) now, whatever the rate."""
        with self._lock:
            self._flush_locked(self._clock())

    def finish(self, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        """End the stream: final flush, final snapshot, status done/stopped/error, the prediction.

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
                self._set_prediction(prediction, sync=False)
            if status == "done":
                for pane in self._panes.values():
                    if not pane.done:
                        pane.done = True
                        self._pend(pane.key)[1] = True
            now = self._clock()
            self._send_deltas()
            self._last_flush = now
            w = self.widget
            with w.hold_sync():
                self._snapshot_locked(now)
                w.stats = self._stats(now)
                self._stats_dirty = False
                if self._prediction is not None:
                    w.prediction = self._prediction
                if error is not None:
                    w.error = f"{type(error).__name__}: {error}"
                w.status = status
            self._finished = True

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

    def texts(self) -> dict[str, str]:
        """The full text of each pane, by key, in display order."""
        with self._lock:
            return {key: pane.text() for key, pane in self._panes.items()}

    # ------------------------------------------------------------------------------- internals

    def _reset(self) -> None:
        self._panes: dict[str, _Pane] = {}
        self._pending: dict[str, list[Any]] = {}
        self._total_chars = 0
        self._t0 = self._clock()
        self._last_flush = float("-inf")
        self._last_snapshot = float("-inf")
        self._first_chunk_at: float | None = None
        self._chunks = 0
        self._chunks_at_usage = 0
        self._usage_tokens = 0
        self._saw_usage = False
        self._lm_ttft: float | None = None
        self._stats_dirty = False
        self._status_log: list[str] = []
        self._lm_calls: list[dict[str, Any]] = []
        self._prediction: dict[str, Any] | None = None

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    def _pend(self, key: str) -> list[Any]:
        pend = self._pending.get(key)
        if pend is None:
            pend = self._pending[key] = [[], False]
        return pend

    def _on_chunk(self, ev: StreamResponse) -> None:
        with self._lock:
            if not self._started:
                self.start(title=ev.predict_name)
            if self._finished:
                return
            now = self._clock()
            key = f"{ev.predict_name}.{ev.signature_field_name}"
            pane = self._panes.get(key)
            if pane is None:
                pane = self._panes[key] = _Pane(key, ev.predict_name, ev.signature_field_name)
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

    def _on_request(self, ev: LMRequest) -> None:
        with self._lock:
            self._ensure_started()
            entry = {
                "call_id": ev.call_id,
                "predict": ev.predict_name,
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
            w = self.widget
            with w.hold_sync():
                if not w.model_name and ev.model:
                    w.model_name = str(ev.model)
                w.lm_calls = list(self._lm_calls)

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
            # A new dict (not an in-place edit) so the trait sees the change.
            if index is None:
                self._lm_calls.append(entry)
            else:
                self._lm_calls[index] = entry
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
            w = self.widget
            with w.hold_sync():
                if not w.model_name and ev.model:
                    w.model_name = str(ev.model)
                w.lm_calls = list(self._lm_calls)
            self._maybe_flush(self._clock())

    def _set_prediction(self, prediction: Any, sync: bool = True) -> None:
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
        if sync:
            self.widget.prediction = self._prediction

    # ---- flushing

    def _maybe_flush(self, now: float) -> None:
        since = now - self._last_flush
        if since >= self.flush_interval:
            self._flush_locked(now)
        elif self._trailing is None:
            self._schedule_trailing(self.flush_interval - since)

    def _flush_locked(self, now: float) -> None:
        self._cancel_trailing()
        self._send_deltas()
        self._last_flush = now
        if self._stats_dirty:
            self.widget.stats = self._stats(now)
            self._stats_dirty = False
        if self._started and not self._finished and now - self._last_snapshot >= self._snapshot_every():
            self._snapshot_locked(now)

    def _send_deltas(self) -> None:
        if not self._pending:
            return
        items = []
        for key, (parts, done) in self._pending.items():
            items.append([key, parts[0] if len(parts) == 1 else "".join(parts), done])
        self._pending = {}
        w = self.widget
        w._delta_seq += 1
        w.send({"type": "deltas", "seq": w._delta_seq, "items": items})

    def _snapshot_every(self) -> float:
        size_limited = self._total_chars / self.snapshot_bytes_per_s if self.snapshot_bytes_per_s > 0 else 0.0
        return max(self.snapshot_interval, size_limited)

    def _snapshot_locked(self, now: float) -> None:
        """Set ``panes`` + ``snapshot_seq`` (one update). The pending deltas must have been sent."""
        panes = [
            {"key": p.key, "predict": p.predict, "field": p.field, "text": p.text(), "done": p.done}
            for p in self._panes.values()
        ]
        w = self.widget
        with w.hold_sync():
            w.snapshot_seq = w._delta_seq
            w.panes = panes
        self._last_snapshot = now

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
        """A view missed some batches: send what is pending and a fresh snapshot now."""
        with self._lock:
            if not self._started or self._finished:
                return
            now = self._clock()
            self._send_deltas()
            self._last_flush = now
            self._snapshot_locked(now)

    # ---- the trailing flush

    def _schedule_trailing(self, delay: float) -> None:
        if self.timer == "none" or self._finished:
            return
        delay = max(0.0, delay)
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
            early = self.flush_interval - (now - self._last_flush)
            if early > 0.001:  # a timer that fired early (or a flush happened since): wait the rest
                self._schedule_trailing(early)
            elif self._pending or self._stats_dirty:
                self._flush_locked(now)
