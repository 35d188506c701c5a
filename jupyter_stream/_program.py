"""Programs: ``Module``, ``Predict``, ``ChainOfThought`` and ``Tool``.

A program is a :class:`Module` whose ``forward`` (or async ``aforward``) calls predictors. Each
:class:`Predict` formats its signature and inputs with the adapter, calls the LM (always streaming),
and parses the reply into a :class:`Prediction`. Inside a stream, the reply's field deltas are routed
to the listeners as they arrive.

Example::

    >>> import jupyter_stream as js
    >>> class TwoStep(js.Module):
    ...     def __init__(self):
    ...         self.draft = js.ChainOfThought("question -> answer")
    ...         self.polish = js.Predict("answer -> final")
    ...     def forward(self, question):
    ...         return self.polish(answer=self.draft(question=question).answer)
    >>> [name for name, _ in TwoStep().named_predictors()]
    ['draft.predict', 'polish']
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pydantic

from . import _observer
from . import settings as _settings
from ._exceptions import AdapterParseError, InputError, StreamError
from .adapters.base import partial_fields
from ._callbacks import fire_end, fire_start, scoped
from ._prediction import Prediction
from ._runtime import run_in_thread, run_sync
from ._signatures import OutputField, Signature, build_signature, ensure_signature

__all__ = ["ChainOfThought", "Module", "Predict", "Tool"]

_RESERVED = frozenset({"lm", "config", "demos", "history"})


class _UsageTotals:
    """Token usage of every LM call within one outermost program call, summed per model."""

    __slots__ = ("by_model",)

    def __init__(self) -> None:
        self.by_model: dict[str, dict[str, Any]] = {}

    def add(self, model: str, usage: Mapping[str, Any]) -> None:
        _add_counts(self.by_model.setdefault(model, {}), usage)


def _add_counts(total: dict[str, Any], usage: Mapping[str, Any]) -> None:
    for k, v in usage.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            total[k] = total.get(k, 0) + v
        elif isinstance(v, Mapping):
            _add_counts(total.setdefault(k, {}), v)


_usage: contextvars.ContextVar[_UsageTotals | None] = contextvars.ContextVar("jupyter_stream_usage", default=None)


@contextmanager
def _usage_scope() -> Iterator[Callable[[Any], Any]]:
    """The outermost module call collects the usage of all LM calls beneath it and stamps it on its
    prediction (``prediction.get_lm_usage()``); inner calls leave their own predictions as they are."""
    if _usage.get() is not None:
        yield lambda out: out
        return
    totals = _UsageTotals()
    token = _usage.set(totals)

    def stamp(out: Any) -> Any:
        if isinstance(out, Prediction) and totals.by_model:
            object.__setattr__(out, "_lm_usage", {m: dict(u) for m, u in totals.by_model.items()})
        return out

    try:
        yield stamp
    finally:
        _usage.reset(token)


class Module:
    """Base class of programs. Define ``forward`` (sync) and/or ``aforward`` (async).

    ``module(**inputs)`` runs ``forward``; ``await module.acall(**inputs)`` runs ``aforward`` when
    defined, else ``forward`` in a worker thread whose LM calls come back to the caller's loop.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with scoped("module", self, kwargs) as scope, _usage_scope() as stamp:
            scope.out = stamp(self.forward(*args, **kwargs))
        return scope.out

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program asynchronously."""
        if type(self).aforward is not Module.aforward:
            with scoped("module", self, kwargs) as scope, _usage_scope() as stamp:
                scope.out = stamp(await self.aforward(*args, **kwargs))
            return scope.out
        return await run_in_thread(self.__call__, *args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The program's logic. Subclasses override it (or ``aforward``)."""
        if type(self).aforward is not Module.aforward:
            return run_sync(self.aforward(*args, **kwargs))
        raise NotImplementedError(f"{type(self).__name__} must define forward() or aforward()")

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        """The program's async logic. Subclasses may override it."""
        raise NotImplementedError

    def named_predictors(self) -> list[tuple[str, Predict]]:
        """``(attribute path, predictor)`` pairs, e.g. ``("step.generate", <Predict>)``; a bare
        ``Predict`` names itself ``"self"`` as in DSPy."""
        out: list[tuple[str, Predict]] = []
        seen: set[int] = set()
        if isinstance(self, Predict):
            return [("self", self)]

        def walk(obj: Any, path: str) -> None:
            if id(obj) in seen:
                return
            if isinstance(obj, Predict):
                seen.add(id(obj))
                out.append((path, obj))
            elif isinstance(obj, Module):
                seen.add(id(obj))
                for k, v in vars(obj).items():
                    if not k.startswith("_"):
                        walk(v, f"{path}.{k}" if path else k)
            elif isinstance(obj, (list, tuple)):
                for i, v in enumerate(obj):
                    walk(v, f"{path}[{i}]")
            elif isinstance(obj, dict):
                for k, v in obj.items():
                    walk(v, f"{path}['{k}']")

        seen.add(id(self))
        for k, v in vars(self).items():
            if not k.startswith("_"):
                walk(v, k)
        return out

    def predictors(self) -> list[Predict]:
        """The predictors of this program, in attribute order."""
        return [p for _, p in self.named_predictors()]

    def named_sub_modules(self) -> Iterator[tuple[str, Module]]:
        """``(path, module)`` for this module and every module inside it."""
        yield "self", self
        for k, v in vars(self).items():
            if isinstance(v, Module) and not k.startswith("_"):
                for sub, m in v.named_sub_modules():
                    yield (k if sub == "self" else f"{k}.{sub}"), m


