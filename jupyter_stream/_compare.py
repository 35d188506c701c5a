"""compare(): one program run as several variants at once, on the same inputs, with one stop for all.

Each variant (another model, adapter, temperature, instructions, LM or program: :mod:`jupyter_stream._variants`)
is a :func:`~jupyter_stream.stream` made inside its own settings, so it captures them; the variants run as
concurrent tasks and their events come out of one :class:`Comparison`, each wrapped in a
:class:`VariantEvent` that names its variant (a widget routes it to the variant's column). When a variant
ends, a :class:`VariantDone` carries its prediction or its error and its :class:`VariantStats`; a failing
variant never stops the others. Last comes the :class:`CompareResult`: a dict from label to prediction (or
exception), with the stats and the word diff of the predictions (:mod:`jupyter_stream._worddiff`).
Leaving the loop, ``stop()`` (from any task or thread: a Stop button), ``close()``/``aclose()``, Ctrl-C or
a cancellation stops every variant and closes every request.

Example::

    >>> import jupyter_stream as js
    >>> from jupyter_stream.demo import DemoServer
    >>> server = DemoServer().start()
    >>> server.script("[[ ## answer ## ]]\\nParis is the capital.\\n\\n[[ ## completed ## ]]", model="small")
    >>> server.script("[[ ## answer ## ]]\\nParis is a big city.\\n\\n[[ ## completed ## ]]", model="large")
    >>> js.configure(lm=js.LM("small", base_url=server.url, api_key="demo", cache=False))
    >>> result = js.compare(js.Predict("question -> answer"), variants="model=small,large", question="Capital of France?")
    >>> {label: pred.answer for label, pred in result.items()}
    {'model=small': 'Paris is the capital.', 'model=large': 'Paris is a big city.'}
    >>> result.diff.fields[0].added
    ['a', 'big', 'city']
    >>> js.configure(lm=None); server.stop()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from . import _programs as programs
from . import _variants
from . import settings as _settings
from ._exceptions import ConfigurationError, UsageError
from ._prediction import is_prediction
from ._runtime import UNSET, run_sync
from ._worddiff import PredictionDiff
from .streaming import LMResponse, StatusMessageProvider, StreamResponse, stream
from .streaming.once import RunsOnce

__all__ = ["CompareResult", "Comparison", "VariantDone", "VariantEvent", "VariantStats", "acompare", "compare"]

_STOP = object()


@dataclass(slots=True)
class VariantStats:
    """What a variant's status line shows, kept up to date as its events pass (O(1) each)."""

    started: float = field(default_factory=time.perf_counter)
    """``time.perf_counter()`` when the variant started."""
    ttft: float | None = None
    """Seconds from the start to the first streamed text."""
    chunks: int = 0
    """Streamed text chunks so far."""
    usage_tokens: int | None = None
    """Completion tokens the server reported (summed over the variant's LM calls), when it reports them."""
    seconds: float = 0.0
    """Seconds from the start to the latest event (to the end, once done)."""

    def observe(self, event: Any) -> None:
        """Count one event of this variant."""
        now = time.perf_counter() - self.started
        self.seconds = now
        if type(event) is StreamResponse:
            if event.chunk:
                self.chunks += 1
                if self.ttft is None:
                    self.ttft = now
        elif type(event) is LMResponse:
            n = (event.usage or {}).get("completion_tokens")
            if isinstance(n, int):
                self.usage_tokens = (self.usage_tokens or 0) + n

    @property
    def tokens(self) -> int:
        """The server's count when it gave one, else the chunks streamed (about a token each)."""
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    @property
    def tokens_per_s(self) -> float | None:
        """Tokens a second after the first one (None before a second token)."""
        span = self.seconds - (self.ttft or 0.0)
        return self.tokens / span if self.ttft is not None and span > 0 and self.tokens > 1 else None

    def line(self) -> str:
        """The status line: ``42 tokens in 1.25 s, 40 tokens/s, first after 0.20 s``.

        >>> VariantStats(started=0.0, ttft=0.2, chunks=42, seconds=1.25).line()
        '42 tokens in 1.25 s, 40 tokens/s, first after 0.20 s'
        """
        rate = self.tokens_per_s
        bits = [f"{self.tokens} tokens in {self.seconds:.{2 if self.seconds < 10 else 1}f} s"]
        if rate is not None:
            bits.append(f"{rate:.0f} tokens/s")
        if self.ttft is not None:
            bits.append(f"first after {self.ttft:.2f} s")
        return ", ".join(bits)


