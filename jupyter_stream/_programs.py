"""What the streaming layer needs of a program, native or DSPy: its predictors, inputs and runner.

Every entry point that takes a program (``streamify``, ``stream``, ``show``, ``%%stream``, the CLI)
asks here, so a ``dspy.Module`` is accepted everywhere a :class:`~jupyter_stream.Module` is. A DSPy
program is recognised without importing ``dspy`` (it can only exist once the user imported it); the
DSPy bridge is loaded then.

Example::

    >>> import jupyter_stream as js
    >>> from jupyter_stream import _programs as programs
    >>> programs.input_names(js.ChainOfThought("question, context -> answer"))
    ['question', 'context']
    >>> [name for name, _ in programs.named_predictors(js.Predict("q -> a"))]
    ['self']
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

from ._exceptions import InputError, ListenerError, UsageError
from ._program import Module, Predict
from ._runtime import run_in_thread

__all__ = [
    "as_predictor", "check_inputs", "dspy_bridge", "input_names", "is_program", "load", "named_predictors", "runner",
]


def dspy_bridge(obj: Any) -> ModuleType | None:
    """The DSPy bridge module when ``obj`` is a DSPy program (or predictor), else None."""
    dspy = sys.modules.get("dspy")
    module_cls = getattr(dspy, "Module", None) if dspy is not None else None
    if module_cls is None or not isinstance(obj, module_cls):
        return None
    from . import _dspy_bridge as bridge

    return bridge


def is_program(obj: Any) -> bool:
    """A native Module/Predict or a DSPy module."""
    return isinstance(obj, Module) or dspy_bridge(obj) is not None


def named_predictors(program: Any) -> list[tuple[str, Any]]:
    """``(attribute path, predictor)`` pairs of a program (``[("self", p)]`` for a bare predictor)."""
    bridge = dspy_bridge(program)
    if bridge is not None:
        return bridge.named_predictors(program)
    fn = getattr(program, "named_predictors", None)
    if fn is None:  # a bound method such as ``program.acall``
        fn = getattr(getattr(program, "__self__", None), "named_predictors", None)
    return list(fn()) if fn is not None else []


def input_names(program: Any) -> list[str]:
    """The input names a program takes: a predictor's signature inputs, else its ``forward``'s parameters."""
    sig = getattr(program, "signature", None)
    if sig is not None and hasattr(sig, "input_fields"):
        return list(sig.input_fields)
    fn = _own(program, "aforward") or _own(program, "forward")
    params = list(inspect.signature(fn).parameters.values())[1:] if fn is not None else []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not names and any(p.kind is p.VAR_KEYWORD for p in params):
        # ``forward(**kwargs)`` of a module wrapping one predictor (DSPy's ChainOfThought): its inputs.
        inner = named_predictors(program)
        if len(inner) == 1:
            return list(inner[0][1].signature.input_fields)
    return names


def check_keys(program: Any, lm: Any) -> None:
    """Raise the :class:`ConfigurationError` of an LM without a key now, before any request: each predictor's own
    LM, else ``lm`` (the one in force; None: the demo LM, which needs none). A DSPy program's LM is DSPy's."""
    if dspy_bridge(program) is not None:
        return
    for _, predictor in named_predictors(program):
        own = getattr(predictor, "lm", None) or lm
        if own is not None:
            own.check_key()


def check_inputs(program: Any, inputs: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` now, before any request, when ``program`` cannot run on ``inputs``."""
    if isinstance(program, Predict):
        program.check_inputs(inputs)
        return
    sig = getattr(program, "signature", None)
    if sig is not None and hasattr(sig, "input_fields"):  # ChainOfThought, DSPy's predictors and ReAct
        missing = [n for n in sig.input_fields if n not in inputs]
        if missing:
            raise InputError(
                f"{type(program).__name__} is missing input(s) {', '.join(map(repr, missing))}; "
                f"call it with {', '.join(f'{n}=...' for n in sig.input_fields)}"
            )
        return
    fn = _own(program, "aforward") or _own(program, "forward")
    if fn is None:
        return
    sig = inspect.signature(fn)
    try:
        sig.bind(program, **inputs)
    except TypeError as e:
        params = list(sig.parameters)[1:]
        raise InputError(
            f"{type(program).__name__} cannot run on inputs {sorted(inputs)} ({e}); its {fn.__name__} takes {params}"
        ) from None