class Predict(Module):
    """Ask the LM to fill a signature's output fields from its inputs.

    Args:
        signature: a string (``"question -> answer"``) or a :class:`Signature` class.
        instructions: replace the signature's instructions.
        lm: use this LM instead of the configured one.
        **config: LM options for every call (``temperature=0.7``...).

    Call it with the input fields as keywords: ``Predict("question -> answer")(question="...")``.
    Reserved keywords: ``lm``, ``config`` (LM options for this call), ``demos`` and ``history``
    (lists of ``(inputs, outputs)`` turns sent before the question).
    """

    def __init__(self, signature: str | type[Signature], instructions: str | None = None, *, lm: Any = None, **config: Any) -> None:
        self.signature = ensure_signature(signature, instructions)
        self.lm = lm
        self.config = config
        self.demos: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature.signature})"

    def forward(self, **kwargs: Any) -> Prediction:
        return run_sync(self.aforward(**kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise InputError(
                f"{self!r} takes its inputs as keywords, e.g. {next(iter(self.signature.input_fields), 'question')}=..."
            )
        self.check_inputs(kwargs)
        return super().__call__(**kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        if args:
            raise InputError(f"{self!r} takes its inputs as keywords")
        self.check_inputs(kwargs)
        with scoped("module", self, kwargs) as scope, _usage_scope() as stamp:
            scope.out = stamp(await self.aforward(**kwargs))
        return scope.out

    def check_inputs(self, kwargs: Mapping[str, Any]) -> None:
        """Raise :class:`InputError` for missing, unknown or ill-typed inputs (before any request)."""
        fields = self.signature.input_fields
        missing = [n for n in fields if n not in kwargs]
        if missing:
            raise InputError(
                f"{self!r} is missing input(s) {', '.join(repr(m) for m in missing)}; "
                f"call it with {', '.join(f'{n}=...' for n in fields)}"
            )
        unknown = [k for k in kwargs if k not in fields and k not in _RESERVED]
        if unknown:
            raise InputError(
                f"{self!r} got unknown input(s) {', '.join(repr(u) for u in unknown)}; its inputs are "
                f"{', '.join(repr(n) for n in fields) or 'none'}"
            )
        for name, f in fields.items():
            if f.annotation is not str:
                try:
                    _type_adapter(f.annotation).validate_python(kwargs[name])
                except pydantic.ValidationError:
                    raise InputError(
                        f"input {name!r} of {self!r} must be of type {f.type_name()}, got {type(kwargs[name]).__name__} "
                        f"{_short(kwargs[name])}"
                    ) from None
            problem = _not_unicode(kwargs[name])
            if problem:
                # Caught here, not as a UnicodeError from deep inside the HTTP client's JSON encoder.
                raise InputError(
                    f"input {name!r} of {self!r} {problem}; pass text that encodes as UTF-8 "
                    "(decode bytes with errors='replace')"
                )

    async def aforward(self, **kwargs: Any) -> Prediction:
        lm_opt = kwargs.pop("lm", None)
        config = {**self.config, **(kwargs.pop("config", None) or {})}
        demos = list(self.demos) + list(kwargs.pop("demos", None) or [])
        history = list(kwargs.pop("history", None) or [])
        current = _settings.current()
        lm = lm_opt or self.lm or current.lm
        if lm is None:
            lm = _settings.default_lm()
        from .adapters import ChatAdapter

        adapter = current.adapter or ChatAdapter()
        sig = self.signature
        messages = adapter.format(sig, kwargs, demos=demos, history=history)
        return await _run_lm(self, lm, adapter, sig, messages, config)


async def _run_lm(predict: Predict, lm: Any, adapter: Any, sig: type[Signature], messages: list[dict[str, str]], config: dict[str, Any]) -> Prediction:
    """One LM call of one predictor, reported to the stream's observer (if any) as it streams."""
    from ._lm import LMRecord

    rec = LMRecord(lm.model, messages)
    obs = _observer.current()
    watch = obs.watch_lm(predict, adapter=adapter, signature=sig, model=lm.model, messages=messages, record=rec) if obs else None
    name = watch.predict_name if watch is not None else "predict"
    lm_id, lm_cbs = fire_start("lm", lm, {"messages": messages, **config})
    try:
        try:
            if watch is None:
                rec = await lm.astream(messages, record=rec, **config)
            else:
                rec = await lm.astream(
                    messages, on_content=watch.on_content, on_reasoning=watch.on_reasoning, on_chunk=watch.on_chunk,
                    record=rec, **config,
                )
        except StreamError as e:
            raw = rec.content_so_far()
            e.fill_in(partial=partial_fields(adapter, sig, raw, rec.reasoning_parts), raw=raw, predict_name=name)
            raise
        finally:
            if watch is not None:
                watch.close(cached=rec.cached)
        outputs = _parse(adapter, sig, rec, name)
    except BaseException as e:
        fire_end("lm", lm_id, lm_cbs, None, e)
        if watch is not None:
            watch.done(rec, error=e)
        raise
    fire_end("lm", lm_id, lm_cbs, rec.text, None)
    if watch is not None:
        watch.done(rec)
    usage = _usage.get()
    if usage is not None and rec.usage:
        usage.add(lm.model, rec.usage)
    return Prediction.from_dict(outputs, usage={lm.model: rec.usage} if rec.usage else None)


def _parse(adapter: Any, sig: type[Signature], rec: Any, name: str) -> dict[str, Any]:
    try:
        return adapter.parse(sig, rec.text)
    except AdapterParseError as e:
        if rec.reasoning and e.field == "reasoning" and "reasoning" in sig.output_fields:
            # Native reasoning (reasoning_content) stands in for a reasoning field the content lacks.
            rest = _without(sig, "reasoning")
            out = adapter.parse(rest, rec.text)
            return {"reasoning": rec.reasoning, **out}
        e.fill_in(partial=partial_fields(adapter, sig, rec.text, rec.reasoning_parts), raw=rec.text, predict_name=name)
        raise


_WITHOUT: dict[tuple[type, str], type[Signature]] = {}


def _without(sig: type[Signature], field: str) -> type[Signature]:
    key = (sig, field)
    if key not in _WITHOUT:
        _WITHOUT[key] = build_signature(sig.__name__, [f for f in sig.fields.values() if f.name != field], sig.instructions)
    return _WITHOUT[key]


class ChainOfThought(Module):
    """A predictor that reasons first: adds a ``reasoning`` output field before the others.

    >>> import jupyter_stream as js
    >>> list(js.ChainOfThought("question -> answer").predict.signature.output_fields)
    ['reasoning', 'answer']
    """

    def __init__(self, signature: str | type[Signature], instructions: str | None = None, *, rationale_field: Any = None, **config: Any) -> None:
        sig = ensure_signature(signature, instructions)
        desc = OutputField(desc="Think step by step in order to produce the outputs.")
        self.predict = Predict(sig.prepend("reasoning", rationale_field or desc), **config)

    @property
    def signature(self) -> type[Signature]:
        return self.predict.signature

    def __repr__(self) -> str:
        return f"ChainOfThought({self.predict.signature.signature})"

    def forward(self, **kwargs: Any) -> Prediction:
        return self.predict(**kwargs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        return await self.predict.acall(**kwargs)


class Tool:
    """A function a program can call, whose calls fire the tool callbacks (and status messages).

    >>> import jupyter_stream as js
    >>> def search(query: str) -> str:
    ...     '''Search the web.'''
    ...     return f"results for {query}"
    >>> tool = js.Tool(search)
    >>> tool.name, tool.desc, tool(query="cats")
    ('search', 'Search the web.', 'results for cats')
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None, desc: str | None = None) -> None:
        if not callable(func):
            raise InputError(f"Tool needs a callable, got {type(func).__name__}")
        self.func = func
        self.name = name or getattr(func, "__name__", "tool")
        if self.name == "<lambda>":
            self.name = "tool"
        self.desc = desc if desc is not None else inspect.getdoc(func) or ""
        try:
            self.args = {
                p.name: (p.annotation if p.annotation is not inspect.Parameter.empty else Any)
                for p in inspect.signature(func).parameters.values()
            }
        except (TypeError, ValueError):  # pragma: no cover - builtins
            self.args = {}

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, args={list(self.args)})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with scoped("tool", self, kwargs) as scope:
            out = self.func(*args, **kwargs)
            scope.out = run_sync(_await(out)) if inspect.isawaitable(out) else out
        return scope.out

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Call the tool from async code (an async function is awaited, a sync one runs in a thread)."""
        with scoped("tool", self, kwargs) as scope:
            if inspect.iscoroutinefunction(self.func):
                scope.out = await self.func(*args, **kwargs)
            else:
                scope.out = await asyncio.to_thread(self.func, *args, **kwargs)
        return scope.out


async def _await(x: Any) -> Any:
    return await x


_TA: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _type_adapter(ann: Any) -> pydantic.TypeAdapter[Any]:
    ta = _TA.get(ann)
    if ta is None:
        ta = _TA[ann] = pydantic.TypeAdapter(ann)
    return ta


def _not_unicode(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be sent as UTF-8 JSON text (a lone surrogate, undecodable bytes), or None."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"is not valid Unicode text: it holds a lone surrogate {value[e.start]!r} at position {e.start}"
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            return f"is bytes that are not UTF-8 text (byte {value[e.start]:#04x} at position {e.start})"
        return None
    if depth < 20 and isinstance(value, (list, tuple, set, frozenset, dict)):
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for item in items:
            problem = _not_unicode(item, depth + 1)
            if problem:
                return problem.replace("is ", "holds a value that is ", 1) if depth == 0 else problem
    return None


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) < 60 else r[:57] + "..."
