"""DSPy programs, streamed by jupyter_stream: a ``dspy.Module`` reports its LM calls to the observer.

``import jupyter_stream`` never imports this module (nor ``dspy`` or ``litellm``): it is imported when a
DSPy program is streamed, and a DSPy program exists only once the user imported ``dspy``.

How a DSPy program is watched: it runs under ``dspy.context(send_stream=<bridge>, callbacks=[...,
<bridge>])``. DSPy calls the bridge's callback hooks (``on_adapter_format_start`` names the adapter and
the signature of the next LM call, ``on_lm_start``/``on_lm_end`` open and close the call, ``on_tool_*``
and ``on_module_*`` become status messages) and hands it the raw LM chunks through ``send_stream``.
Each LM call gets its own watch from the stream's observer, with a fresh incremental parser of
jupyter_stream's own for DSPy's chat, JSON or XML format. So the chunks are exact (they join to the
field values DSPy parses), each call is its own pane, and parsing, routing, time limits, cancellation
and every sink are the ones native programs use. The prediction is the program's own ``dspy.Prediction``.

The chunk's LM call is found from DSPy's ``ACTIVE_CALL_ID`` context variable, which holds the LM call's
id while the call streams, so concurrent calls of one predictor (``asyncio.gather``, ``dspy.Parallel``)
never mix. A cache hit streams nothing: its reply is parsed at once when the call ends.

Example (needs ``pip install jupyter_stream[dspy]``)::

    import dspy, jupyter_stream as js
    program = dspy.ChainOfThought("question -> answer")
    for event in js.stream(program, None, {"question": "Why is the sky blue?"}):
        print(event)
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.lowlevel
import dspy
from anyio._core._eventloop import threadlocals as _anyio_threadlocals  # see _lend_event_loop_token
from dspy.utils import callback as _dspy_callback

from . import _observer
from ._exceptions import AdapterParseError, ConfigurationError, LMError, StreamError
from .adapters import JSONAdapter, XMLAdapter
from .adapters.dspy_chat import DSPyChatAdapter
from .adapters.base import partial_fields
from ._lm import LMRecord
from .settings import default_lm
from ._signatures import Field, Signature, build_signature

__all__ = ["THREAD_GRACE", "bind", "is_dspy_program", "model_name", "named_predictors", "options", "variant_options"]

THREAD_GRACE = 2.0
"""Seconds a cancelled sync DSPy program's thread gets to unwind before the stream ends without it. It
stops at its next LM chunk (on DSPy 3.0-3.3 at once: its reply is read on the stream's loop); a tool
blocking in the thread, or a DSPy 3.4 reply stalled mid-stream (read by the thread itself), cannot be
interrupted, so after this the thread is left to finish alone."""

_ACTIVE_CALL_ID: contextvars.ContextVar[Any] = getattr(_dspy_callback, "ACTIVE_CALL_ID", None) or (
    _dspy_callback.callback_context.ACTIVE_CALL_ID  # DSPy >= 3.3 keeps it in a submodule
)
_format: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar("jupyter_stream_dspy_format", default=None)
"""The adapter and signature DSPy formatted last in this context: the next LM call's."""
_unparsed: contextvars.ContextVar[tuple[Any, str | None] | None] = contextvars.ContextVar(
    "jupyter_stream_dspy_unparsed", default=None)
"""The LM call in this context whose adapter has no parser of ours, and the id of the parse that reads it:
its fields go in when that parse ends."""


def is_dspy_program(obj: Any) -> bool:
    """True for a ``dspy.Module`` (a Predict, ChainOfThought, ReAct, a user's module...)."""
    return isinstance(obj, dspy.Module)


def named_predictors(program: Any) -> list[tuple[str, Any]]:
    """DSPy's ``(path, Predict)`` pairs; a bare ``Predict`` is ``"self"``, as DSPy names it."""
    if isinstance(program, dspy.Predict):
        return [("self", program)]
    return list(program.named_predictors())


def options(*, model: str | None = None, adapter: str | None = None, temperature: float | None = None,
            cache: bool = True, configure: bool = False, base_url: str | None = None, api_key: str | None = None) -> Any:
    """``%%stream``/CLI options for a DSPy program, as a ``dspy.context`` (``--model``, ``--adapter``,
    ``--temperature``, ``--no-cache``). Without ``--model`` the configured ``dspy.LM`` gets the other
    options (a copy); with none configured, the demo LM. ``configure=True`` sets them process-wide
    (``dspy.configure``; what ``jupyter-stream serve`` does) and returns a context that does nothing."""
    changes: dict[str, Any] = {}
    lm_args = {k: v for k, v in (("temperature", temperature), ("cache", None if cache else False)) if v is not None}
    if model:
        server = {k: v for k, v in (("api_base", base_url), ("api_key", api_key)) if v}
        changes["lm"] = dspy.LM(model, **server, **lm_args)
    elif lm_args:
        changes["lm"] = (dspy.settings.lm or _demo_lm()).copy(**lm_args)
    if adapter:
        cls = {"chat": dspy.ChatAdapter, "json": dspy.JSONAdapter, "xml": dspy.XMLAdapter}.get(adapter.strip().lower())
        if cls is None:
            raise ConfigurationError(f"unknown adapter {adapter!r}; use 'chat', 'json' or 'xml'")
        changes["adapter"] = cls()
    if configure:
        dspy.configure(**changes)
        return dspy.context()
    return dspy.context(**changes)


def variant_options(*, model: str | None = None, adapter: str | None = None, temperature: float | None = None) -> Any:
    """A compared variant's DSPy settings, as a ``dspy.context``: the configured ``dspy.LM`` (else the demo
    LM) copied with another model or temperature, so a variant keeps the server and key; another adapter."""
    changes: dict[str, Any] = {}
    base = dspy.settings.lm or _demo_lm()
    lm_args = {k: v for k, v in (("temperature", temperature),) if v is not None}
    if model is not None:  # the configured LM's provider prefix ("openai/") when the name has none
        provider, sep, _ = str(base.model).rpartition("/")
        lm_args["model"] = model if "/" in model or not sep else f"{provider}/{model}"
    if lm_args:
        changes["lm"] = base.copy(**lm_args)
    if adapter:
        changes["adapter"] = {"chat": dspy.ChatAdapter, "json": dspy.JSONAdapter, "xml": dspy.XMLAdapter}[adapter.strip().lower()]()
    return dspy.context(**changes)


def model_name() -> str:
    """The model DSPy's configured LM names (the demo LM's when none is configured)."""
    lm = dspy.settings.lm
    return str(lm.model) if lm is not None else "demo LM"


def bind(program: Any) -> Callable[..., Awaitable[Any]]:
    """An async callable running ``program`` under the stream's observer, with DSPy's settings as they
    are now (captured here, replayed when it runs: a stream read later still uses this LM and adapter)."""
    settings = dspy.settings
    captured = {"lm": settings.lm or _demo_lm(), "adapter": settings.adapter, "callbacks": list(settings.callbacks or [])}
    run_async = _own_method(program, "aforward") is not None

    async def run(*args: Any, **kwargs: Any) -> Any:
        obs = _observer.current()
        if obs is None:
            with dspy.context(**captured):
                return await (program.acall(*args, **kwargs) if run_async else dspy.asyncify(program)(*args, **kwargs))
        bridge = _Bridge(obs)
        with dspy.context(
            lm=captured["lm"], adapter=captured["adapter"], callbacks=[*captured["callbacks"], bridge],
            send_stream=bridge, stream_listeners=[],
        ):
            try:
                if run_async:
                    return await program.acall(*args, **kwargs)
                return await _in_thread(program, bridge, args, kwargs)
            except StreamError:
                raise
            except Exception as e:
                ours = bridge.translate(e)
                if ours is e:
                    raise
                raise ours from e

    return run


async def _in_thread(program: Any, bridge: _Bridge, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a sync DSPy program in an AnyIO worker thread (where DSPy's sync streaming works); on
    cancellation, stop it at its next LM chunk and wait up to :data:`THREAD_GRACE` for the thread."""
    finished = threading.Event()

    def body(*a: Any, **kw: Any) -> Any:
        try:
            return program(*a, **kw)
        finally:
            finished.set()

    try:
        return await dspy.asyncify(body)(*args, **kwargs)
    except asyncio.CancelledError:
        bridge.cancel()
        deadline = time.monotonic() + THREAD_GRACE
        while not finished.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        raise


class _Call:
    """One DSPy LM call in flight: its watch and its record."""

    __slots__ = ("watch", "record", "adapter", "signature", "lent", "whole", "streamed", "reader", "on_content",
                 "on_reasoning", "on_chunk")

    def __init__(self, watch: Any, record: LMRecord, adapter: Any, signature: Any, lent: bool, whole: bool) -> None:
        self.watch, self.record, self.adapter, self.signature, self.lent = watch, record, adapter, signature, lent
        self.whole = whole
        """No incremental parser for its adapter: the reply is not fed; the parsed fields go in whole at the end."""
        self.on_content = None if whole else watch.on_content
        self.on_reasoning, self.on_chunk = watch.on_reasoning, watch.on_chunk
        self.streamed = False
        self.reader: asyncio.Task[Any] | None = None
        """The task reading the reply, when it runs on the stream's loop (DSPy 3.0-3.3's sync calls)."""


class _Bridge(dspy.utils.callback.BaseCallback):
    """DSPy's ``send_stream`` and a DSPy callback at once, for one run of one program."""

    def __init__(self, obs: Any) -> None:
        self._token = anyio.lowlevel.current_token()  # made on the stream's loop
        self._obs = obs
        self._status = obs.status
        self._calls: dict[str, _Call] = {}
        self._last: _Call | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """The stream was cancelled while a sync program's thread runs: stop its LM calls. A reply read on
        the stream's loop (DSPy 3.0-3.3) is cancelled in its HTTP read at once; one read in the thread
        itself (DSPy 3.4) stops at its next chunk."""
        self.cancelled = True
        for call in list(self._calls.values()):
            if call.reader is not None and not call.reader.done():
                call.reader.cancel()

    # ------------------------------------------------------------------------ send_stream
    async def send(self, chunk: Any) -> None:
        """DSPy hands over one raw LM chunk (litellm's on DSPy 3.0-3.3, an engine chunk on 3.4)."""
        if self.cancelled or self._obs.cancelled:
            # Not an exception here: DSPy <= 3.3 would leave the HTTP response open. Cancelling the task
            # lands the cancellation in the HTTP read, which closes the request.
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
            return
        call = self._calls.get(_ACTIVE_CALL_ID.get())
        if call is None:
            return
        rec = call.record
        if not call.streamed:
            call.streamed = True
            call.reader = asyncio.current_task()
            rec.ttft = time.perf_counter() - rec.started
        if call.on_chunk is not None:
            call.on_chunk(_as_dict(chunk))
        content, reasoning = _delta_texts(chunk)
        if reasoning:
            rec.reasoning_parts.append(reasoning)
            if call.on_reasoning is not None:
                call.on_reasoning(reasoning)
        if content:
            rec.parts.append(content)
            if call.on_content is not None:
                call.on_content(content)

    # ------------------------------------------------------------------------ callbacks
    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        _format.set((instance, inputs.get("signature")))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._status.on_lm_start(call_id, instance, inputs)
        dspy_adapter, dspy_sig = _format.get() or (None, None)
        adapter = _our_adapter(dspy_adapter)
        signature = _our_signature(dspy_sig) if dspy_sig is not None else _NO_FIELDS
        whole = adapter is None
        if whole:
            # An adapter we cannot parse as it streams (DSPy's BAML or TwoStep adapters, a user's own): its
            # fields are shown whole once DSPy parsed the reply (on_adapter_parse_end).
            adapter = DSPyChatAdapter()
            self._status.note(f"{type(dspy_adapter).__name__}: the fields show when the reply is parsed (no streaming)")
        messages = list(inputs.get("messages") or [{"role": "user", "content": str(inputs.get("prompt") or "")}])
        model = str(getattr(instance, "model", "") or "")
        rec = LMRecord(model, messages)
        rec.started = time.perf_counter()
        lent = _lend_event_loop_token(self._token)
        predictor = dspy.settings.caller_predict
        # DSPy's parse never takes native reasoning for a `reasoning` field (ChainOfThought's): beside one it is
        # a pane of its own, so neither swallows the other.
        native = "reasoning_content" if "reasoning" in signature.output_fields else "reasoning"
        watch = self._obs.watch_lm(predictor, adapter=adapter, signature=signature, model=model, messages=messages,
                                   record=rec, native_reasoning=native)
        self._calls[call_id] = _Call(watch, rec, adapter, signature, lent, whole)

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        if call.lent:
            _return_event_loop_token()
        rec = call.record
        rec.duration = time.perf_counter() - rec.started
        if exception is None:
            text, reasoning = _reply(outputs)
            if not call.streamed:
                # A cache hit (or an LM that does not stream): nothing arrived, so the whole reply goes
                # through the parser at once.
                rec.cached = True
                if reasoning and call.on_reasoning is not None:
                    call.on_reasoning(reasoning)
                if text and call.on_content is not None:
                    call.on_content(text)
            rec.text = text if not call.streamed else "".join(rec.parts)
            rec.reasoning = reasoning if not call.streamed else "".join(rec.reasoning_parts)
            rec.parts.clear()
        if call.whole and exception is None:
            _unparsed.set((call, None))  # its fields go in when DSPy has parsed the reply
        else:
            call.watch.close(cached=False)
        call.watch.done(rec, error=exception)
        if self._last is None or call.streamed or rec.text:
            self._last = call  # the call whose text an error carries (not a retry that got nothing)
        self._status.on_lm_end(call_id, outputs, exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        pending = _unparsed.get()
        if pending is not None and pending[1] is None:
            _unparsed.set((pending[0], call_id))  # the outermost parse (an adapter's parse may call its parent's)

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        pending = _unparsed.get()
        if pending is None or pending[1] != call_id:
            return
        call = pending[0]
        _unparsed.set(None)
        if exception is None and isinstance(outputs, Mapping) and call.watch.on_content is not None:
            call.watch.on_content(_as_chat(outputs))
        call.watch.close(cached=False)

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._status.on_module_start(call_id, instance, inputs)

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._status.on_module_end(call_id, outputs, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._status.on_tool_start(call_id, instance, inputs)

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._status.on_tool_end(call_id, outputs, exception)

    # ------------------------------------------------------------------------ errors
    def translate(self, error: Exception) -> BaseException:
        """DSPy's parse failure or LM failure (DSPy's, litellm's, openai's) as ours, carrying the text that had
        streamed; any other exception (a tool's, the program's own) as it is."""
        last = self._last
        partial: dict[str, str] = {}
        raw, name = "", None
        if last is not None:
            raw = last.record.text or last.record.content_so_far()
            partial = partial_fields(last.adapter, last.signature, raw, last.record.reasoning_parts)
            name = last.watch.predict_name
        kind = type(error).__name__
        if "AdapterParseError" in kind:
            return AdapterParseError(f"DSPy could not parse the reply: {error}", partial=partial, raw=raw, predict_name=name)
        module = type(error).__module__ or ""
        if module.startswith(("litellm", "openai", "httpx", "dspy.clients")) or "LM" in kind or "API" in kind:
            return LMError(f"the DSPy LM call failed: {kind}: {error}", partial=partial, raw=raw, predict_name=name,
                           status_code=getattr(error, "status_code", None))
        return error


# ----------------------------------------------------------------------------------- helpers


def _lend_event_loop_token(token: Any) -> bool:
    """Let this thread reach the stream's loop the way DSPy's sync streaming does.

    DSPy streams a sync LM call by ``anyio.from_thread.run(send_stream.send, chunk)`` (3.4) or
    ``asyncer.syncify`` (3.0), which work only in a thread that AnyIO started. ``dspy.Parallel`` runs its
    calls in threads of its own: there the call fails before any chunk. AnyIO lets such a thread in with an
    event loop token (``anyio.from_thread.run(..., token=...)``), but DSPy passes none, so the token is put
    where AnyIO looks for a worker thread's own (its thread-local ``current_token``, as AnyIO's worker
    threads have it) for the length of the LM call. Returns True when it lent one (to be returned by
    :func:`_return_event_loop_token` in the same thread); False on the loop's own thread, in AnyIO's
    worker threads, or if AnyIO keeps it elsewhere (then DSPy's own error stands).
    """
    try:
        asyncio.get_running_loop()
        return False  # the loop's own thread: DSPy awaits send() directly
    except RuntimeError:
        pass
    if getattr(_anyio_threadlocals, "current_token", None) is not None:
        return False
    try:
        _anyio_threadlocals.current_token = token
    except AttributeError:  # pragma: no cover - a future AnyIO
        return False
    return True


def _return_event_loop_token() -> None:
    try:
        del _anyio_threadlocals.current_token
    except AttributeError:  # pragma: no cover
        pass



def _own_method(program: Any, name: str) -> Any:
    fn = getattr(type(program), name, None)
    return fn if callable(fn) else None


def _as_dict(chunk: Any) -> dict[str, Any]:
    """DSPy's raw chunk (litellm's object, or 3.4's engine chunk dict) in the OpenAI chunk shape."""
    if isinstance(chunk, dict):
        data = dict(chunk)
    else:
        dump = getattr(chunk, "model_dump", None)
        data = dump() if callable(dump) else {}
    data.pop("predict_id", None)
    data["id"] = data.get("id") or ""
    data["created"] = data.get("created") or 0
    data["model"] = data.get("model") or ""
    data["object"] = "chat.completion.chunk"
    return data


def _as_chat(values: Mapping[str, Any]) -> str:
    """Parsed field values written in DSPy's chat format, to go whole through the chat field parser."""
    parts = []
    for name, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    return "\n\n".join(parts)


def _delta_texts(chunk: Any) -> tuple[str | None, str | None]:
    """A raw chunk's content and native reasoning deltas. DSPy 3.4's engine chunk is a dict (read as one:
    its attribute access goes through a Python ``__getattr__``, 4-5 us a delta in the bridge benchmark);
    litellm's chunk (DSPy 3.0-3.3) is an object."""
    if isinstance(chunk, dict):
        choices = chunk.get("choices")
        delta = choices[0].get("delta") if choices else None
        return (delta.get("content"), delta.get("reasoning_content")) if delta else (None, None)
    choices = getattr(chunk, "choices", None)
    delta = getattr(choices[0], "delta", None) if choices else None
    if delta is None:
        return None, None
    return getattr(delta, "content", None), getattr(delta, "reasoning_content", None)


def _reply(outputs: Any) -> tuple[str, str]:
    """The text and native reasoning of the first completion DSPy's LM returned."""
    first = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else outputs
    if isinstance(first, Mapping):
        return str(first.get("text") or ""), str(first.get("reasoning_content") or "")
    return ("" if first is None else str(first)), ""


def _our_adapter(dspy_adapter: Any) -> Any:
    """Our incremental parser for DSPy's adapter (subclasses first: DSPy's JSON and XML adapters are ChatAdapters)."""
    if dspy_adapter is None:
        return DSPyChatAdapter()
    if isinstance(dspy_adapter, dspy.JSONAdapter):
        return JSONAdapter()
    xml = getattr(dspy, "XMLAdapter", None)
    if xml is not None and isinstance(dspy_adapter, xml):
        return XMLAdapter()
    if type(dspy_adapter) is dspy.ChatAdapter or (isinstance(dspy_adapter, dspy.ChatAdapter) and not _overrides_parse(dspy_adapter)):
        return DSPyChatAdapter()
    return None


def _overrides_parse(adapter: Any) -> bool:
    return type(adapter).parse is not dspy.ChatAdapter.parse


_SIGNATURES: dict[Any, type[Signature]] = {}
_NO_FIELDS = build_signature("NoFields", [Field("reply", "output")], None)


def _our_signature(dspy_sig: Any) -> type[Signature]:
    """The output fields of a DSPy signature, as a signature of ours (names and types) for our parsers."""
    sig = _SIGNATURES.get(dspy_sig)
    if sig is None:
        fields = [Field(name, "input", _annotation(f)) for name, f in dspy_sig.input_fields.items()]
        fields += [Field(name, "output", _annotation(f)) for name, f in dspy_sig.output_fields.items()]
        sig = _SIGNATURES[dspy_sig] = build_signature(dspy_sig.__name__, fields, None)
    return sig


def _annotation(field: Any) -> Any:
    ann = getattr(field, "annotation", str)
    return str if ann is None else ann


_demo: list[Any] = []


def _demo_lm() -> Any:
    """No DSPy LM configured: the built-in demo LM, as a ``dspy.LM`` pointed at the demo server."""
    if not _demo:
        _demo.append(dspy.LM("openai/demo", api_base=default_lm().base_url, api_key="demo", cache=False))
    return _demo[0]
