"""The state of one streaming call: its event channel, its listeners' per-call state, its routes.

Everything here is created per call, so one streamified program called twice, or 20 times at once,
never shares listener state between calls (DSPy's listeners go dead after the first call).
:class:`StreamCall` is the :class:`~jupyter_stream._observer.Observer` of the program it runs: each LM
call a program reports (native or DSPy) gets a :class:`CallWatch` that feeds the adapter's incremental
parser and routes its fields.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..adapters.base import FieldDelta, partial_fields
from .._callbacks import BaseCallback
from .events import LMRequest, LMResponse, StatusMessage, StreamResponse

if TYPE_CHECKING:
    from .._runs import LMCall, Tape
    from .listener import StreamListener
    from .status import StatusMessageProvider

__all__ = ["CallWatch", "Channel", "FieldFeed", "Router", "StreamCall"]


class Channel:
    """A single-consumer event queue on one loop. ``emit`` is O(1) and never blocks.

    ``items`` (the queue) and ``waiter`` (the consumer's future while it waits) are public for the per-token
    path: a producer on the loop's thread may ``items.append(event)`` and then, if ``waiter`` is not None,
    call :meth:`wake` (what ``emit`` does, without the call); the consumer pops ``items`` directly.
    """

    __slots__ = ("items", "waiter", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self._loop = loop
        self._thread = threading.get_ident()

    def emit(self, item: Any) -> None:
        """Append an event (from the loop's own thread)."""
        self.items.append(item)
        if self.waiter is not None:
            self.wake()

    def wake(self) -> None:
        """Wake the consumer waiting in :meth:`wait`."""
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def emit_first(self, item: Any) -> None:
        """Put an event ahead of the others (a deadline)."""
        self.emit(item)
        self.items.rotate(1)

    def emit_threadsafe(self, item: Any) -> None:
        """Append an event from any thread."""
        if threading.get_ident() == self._thread:
            self.emit(item)
        else:
            self._loop.call_soon_threadsafe(self.emit, item)

    async def wait(self) -> None:
        """Wait until an event is ready."""
        if self.items:
            return
        w = self.waiter = self._loop.create_future()
        try:
            await w
        finally:
            if self.waiter is w:
                self.waiter = None


class _FieldState:
    """One listener's state in one call."""

    __slots__ = ("predict_name", "field", "allow_reuse", "done", "started", "cache_hit")

    def __init__(self, predict_name: str, field: str, allow_reuse: bool) -> None:
        self.predict_name = predict_name
        self.field = field
        self.allow_reuse = allow_reuse
        self.done = False
        self.started = False
        self.cache_hit = False


class Router:
    """Routes one LM call's field deltas to the listeners of its predictor (the per-token hot path)."""

    __slots__ = ("_channel", "_emit", "_name", "_states", "_call_id")

    def __init__(self, channel: Channel, name: str, states: dict[str, _FieldState], call_id: int = 0) -> None:
        self._channel = channel
        self._emit = channel.emit
        self._name = name
        self._states = states
        self._call_id = call_id

    def route(self, deltas: Iterable[FieldDelta]) -> None:
        states, emit, name, call_id = self._states, self._emit, self._name, self._call_id
        for field, text, last in deltas:
            st = states.get(field)
            if st is None or st.done:
                continue
            st.started = True
            emit(StreamResponse(name, field, text, last, call_id))
            if last:
                st.done = True

    def plain_router(self) -> Callable[[str, str], None]:
        """``plain(field, text)``: ``route([FieldDelta(field, text, False)])`` without building the list, as a
        closure over this router's state that appends to the channel's queue without a call (the per-token
        path; ``make bench`` section 4, 100 concurrent streams, one afternoon: 1.53x the transport floor with it,
        1.62-1.74x with two method calls per token; the code before this session 1.43-1.57x)."""
        state_of, name, call_id = self._states.get, self._name, self._call_id
        channel = self._channel
        append = channel.items.append

        def plain(field: str, text: str) -> None:
            st = state_of(field)
            if st is not None and not st.done:
                st.started = True
                append(StreamResponse(name, field, text, False, call_id))
                if channel.waiter is not None:
                    channel.wake()

        return plain

    def close_open(self) -> None:
        """Give every field that started but did not close its one ``is_last_chunk`` (a failed call)."""
        for field, st in self._states.items():
            if st.started and not st.done:
                self._emit(StreamResponse(self._name, field, "", True, self._call_id))
                st.done = True

    def mark_cache_hit(self) -> None:
        for st in self._states.values():
            st.cache_hit = True




def _never(text: str) -> None:
    """The passthrough of a parser that does not implement one (duck-typed third-party parsers)."""
    return None


class FieldFeed:
    """One LM call's deltas -> the adapter's incremental parser -> the router.

    ``content(text)`` takes one content delta: a plain token inside an open field (most of them) costs
    one parser check and one event, with no list built (``Router.plain_router``). Native reasoning
    (``reasoning_content``) bypasses the parser as the ``native`` field (``reasoning``), closed when the first
    content delta arrives or the reply ends.
    """

    __slots__ = ("content", "_route", "_parser", "_router", "_reasoning_open", "_native", "_native_end")

    def __init__(self, router: Router, parser: Any, native: str = "reasoning") -> None:
        self._router, self._parser, self._route = router, parser, router.route
        self._native, self._native_end = native, (FieldDelta(native, "", True),)
        self._reasoning_open = [False]  # shared with ``content`` (a list, not self: no reference cycle)
        self.content = _content_hook(router, parser, self._reasoning_open, self._native_end)

    def reasoning(self, text: str) -> None:
        self._reasoning_open[0] = True
        self._route((FieldDelta(self._native, text, False),))

    def finish(self, *, cached: bool) -> None:
        """The call ended (or failed): close every field that opened, exactly once."""
        if cached:
            self._router.mark_cache_hit()
            return
        if self._reasoning_open[0]:
            self._reasoning_open[0] = False
            self._route(self._native_end)
        self._route(self._parser.finish())
        self._router.close_open()


def _content_hook(router: Router, parser: Any, reasoning_open: list[bool], native_end: tuple[FieldDelta]) -> Callable[[str], None]:
    """``FieldFeed.content``: one content delta through ``parser`` to ``router`` (the per-token hot path)."""
    passthrough = getattr(parser, "passthrough", None) or _never
    feed, route, route_plain = parser.feed, router.route, router.plain_router()

    def content(text: str) -> None:
        if reasoning_open[0]:
            reasoning_open[0] = False
            route(native_end)
        field = passthrough(text)
        if field is None:
            route(feed(text))
        else:
            route_plain(field, text)

    return content


class _StatusCallback(BaseCallback):
    """Turns the callback hooks into :class:`StatusMessage` events of one call."""

    def __init__(self, call: StreamCall, provider: StatusMessageProvider) -> None:
        self.call, self.provider = call, provider

    def _send(self, message: Any) -> None:
        if message:
            self.call.channel.emit_threadsafe(StatusMessage(str(message)))

    def note(self, message: str) -> None:
        """A status message of the engine's own (not from a provider hook)."""
        self._send(message)

    def on_module_start(self, call_id: int, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.provider.module_start_status_message(instance, inputs))

    def on_module_end(self, call_id: int, outputs: Any, exception: BaseException | None = None) -> None:
        if exception is None:
            self._send(self.provider.module_end_status_message(outputs))

    def on_lm_start(self, call_id: int, instance: Any, inputs: dict[str, Any]) -> None:
        self._send(self.provider.lm_start_status_message(instance, inputs))

    def on_lm_end(self, call_id: int, outputs: Any, exception: BaseException | None = None) -> None:
        if exception is None:
            self._send(self.provider.lm_end_status_message(outputs))

    def on_tool_start(self, call_id: int, instance: Any, inputs: dict[str, Any]) -> None:
        if getattr(instance, "name", None) != "finish":
            self._send(self.provider.tool_start_status_message(instance, inputs))

    def on_tool_end(self, call_id: int, outputs: Any, exception: BaseException | None = None) -> None:
        if exception is None and outputs != "Completed.":
            self._send(self.provider.tool_end_status_message(outputs))


class StreamCall:
    """One run of a streamed program: where its events go and which fields it streams.

    It is the program's :class:`~jupyter_stream._observer.Observer`: :meth:`watch_lm` answers each LM
    call the program starts.

    Args:
        listeners: DSPy-style listeners, already bound to predictors (``listener.predict`` set).
        names: ``id(predictor) -> attribute path`` for naming predictors in events.
        listen_all: stream every output field of every predictor that runs (``stream()``'s default);
            a set of field names restricts it; ``only`` restricts it to one predictor.
        passthrough: no listeners at all: pass the raw LM chunks through (DSPy's behaviour).
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        status_provider: StatusMessageProvider,
        listeners: list[StreamListener] = (),  # type: ignore[assignment]
        names: dict[int, str] | None = None,
        listen_all: bool = False,
        listen_fields: frozenset[str] | None = None,
        only: Any = None,
        passthrough: bool = False,
        lm_events: bool = False,
    ) -> None:
        self.channel = Channel(loop)
        self.emit = self.channel.emit
        self.status = _StatusCallback(self, status_provider)
        self.names = names or {}
        self.listen_all = listen_all
        self.listen_fields = listen_fields
        self.only = only
        self.passthrough = passthrough
        self.lm_events = lm_events
        self.lm_calls = 0
        self.cancelled = False
        self.tape: Tape | None = None
        """The run's tape when the run is kept (history or recording; set by ``drive``): LM calls report to it."""
        self.in_flight: dict[int, tuple[Any, Any, Any, str]] = {}
        """LM calls in flight: ``id -> (record, adapter, signature, predict_name)``, for partial text on errors."""
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._states: dict[int, dict[str, _FieldState]] = {}
        for lst in listeners:
            pid = id(lst.predict)
            st = _FieldState(lst.predict_name or self.names.get(pid, "predict"), lst.signature_field_name, lst.allow_reuse)
            self._states.setdefault(pid, {})[lst.signature_field_name] = st

    # ---------------------------------------------------------------------------------- routing
    def name_of(self, predict: Any) -> str:
        return self.names.get(id(predict)) or "predict"

    def watch_lm(self, predictor: Any, *, adapter: Any, signature: Any, model: str, messages: list[dict[str, Any]],
                 record: Any, native_reasoning: str = "reasoning") -> CallWatch:
        """A predictor of the program starts an LM call (the Observer hook)."""
        self.lm_calls += 1
        return CallWatch(self, predictor, self.lm_calls, adapter=adapter, signature=signature, model=model,
                         messages=messages, record=record, native_reasoning=native_reasoning)

    def router_for(self, predict: Any, output_fields: Iterable[str], call_id: int = 0, native: str = "reasoning") -> Router | None:
        """The router for one LM call of ``predict``, or None when none of its fields are listened."""
        if self.passthrough:
            return None
        if self.listen_all:
            if self.only is not None and predict is not self.only:
                return None
            name = self.name_of(predict)
            fields = list(output_fields)
            if native not in fields:
                fields.append(native)
            if self.listen_fields is not None:
                fields = [f for f in fields if f in self.listen_fields]
            states = {f: _FieldState(name, f, True) for f in fields}
            self._states.setdefault(id(predict), {}).update(states)
            return Router(self.channel, name, states, call_id) if states else None
        states = self._states.get(id(predict))
        if not states:
            return None
        active: dict[str, _FieldState] = {}
        for f, st in states.items():
            if st.done and st.allow_reuse:
                st.done = False
            if not st.done:
                active[f] = st
        if not active:
            return None
        name = next(iter(active.values())).predict_name
        return Router(self.channel, name, active, call_id)

    # ------------------------------------------------------------------------ DSPy's end logic
    def all_states(self) -> list[_FieldState]:
        return [st for states in self._states.values() for st in states.values()]

    def any_cache_hit(self) -> bool:
        return any(st.cache_hit for st in self.all_states())

    def any_started(self) -> bool:
        return any(st.started for st in self.all_states())

    # ---------------------------------------------------------------------------- cancellation
    def track(self, fut: concurrent.futures.Future[Any]) -> None:
        """Remember an LM call a sync program's thread is waiting on, to cancel it with the stream."""
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def cancel_pending(self) -> None:
        self.cancelled = True
        for fut in list(self._pending):
            fut.cancel()

    def partial(self) -> tuple[dict[str, str], str, str | None]:
        """What the LM calls in flight had received: ``(field texts, raw text, predictor name)``."""
        if not self.in_flight:
            return {}, "", None
        rec, adapter, signature, name = self.in_flight[max(self.in_flight)]  # the latest call in flight
        raw = rec.content_so_far()
        return partial_fields(adapter, signature, raw, rec.reasoning_parts), raw, name



class CallWatch:
    """One LM call of a stream's program: where its deltas go (the :class:`~jupyter_stream._observer.LMWatch`).

    Made by :meth:`StreamCall.watch_lm`. It emits :class:`LMRequest` at once (when the stream carries LM
    events), feeds the content deltas to the adapter's incremental parser when one of the predictor's
    fields is listened to (or passes the raw chunks through when the stream has no listener at all),
    keeps the call's record in the stream's calls ``in_flight`` for the partial text of an error, and emits
    :class:`LMResponse` when the call is done.
    """

    __slots__ = ("_call", "call_id", "predict_name", "on_content", "on_reasoning", "on_chunk", "_fields", "_model",
                 "_messages", "_kept")

    def __init__(self, call: StreamCall, predictor: Any, call_id: int, *, adapter: Any, signature: Any, model: str,
                 messages: list[dict[str, Any]], record: Any, native_reasoning: str = "reasoning") -> None:
        self._call, self.call_id, self._model, self._messages = call, call_id, model, messages
        self.predict_name = name = call.name_of(predictor)
        self.on_content: Callable[[str], None] | None = None
        self.on_reasoning: Callable[[str], None] | None = None
        self.on_chunk: Callable[[dict[str, Any]], None] | None = None
        self._fields: FieldFeed | None = None
        self._kept: LMCall | None = None
        call.in_flight[call_id] = (record, adapter, signature, name)
        if call.lm_events:
            call.emit(LMRequest(name, model, messages, call_id))
        if call.passthrough:
            self.on_chunk = _passthrough(call.emit)
        else:
            router = call.router_for(predictor, signature.output_fields, call_id, native_reasoning)
            if router is not None:
                self._fields = FieldFeed(router, adapter.field_parser(signature), native_reasoning)
                self.on_content, self.on_reasoning = self._fields.content, self._fields.reasoning
        tape = call.tape
        if tape is not None:
            kept = self._kept = tape.lm_start(call_id, name, model, messages)
            if kept.deltas is not None:  # the run keeps its events (recorded): each raw delta with its time
                self.on_content = tape.timed(kept.deltas, self.on_content)
                self.on_reasoning = tape.timed(kept.reasoning_deltas, self.on_reasoning)  # type: ignore[arg-type]

    def close(self, *, cached: bool) -> None:
        if self._fields is not None:
            self._fields.finish(cached=cached)

    def done(self, record: Any, *, error: BaseException | None = None) -> None:
        call = self._call
        call.in_flight.pop(self.call_id, None)
        if self._kept is not None:
            call.tape.lm_end(self._kept, record, error)  # type: ignore[union-attr]
        if error is None and call.lm_events:
            call.emit(LMResponse(self.predict_name, self._model, record.text, record.reasoning, record.usage,
                                 record.ttft, record.duration, record.cached, self.call_id))


def _passthrough(emit: Callable[[Any], None]) -> Callable[[dict[str, Any]], None]:
    """Without listeners, the raw LM chunks go to the consumer as typed ``ChatCompletionChunk`` objects."""
    from openai.types.chat import ChatCompletionChunk

    def on_chunk(data: dict[str, Any]) -> None:
        if data.get("choices"):
            emit(ChatCompletionChunk.model_validate(data))

    return on_chunk