@dataclass(slots=True)
class VariantEvent:
    """One event of one variant's stream (a StreamResponse, StatusMessage, LMRequest, LMResponse or its
    final Prediction), tagged with the variant's label."""

    variant: str
    event: Any


@dataclass(slots=True)
class VariantDone:
    """A variant ended: with its prediction, or with the error that stopped it (the others go on)."""

    variant: str
    prediction: Any
    error: BaseException | None
    stats: VariantStats


class CompareResult(dict):  # type: ignore[type-arg]
    """``{label: prediction or exception}`` in the variants' order, with ``stats`` (``{label: VariantStats}``)
    and ``diff``, the field-by-field word diff of the predictions (``print(result.diff)``)."""

    def __init__(self, results: Mapping[str, Any], stats: Mapping[str, VariantStats]) -> None:
        super().__init__(results)
        self.stats = dict(stats)

    @property
    def errors(self) -> dict[str, BaseException]:
        """The variants that failed, with their errors."""
        return {label: r for label, r in self.items() if isinstance(r, BaseException)}

    @cached_property
    def diff(self) -> PredictionDiff:
        """Each variant's prediction against the first's, field by field, word by word."""
        return PredictionDiff(self)


class Comparison(RunsOnce):
    """Variants of ``program`` run at once on ``inputs``: iterate it once with ``for`` or ``async for``.

    Args:
        program: the program compared (the first variant when the spec is ``program={...}``).
        inputs: the input fields, as a dict.
        variants: a spec (``"model=a,b"``, ``"temperature=0,0.7"``, ``"instructions={a},{b}"``...) or a
            list of 2 to 8 dicts with the keys ``model``, ``adapter``, ``temperature``, ``instructions``,
            ``lm``, ``program`` and an optional ``label``.
        namespace: where a spec's ``{name}`` values come from (a notebook's variables).
        base: the name of ``program`` in a ``program={...}`` spec's labels.
        listen, stream_timeout, timeout, timeout_profile, status_message_provider, lm_events: as for
            :func:`~jupyter_stream.stream`, for every variant (``lm_events`` defaults to True here: the
            stats count the tokens the server reports).

    Bad variants, inputs or options raise here, before any request. Iterating yields
    :class:`VariantEvent` and :class:`VariantDone` items, then the :class:`CompareResult` (also kept as
    ``.result``). ``.labels`` lists the variants in order, ``.models`` the model each asks (a column's
    header), ``.stats`` their live stats. ``stop()`` ends it early (``.result`` stays None, ``.stopped``
    is True).
    """

    _once = "a Comparison runs once; make a new one to run it again"

    def __init__(self, program: Any, inputs: Mapping[str, Any] | None = None, *,
                 variants: str | Sequence[Mapping[str, Any]], namespace: Mapping[str, Any] | None = None,
                 base: str | None = None, listen: Iterable[str] | str | None = None,
                 stream_timeout: float | None = 60.0, timeout: Any = UNSET, timeout_profile: str | None = None,
                 status_message_provider: StatusMessageProvider | None = None, lm_events: bool = True) -> None:
        if not programs.is_program(program):
            raise UsageError(f"compare() needs a program (Module, Predict, or a DSPy module), got {type(program).__name__}")
        self.streams: dict[str, Any] = {}
        self.models: dict[str, str] = {}
        self._made_lms: list[Any] = []
        for item in _variants.resolve(variants, namespace=namespace, base=base):
            variant = _variants.prepare(program, item)
            if variant.made_lm is not None:
                self._made_lms.append(variant.made_lm)
            with _settings.context(**variant.settings), _dspy_options(variant):
                try:
                    self.streams[variant.label] = stream(
                        variant.program, None, inputs, listen=listen, stream_timeout=stream_timeout, timeout=timeout,
                        timeout_profile=timeout_profile, status_message_provider=status_message_provider,
                        lm_events=lm_events,
                    )
                except ConfigurationError as e:  # e.g. an LM without a key: said once, naming the variant
                    raise ConfigurationError(f"variant {variant.label}: {e}") from None
                self.models[variant.label] = _model_name(variant.program)
        self.labels = list(self.streams)
        self.stats: dict[str, VariantStats] = {}
        self.result: CompareResult | None = None
        self.stopped = False
        self._wake: tuple[asyncio.AbstractEventLoop, Callable[[Any], None]] | None = None

    @property
    def variants(self) -> list[tuple[str, str]]:
        """``(label, model)`` of each variant, in order: a widget's columns."""
        return [(label, self.models[label]) for label in self.labels]

    def __repr__(self) -> str:
        return f"<Comparison of {', '.join(self.labels)}>"

    async def _events(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        items: collections.deque[Any] = collections.deque()
        waiter: list[asyncio.Future[None] | None] = [None]  # the consumer's, while it waits for an item

        def put(item: Any) -> None:  # O(1): no queue coroutine per event
            items.append(item)
            w = waiter[0]
            if w is not None and not w.done():
                w.set_result(None)

        self._wake = (loop, put)
        if self.stopped:
            put(_STOP)

        async def run(label: str, variant_stream: Any) -> None:
            stats = self.stats[label] = VariantStats()
            observe = stats.observe
            prediction = None
            try:
                async for event in variant_stream:
                    observe(event)
                    if is_prediction(event):
                        prediction = event
                    put(VariantEvent(label, event))
            except Exception as e:  # noqa: BLE001 - this variant's outcome; the others go on
                stats.seconds = time.perf_counter() - stats.started
                put(VariantDone(label, None, e, stats))
                return
            stats.seconds = time.perf_counter() - stats.started
            put(VariantDone(label, prediction, None, stats))

        tasks = [loop.create_task(run(label, s)) for label, s in self.streams.items()]
        outcomes: dict[str, Any] = {}
        try:
            while len(outcomes) < len(tasks):
                if not items:
                    w = waiter[0] = loop.create_future()
                    try:
                        await w
                    finally:
                        waiter[0] = None
                    continue
                item = items.popleft()
                if item is _STOP:
                    return
                if type(item) is VariantDone:
                    outcomes[item.variant] = item.error if item.error is not None else item.prediction
                yield item
            self.result = CompareResult({label: outcomes[label] for label in self.labels}, self.stats)
            yield self.result
        finally:
            pending = [t for t in tasks if not t.done()]
            for t in pending:
                t.cancel()
            settle = asyncio.gather(*pending, *(lm.aclose() for lm in self._made_lms), return_exceptions=True)
            try:
                await asyncio.shield(settle)
            except asyncio.CancelledError:  # the consumer is cancelled: still let every variant close
                await settle
                raise

    def stop(self) -> None:
        """Stop every variant and close every request, from any task or thread (what a Stop button calls):
        the iteration ends once they are closed, without a result."""
        self.stopped = True
        if self._wake is not None:
            loop, put = self._wake
            if not loop.is_closed():
                loop.call_soon_threadsafe(put, _STOP)

    async def run(self) -> CompareResult | None:
        """Run every variant to its end; the :class:`CompareResult` (None when ``stop()`` ended it)."""
        async for _ in self:
            pass
        return self.result


def compare(program: Any, /, *, variants: str | Sequence[Mapping[str, Any]],
            namespace: Mapping[str, Any] | None = None, **inputs: Any) -> CompareResult:
    """Run ``variants`` of ``program`` at once on ``inputs``; ``{label: prediction or exception}`` with
    ``.stats`` and ``.diff``. Ctrl-C stops every variant. The events: :class:`Comparison`.

    ``js.compare(program, variants="model=gpt-4o-mini,gpt-4.1-mini", question="...")``, or
    ``variants=[{"temperature": 0}, {"temperature": 0.7, "label": "warm"}]``.
    """
    return run_sync(Comparison(program, inputs, variants=variants, namespace=namespace).run())  # type: ignore[return-value]


async def acompare(program: Any, /, *, variants: str | Sequence[Mapping[str, Any]],
                   namespace: Mapping[str, Any] | None = None, **inputs: Any) -> CompareResult:
    """:func:`compare` for async code: ``result = await js.acompare(program, variants="adapter=chat,json", ...)``."""
    return await Comparison(program, inputs, variants=variants, namespace=namespace).run()  # type: ignore[return-value]


def _model_name(program: Any) -> str:
    """The model a program made here would ask (the settings in force; DSPy's for a DSPy program)."""
    bridge = programs.dspy_bridge(program)
    if bridge is not None:
        return bridge.model_name()
    lm = _settings.current().lm
    return lm.model if lm is not None else "demo LM"


def _dspy_options(variant: _variants.Variant) -> contextlib.AbstractContextManager[Any]:
    """DSPy's own settings for a DSPy program's variant (its LM and adapter), else nothing."""
    bridge = programs.dspy_bridge(variant.program)
    if bridge is None or variant.dspy_options is None:
        return contextlib.nullcontext()
    return bridge.variant_options(**variant.dspy_options)
