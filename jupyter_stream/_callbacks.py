"""Callbacks: hooks fired when a module, an LM call or a tool starts and ends.

Subclass :class:`BaseCallback`, override the hooks you need and pass instances to
``configure(callbacks=[...])``. Status messages in a stream are produced by the same hooks.

Example::

    >>> import jupyter_stream as js
    >>> class Count(js.BaseCallback):
    ...     def __init__(self): self.tools = 0
    ...     def on_tool_start(self, call_id, instance, inputs): self.tools += 1
    >>> counter = Count()
    >>> add = js.Tool(lambda a, b: a + b, name="add")
    >>> with js.context(callbacks=[counter]):
    ...     add(a=1, b=2)
    3
    >>> counter.tools
    1
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _observer as observer, settings

__all__ = ["BaseCallback"]

_log = logging.getLogger("jupyter_stream")
_ids = itertools.count(1)


class BaseCallback:
    """Hooks with DSPy's names. Every hook does nothing by default."""

    def on_module_start(self, call_id: int, instance: Any, inputs: dict[str, Any]) -> None:
        """A Module or Predict is called with ``inputs``."""

    def on_module_end(self, call_id: int, outputs: Any, exception: BaseException | None = None) -> None:
        """A Module or Predict returned ``outputs`` (or raised ``exception``)."""

    def on_lm_start(self, call_id: int, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM is called; ``inputs`` has the ``messages``."""

    def on_lm_end(self, call_id: int, outputs: Any, exception: BaseException | None = None) -> None:
        """An LM call ended with ``outputs`` (the reply text) or ``exception``."""

    def on_tool_start(self, call_id: int, instance: Any, inputs: dict[str, Any]) -> None:
        """A Tool is called with ``inputs``."""

    def on_tool_end(self, call_id: int, outputs: Any, exception: BaseException | None = None) -> None:
        """A Tool returned ``outputs`` (or raised ``exception``)."""


def active_callbacks() -> tuple[Any, ...]:
    """The configured callbacks plus the running stream's status callback, if any."""
    cbs = settings.current().callbacks
    obs = observer.current()
    return (*cbs, obs.status) if obs is not None else cbs


def fire_start(kind: str, instance: Any, inputs: dict[str, Any]) -> tuple[int, tuple[Any, ...]]:
    """Fire ``on_<kind>_start`` on every active callback; returns the call id and the callbacks to end."""
    cbs = active_callbacks()
    if not cbs:
        return 0, cbs
    call_id = next(_ids)
    for cb in cbs:
        try:
            getattr(cb, f"on_{kind}_start")(call_id, instance, inputs)
        except Exception:  # a callback must never break the program
            _log.exception("callback %r failed in on_%s_start", cb, kind)
    return call_id, cbs


class Scope:
    """What :func:`scoped` yields: set ``out`` to the result so ``on_<kind>_end`` receives it."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: Any = None


@contextmanager
def scoped(kind: str, instance: Any, inputs: dict[str, Any]) -> Iterator[Scope]:
    """Fire ``on_<kind>_start`` now and ``on_<kind>_end`` with the scope's ``out`` (or the exception)."""
    call_id, cbs = fire_start(kind, instance, inputs)
    scope = Scope()
    try:
        yield scope
    except BaseException as e:
        fire_end(kind, call_id, cbs, None, e)
        raise
    fire_end(kind, call_id, cbs, scope.out, None)


def fire_end(kind: str, call_id: int, cbs: tuple[Any, ...], outputs: Any, exception: BaseException | None) -> None:
    """Fire ``on_<kind>_end`` on the callbacks :func:`fire_start` returned."""
    for cb in cbs:
        try:
            getattr(cb, f"on_{kind}_end")(call_id, outputs, exception)
        except Exception:
            _log.exception("callback %r failed in on_%s_end", cb, kind)
