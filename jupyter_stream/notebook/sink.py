"""WidgetSink: the renderer that feeds a :class:`~jupyter_stream.notebook.widget.StreamWidget` from a
stream's events (batched deltas at most ``max_messages_per_s``, snapshots, stats), following the wire
protocol of :mod:`jupyter_stream.notebook.wire`.

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
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

from .._compare import CompareResult, VariantDone, VariantEvent
from .._prediction import is_prediction
from ..streaming.events import LMRequest, LMResponse, PaneLabels, StatusMessage, StreamResponse
from .throttle import TIMERS, MessageBudget, Throttle
from .widget import EMPTY_STATS, StreamWidget
from .wire import VARIANT_SEP, _len16

__all__ = ["WidgetSink", "pretty"]


class _Lane:
    """What one status line counts (O(1) per event): the whole stream, or one variant of a comparison, which
    also has its own pane labels, status, message, error and prediction."""

    __slots__ = ("label", "model", "labels", "t0", "first_chunk_at", "chunks", "chunks_at_usage", "usage_tokens",
                 "saw_usage", "lm_ttft", "call_model", "prediction", "status", "error", "message", "stats_dirty")

    def __init__(self, t0: float, label: str = "", model: str = "") -> None:
        self.label, self.model = label, model
        self.labels = PaneLabels()
        self.t0 = t0
        self.first_chunk_at: float | None = None
        self.chunks = 0
        self.chunks_at_usage = 0
        self.usage_tokens = 0
        self.saw_usage = False
        self.lm_ttft: float | None = None
        self.call_model = ""
        self.prediction: dict[str, Any] | None = None
        self.status = "running"
        self.error = ""
        self.message = ""
        self.stats_dirty = False

    @property
    def tokens(self) -> int:
        """LM usage where known, else the number of chunks with text."""
        return self.usage_tokens + (self.chunks - self.chunks_at_usage)

    def chunk(self, now: float) -> None:
        self.chunks += 1
        if self.first_chunk_at is None:
            self.first_chunk_at = now
        self.stats_dirty = True

    def response(self, ev: LMResponse) -> None:
        """An LM call ended: its usage replaces the chunks counted for it."""
        n = _completion_tokens(ev.usage)
        if n is not None:
            self.usage_tokens += n
            self.saw_usage = True
        else:
            self.usage_tokens += self.chunks - self.chunks_at_usage
        self.chunks_at_usage = self.chunks
        if self.lm_ttft is None and ev.ttft is not None:
            self.lm_ttft = float(ev.ttft)
        if ev.model and not self.call_model:
            self.call_model = str(ev.model)
        self.stats_dirty = True

    def predicted(self, prediction: Any) -> None:
        """Keep ``prediction`` as shown (``{"fields", "usage"}``); its usage counts when no call reported any."""
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
        if not self.saw_usage and isinstance(usage, dict):
            counts = [_completion_tokens(u) for u in usage.values()]
            if counts and all(c is not None for c in counts):
                self.usage_tokens = sum(c for c in counts if c is not None)
                self.chunks_at_usage = self.chunks
                self.saw_usage = True
                self.stats_dirty = True
        self.prediction = {"fields": fields, "usage": usage if isinstance(usage, dict) else {}}

    def stats(self, now: float) -> dict[str, Any]:
        elapsed = max(0.0, now - self.t0)
        tokens = self.tokens
        ttft = self.lm_ttft
        if ttft is None and self.first_chunk_at is not None:
            ttft = self.first_chunk_at - self.t0
        generating = elapsed - ttft if ttft is not None else elapsed
        rate = tokens / generating if tokens and generating >= 0.05 else None
        return {
            "elapsed": round(elapsed, 3),
            "tokens": tokens,
            "tokens_per_s": round(rate, 2) if rate is not None else None,
            "ttft": round(ttft, 3) if ttft is not None else None,
        }

    def state(self, now: float) -> dict[str, Any]:
        """This variant's entry of the ``variants`` trait."""
        return {"label": self.label, "model": self.model or self.call_model, "status": self.status,
                "error": self.error, "message": self.message, "stats": self.stats(now),
                "prediction": self.prediction or {}}


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
    if is_prediction(value):
        return dict(value.items())
    try:  # models, dataclasses, sets... as pydantic writes them; anything else as its str
        return to_jsonable_python(value, fallback=str)
    except Exception:  # noqa: BLE001 - a model that cannot dump itself
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
    in the batches, at most every ``stats_interval`` seconds (the limits and the timer: :class:`Throttle`). The ``panes`` snapshot goes out at the
    start, when a view asks for it (a view that missed batches or was created mid-stream), at the end,
    and, if ``snapshot_interval`` is set, at most every ``snapshot_interval`` seconds once the text has
    grown ``snapshot_growth`` times since the last snapshot (so all of them together stay within
    ``growth / (growth - 1)`` times the text).

    ``timer``: ``"auto"`` (the running loop if there is one, else a thread), ``"thread"`` (always a
    ``threading.Timer``: use it when you feed the sink from a blocking loop in a cell, where the kernel's
    loop cannot run the trailing flush), or ``"none"`` (no trailing flush). ``budget``: the messages all widgets
    share (:class:`~jupyter_stream.notebook.throttle.MessageBudget`; default: the process's one, 30 a second).

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
        budget: MessageBudget | None = None,
    ) -> None:
        if timer not in TIMERS:
            raise ValueError(f"timer must be 'auto', 'thread' or 'none', not {timer!r}")
        self.widget = widget if widget is not None else StreamWidget()
        self.snapshot_interval = None if snapshot_interval is None else max(0.0, float(snapshot_interval))
        self.snapshot_growth = max(1.0, float(snapshot_growth))
        self.stats_interval = max(0.0, float(stats_interval))
        self._clock = clock
        self._lock = threading.RLock()
        w = self.widget
        self.throttle = Throttle(
            self._on_trailing, lambda: w.messages_sent + w.state_updates_sent,
            interval=flush_interval, max_per_s=max_messages_per_s, timer=timer, clock=clock, budget=budget,
        )
        self._reset()
        self._started = False
        self._finished = False

    # ------------------------------------------------------------------------------ public API

    def start(self, *, title: str | None = None, model: str | None = None, markdown: bool | None = None,
              variants: Sequence[tuple[str, str]] | None = None) -> None:
        """Begin a stream: status "running", ``started_at`` now, empty panes (also when reusing a widget).

        ``variants``: ``(label, model)`` of each variant of a comparison (a :class:`~jupyter_stream.Comparison`'s
        ``labels`` and ``models``): the widget then shows a column per variant, fed by ``VariantEvent``s."""
        with self._lock:
            self._reset()
            self._started = True
            self._finished = False
            now = self._clock()
            self._whole = _Lane(now)
            self._lanes = {label: _Lane(now, label, vmodel) for label, vmodel in (variants or ())}
            self._last_snapshot = now
            w = self.widget
            w.attach(resync=self._on_resync, texts=self._live_texts)
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
                w.stats = dict(EMPTY_STATS)
                w.prediction = {}
                w.lm_calls = []
                w.variants = self._variant_states(now)
                w.diff = []
                w.run_diff = {}
                # An empty snapshot at the current seq clears the panes of a reused widget.
                w.panes = []
                w.snapshot_seq = w.last_seq
            self.throttle.note_sent(now)

    def handle(self, event: Any) -> None:
        """Feed one event: StreamResponse, StatusMessage, LMRequest, LMResponse or the final Prediction.

        Other types are ignored. Starts the sink if ``start`` was not called. The Prediction is kept
        (its usage counts at once) and shown by ``finish``. A comparison's ``VariantEvent`` (one of those
        events, of one variant), ``VariantDone`` and ``CompareResult`` (the diff, shown by ``finish``) go to
        the variants' columns (see ``start``).
        """
        if type(event) is StreamResponse:  # the hot path
            self._on_chunk(event, self._whole)
        elif type(event) is VariantEvent:
            lane = self._lanes.get(event.variant)
            if lane is not None:
                self._on_event(event.event, lane)
        elif type(event) is VariantDone:
            self._on_variant_done(event)
        elif isinstance(event, CompareResult):
            with self._lock:
                self._diff = [{"field": f.field, "a": f.a, "b": f.b, "ops": [list(op) for op in f.ops]}
                              for f in event.diff.fields]
        else:
            self._on_event(event, self._whole)

    def _on_event(self, event: Any, lane: _Lane) -> None:
        if isinstance(event, StreamResponse):
            self._on_chunk(event, lane)
        elif isinstance(event, StatusMessage):
            self._on_status(event, lane)
        elif isinstance(event, LMRequest):
            self._on_request(event, lane)
        elif isinstance(event, LMResponse):
            self._on_response(event, lane)
        elif is_prediction(event):  # ours, or a DSPy program's own dspy.Prediction
            with self._lock:
                self._ensure_started()
                lane.predicted(event)

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
            self.throttle.disarm()
            if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                error, stopped = None, True
            status = "error" if error is not None else "stopped" if stopped else "done"
            if prediction is not None:
                self._whole.predicted(prediction)
            if status == "done":
                for pane in self._panes.values():
                    pane.done = True
            for lane in self._lanes.values():
                if lane.status == "running":
                    lane.status = "stopped" if status == "stopped" else status
            now = self._clock()
            w = self.widget
            with w.hold_sync():
                self._snapshot_locked(now, by_ref=w.views_seen)
                if self._calls_dirty:
                    self._set_calls()
                if self._variants_dirty:
                    self._set_variants(now)
                if self._whole.prediction is not None:
                    w.prediction = self._whole.prediction
                if self._diff:
                    w.diff = self._diff
                if error is not None:
                    w.error = f"{type(error).__name__}: {error}"
                w.status = status
            self._finished = True
            self.throttle.note_sent(now)

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
        return self._whole.tokens

    @property
    def stats(self) -> dict[str, Any]:
        """The live stats (the ``stats`` trait holds them as of the last snapshot)."""
        with self._lock:
            return self._whole.stats(self._clock()) if self._started else dict(EMPTY_STATS)

    def variant_stats(self) -> dict[str, dict[str, Any]]:
        """The live stats of each variant of a comparison, by label."""
        with self._lock:
            now = self._clock()
            return {label: lane.stats(now) for label, lane in self._lanes.items()}

    def texts(self) -> dict[str, str]:
        """The full text of each pane, by key, in display order."""
        with self._lock:
            return {key: pane.text() for key, pane in self._panes.items()}

    # ------------------------------------------------------------------------------- internals

    def _reset(self) -> None:
        self._panes: dict[str, _Pane] = {}
        self._pending: dict[str, list[Any]] = {}
        self._total_chars = 0
        self._whole = _Lane(self._clock())
        self._lanes: dict[str, _Lane] = {}
        self._diff: list[dict[str, Any]] = []
        self.throttle.restart()
        self._last_snapshot = float("-inf")
        self._snapshot_chars = 0
        self._stats_dirty = False
        self._last_stats_sent = float("-inf")
        self._status_log: list[str] = []
        self._lm_calls: list[dict[str, Any]] = []
        self._calls_dirty = False
        self._variants_dirty = False

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    def _live_texts(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(p.key, p.predict, p.text()) for p in self._panes.values()]

    def _group(self, lane: _Lane, predict_name: str, call_id: int) -> str:
        """The pane group of an LM call: its label ("react[2]": one per call), after its variant's label and
        VARIANT_SEP in a comparison."""
        label = lane.labels(predict_name, call_id)
        return f"{lane.label}{VARIANT_SEP}{label}" if lane is not self._whole else label

    def _on_chunk(self, ev: StreamResponse, lane: _Lane) -> None:
        with self._lock:
            if not self._started:
                self.start(title=ev.predict_name)
                lane = self._whole
            if self._finished:
                return
            now = self._clock()
            predict = self._group(lane, ev.predict_name, ev.call_id)
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
                self._total_chars += len(chunk)
                self._whole.chunk(now)
                if lane is not self._whole:
                    lane.chunk(now)
            if ev.is_last_chunk and not pane.done:
                pane.done = True
                pend[1] = True
            self._stats_dirty = True
            self._maybe_flush(now)

    def _on_status(self, ev: StatusMessage, lane: _Lane) -> None:
        with self._lock:
            self._ensure_started()
            message = str(ev.message)
            self._status_log.append(message if lane is self._whole else f"{lane.label}: {message}")
            if len(self._status_log) > 500:
                del self._status_log[: len(self._status_log) - 500]
            if lane is not self._whole:  # a comparison's: with the next batch, within the message budget
                lane.message = message
                self._variants_dirty = True
                self._maybe_flush(self._clock())
                return
            w = self.widget
            with w.hold_sync():
                w.status_message = message
                w.status_log = list(self._status_log)
            self.throttle.note_sent(self._clock())

    def _on_request(self, ev: LMRequest, lane: _Lane) -> None:
        with self._lock:
            self._ensure_started()
            entry = {
                "call_id": ev.call_id,
                "predict": ev.predict_name,
                "group": self._group(lane, ev.predict_name, ev.call_id),
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
            if lane is not self._whole:  # a comparison's: with the next batch, within the message budget
                entry["variant"] = lane.label
                self._calls_dirty = True
                self._maybe_flush(self._clock())
                return
            self._calls_dirty = False  # this update carries every call, a finished one too
            w = self.widget
            with w.hold_sync():
                if not w.model_name and ev.model and lane is self._whole:
                    w.model_name = str(ev.model)
                w.lm_calls = list(self._lm_calls)
            self.throttle.note_sent(self._clock())

    def _on_response(self, ev: LMResponse, lane: _Lane) -> None:
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
                "group": self._group(lane, ev.predict_name, ev.call_id),
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
            if lane is not self._whole:
                entry["variant"] = lane.label
            # A new dict (not an in-place edit) so the trait sees the change; sent with the next flush
            # (or the next update, or the end), after the deltas holding the text its reply refers to.
            if index is None:
                self._lm_calls.append(entry)
            else:
                self._lm_calls[index] = entry
            self._calls_dirty = True
            self._whole.response(ev)
            if lane is not self._whole:
                lane.response(ev)
            self._stats_dirty = True
            self._maybe_flush(self._clock())

    def _on_variant_done(self, end: VariantDone) -> None:
        with self._lock:
            self._ensure_started()
            lane = self._lanes.get(end.variant)
            if lane is None or self._finished:
                return
            if end.error is not None:
                lane.status, lane.error = "error", f"{type(end.error).__name__}: {end.error}"
            else:
                lane.status = "done"
                if end.prediction is not None:
                    lane.predicted(end.prediction)
            # With the next batch, after the text it showed, within the message budget.
            self._variants_dirty = True
            self._maybe_flush(self._clock())

    def _variant_states(self, now: float) -> list[dict[str, Any]]:
        return [lane.state(now) for lane in self._lanes.values()]

    def _set_variants(self, now: float) -> None:
        """Set ``variants`` and ``status_log`` (a comparison's statuses): call inside ``hold_sync``."""
        self._variants_dirty = False
        self.widget.variants = self._variant_states(now)
        self.widget.status_log = list(self._status_log)

    # ---- flushing

    def _next_flush_in(self, now: float) -> float | None:
        """Seconds until the next flush may go out (<= 0: now), or None when there is nothing to send."""
        if self._pending or self._calls_dirty or self._variants_dirty:
            ready_in = 0.0
        elif self._stats_dirty:
            ready_in = self._last_stats_sent + self.stats_interval - now
        else:
            return None
        return self.throttle.wait(now, ready_in=ready_in)

    def _maybe_flush(self, now: float) -> None:
        wait = self._next_flush_in(now)
        if wait is None:
            return
        if wait <= 0:
            self._flush_locked(now)
        else:
            self.throttle.arm(wait, unless_sooner=True)

    def _flush_locked(self, now: float, force: bool = False) -> None:
        self.throttle.disarm()
        stats = None
        if self._stats_dirty and (force or now - self._last_stats_sent >= self.stats_interval):
            stats = self._whole.stats(now)
            self._stats_dirty = False
            self._last_stats_sent = now
        self._send_deltas(stats)
        self.throttle.flushed(now)
        if self._calls_dirty or self._variants_dirty:  # one update, after the batch whose text they refer to
            with self.widget.hold_sync():
                if self._calls_dirty:
                    self._set_calls()
                if self._variants_dirty:
                    self._set_variants(now)
        if (
            self.snapshot_interval is not None
            and now - self._last_snapshot >= self.snapshot_interval
            and self._total_chars >= self.snapshot_growth * max(1, self._snapshot_chars)
        ):
            self._snapshot_locked(now)
        self.throttle.note_sent(now)
        if self._stats_dirty:  # held back by stats_interval: a trailing flush sends them
            wait = self._next_flush_in(now)
            if wait is not None:
                self.throttle.arm(wait)

    def _set_calls(self) -> None:
        """Set ``lm_calls`` (and ``model_name`` if it is still empty): call inside ``hold_sync``."""
        self._calls_dirty = False
        w = self.widget
        if not w.model_name and self._whole.call_model and not self._lanes:
            w.model_name = self._whole.call_model
        w.lm_calls = list(self._lm_calls)

    def _send_deltas(self, stats: dict[str, Any] | None = None) -> None:
        if not self._pending and stats is None:
            return
        items = []
        for key, (parts, done) in self._pending.items():
            items.append([key, parts[0] if len(parts) == 1 else "".join(parts), done])
        self._pending = {}
        w = self.widget
        msg: dict[str, Any] = {"type": "deltas", "seq": w.next_seq(), "items": items}
        if stats is not None:
            msg["stats"] = stats
            if self._lanes:  # a comparison: each variant's status line too
                now = self._clock()
                msg["vstats"] = {label: lane.stats(now) for label, lane in self._lanes.items()
                                 if lane.status == "running" or lane.stats_dirty}
                for lane in self._lanes.values():
                    lane.stats_dirty = False
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
            w.snapshot_seq = w.last_seq
            w.panes = panes
            w.final_by_ref = None if wire is None else (w.panes, wire)
            w.stats = self._whole.stats(now)
            if self._lanes:
                self._set_variants(now)
        self._stats_dirty = False
        self._last_stats_sent = now
        self._last_snapshot = now
        self._snapshot_chars = self._total_chars

    def _on_resync(self) -> None:
        """A view missed some batches, or was created mid-stream: a fresh snapshot now."""
        with self._lock:
            if not self._started or self._finished:
                return
            now = self._clock()
            self._snapshot_locked(now)
            self.throttle.flushed(now)
            self.throttle.note_sent(now)

    # ---- the trailing flush

    def _on_trailing(self) -> None:
        with self._lock:
            self.throttle.disarm()
            if self._finished or not self._started:
                return
            now = self._clock()
            wait = self._next_flush_in(now)
            if wait is None:
                return
            if wait > 0.001:  # a timer that fired early (or a flush happened since): wait the rest
                self.throttle.arm(wait)
            else:
                self._flush_locked(now)
