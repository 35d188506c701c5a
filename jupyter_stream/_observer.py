"""The seam between programs and streaming: who watches a program's LM calls.

A program reports each LM call it makes to the observer in force here (:func:`current`). Two kinds of
program do so, the same way: the native :class:`~jupyter_stream.Predict` and the DSPy bridge
(``jupyter_stream._dspy_bridge``). The streaming layer implements :class:`Observer` (one per stream:
``streaming.call.StreamCall``) and installs it for the stream's task. So programs never import the
streaming layer, and the streaming layer (its parsers, routing, time limits, cancellation and sinks)
never knows which kind of program it watches.

Outside a stream nothing observes (``current()`` is None) and programs run as plain code.

Example::

    >>> from jupyter_stream import _observer as observer
    >>> observer.current() is None
    True
"""

from __future__ import annotations

import concurrent.futures
import contextvars
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["LMWatch", "Observer", "current", "install"]


class LMWatch(Protocol):
    """What an observer answers when a program starts one LM call: where the reply's deltas go.

    The program feeds the hooks while the reply streams, then calls :meth:`close` once the reply
    ended (or failed) and :meth:`done` when the call's outcome is known.
    """

    predict_name: str
    """The predictor's name in the events (its attribute path in the program)."""
    on_content: Callable[[str], Any] | None
    """Takes each content delta (None: nobody listens to this call's fields)."""
    on_reasoning: Callable[[str], Any] | None
    """Takes each native reasoning delta (``reasoning_content``)."""
    on_chunk: Callable[[dict[str, Any]], Any] | None
    """Takes each raw chunk as a dict (DSPy's pass-through when no listener is given)."""

    def close(self, *, cached: bool) -> None:
        """The reply ended or failed: close every field that opened (nothing streams on a cache hit)."""

    def done(self, record: Any, *, error: BaseException | None = None) -> None:
        """The call is over: ``record`` is the call's ``LMRecord``; ``error`` if it failed."""


class Observer(Protocol):
    """One stream's view of the program it runs (implemented by ``streaming.call.StreamCall``)."""

    status: Any
    """A callback object (``on_module_start``... hooks) turning progress into status messages; its
    ``note(message)`` sends a status message of the engine's own."""
    cancelled: bool
    """True once the stream was cancelled: a program thread must not start another LM call."""

    def watch_lm(self, predictor: Any, *, adapter: Any, signature: Any, model: str, messages: list[dict[str, Any]],
                 record: Any) -> LMWatch:
        """A program's predictor starts an LM call: where its deltas go."""

    def track(self, fut: concurrent.futures.Future[Any]) -> None:
        """A program thread waits on ``fut`` (an LM call): cancel it with the stream."""

    def cancel_pending(self) -> None:
        """Cancel what the program's threads wait on."""


_current: contextvars.ContextVar[Observer | None] = contextvars.ContextVar("jupyter_stream_observer", default=None)


def install(observer: Observer, context: contextvars.Context) -> None:
    """Make ``observer`` watch the code that will run in ``context`` (a stream's task)."""
    context.run(_current.set, observer)


def current() -> Observer | None:
    """The observer of the stream this code runs inside, or None."""
    return _current.get()