def runner(program: Any, *, is_async_program: bool = False) -> Callable[..., Awaitable[Any]]:
    """An async callable that runs ``program`` (a DSPy program's settings are captured now)."""
    bridge = dspy_bridge(program)
    if bridge is not None:
        return bridge.bind(program)
    if is_async_program or isinstance(program, Module):
        acall = getattr(program, "acall", None)
        if acall is not None:
            return acall
    if inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(getattr(program, "__call__", None)):
        return program
    if not callable(program):
        raise UsageError(f"streamify needs a Module, a DSPy module or a callable program, got {type(program).__name__}")

    async def in_thread(*args: Any, **kwargs: Any) -> Any:
        return await run_in_thread(program, *args, **kwargs)

    return in_thread


def as_predictor(obj: Any) -> Any:
    """The one predictor ``obj`` names: a predictor itself, or a module holding exactly one (ChainOfThought).

    Raises :class:`ListenerError` otherwise.
    """
    named = named_predictors(obj) if is_program(obj) else []
    if len(named) == 1:
        return named[0][1]
    if named:
        raise ListenerError(
            f"StreamListener(predict=...) got a module with {len(named)} predictors; pass one predictor "
            f"(its predictors are {[n for n, _ in named]})"
        )
    raise ListenerError(
        f"StreamListener(predict=...) needs a Predict or ChainOfThought (ours or DSPy's), got {type(obj).__name__}"
    )


def _own(program: Any, name: str) -> Any:
    """``program``'s class method ``name`` when the class defines it beyond :class:`Module`'s default."""
    fn = getattr(type(program), name, None)
    if fn is None or fn is getattr(Module, name, None):
        return None
    return fn


def load(spec: str) -> Any:
    """The program named by ``"module:attr"`` or ``"path/to/file.py:attr"`` (``attr`` may be dotted),
    imported with the current folder on the import path: the command line's way to name a program.

    Raises :class:`UsageError` naming what is wrong (no colon, no such module or attribute, not a program).
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r} names no program: write module:attribute, e.g. my_app:program, or a signature")
    try:
        if module_name.endswith(".py"):
            found = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
            if found is None or found.loader is None or not os.path.exists(module_name):
                raise UsageError(f"no file {module_name!r} (from {spec!r})")
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UsageError(f"cannot import {module_name!r} (from {spec!r}): {e}; run from the folder that holds it") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    if not is_program(obj):
        raise UsageError(f"{spec!r} is a {type(obj).__name__}, not a program (a Module, Predict or DSPy module)")
    return obj


def find_predictor(program: Any, predictor: Any) -> Any:
    """The predictor of ``program`` that ``predictor`` names: a name (``"draft"``: also a module holding one
    predictor), a predictor of the program, or a module of it with one predictor. UsageError otherwise."""
    named = named_predictors(program)
    if isinstance(predictor, str):
        for n, p in named:
            if n == predictor:
                return p
        # A module path ("draft" for a ChainOfThought at draft) names its only predictor.
        inner = [p for n, p in named if n.startswith(predictor + ".")]
        if len(inner) == 1:
            return inner[0]
        raise UsageError(
            f"the program has no predictor {predictor!r}; its predictors are {[n for n, _ in named]}"
        )
    if any(p is predictor for _, p in named):
        return predictor
    if is_program(predictor):
        inner = named_predictors(predictor)
        if len(inner) == 1 and inner[0][1] is not predictor:
            return find_predictor(program, inner[0][1])
        raise UsageError(f"{predictor!r} is not a predictor of this program; its predictors are {[n for n, _ in named]}")
    raise UsageError(f"predictor must be a name like 'generate' or a Predict object, got {predictor!r}")
