"""The one protocol of everything that renders a stream: the terminal, the widget, the HTML snapshot, SSE.

A :class:`Sink` is started with the stream's title and model, handles each event as it comes (field
chunks, status messages, LM requests and responses, the prediction) and is finished once: with the
prediction, the error, or ``stopped=True``. :func:`pour` is the loop that feeds one; :class:`Sinks`
feeds several from one stream.

Example::

    >>> import asyncio, io, jupyter_stream as js
    >>> async def events():
    ...     yield js.StreamResponse("self", "answer", "Paris", True)
    ...     yield js.Prediction(answer="Paris")
    >>> out = io.StringIO()
    >>> asyncio.run(pour(events(), js.TextRenderer(out, show_prediction=False), title="qa", model="m")).answer
    'Paris'
    >>> print(out.getvalue().strip())
    ── answer ──
    Paris
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any, Protocol, runtime_checkable

from .._prediction import is_prediction

__all__ = ["Sink", "Sinks", "pour"]


@runtime_checkable
class Sink(Protocol):
    """Renders one stream: ``start``, then ``handle`` per event, then ``finish`` once."""

    def start(self, *, title: str, model: str) -> None:
        """The stream begins: its title (a signature or program name) and the model answering."""

    def handle(self, event: Any) -> None:
        """One event, as it comes (unknown kinds are ignored)."""

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        """The stream ended: with its prediction, with ``error``, or stopped (cancelled)."""


class Sinks:
    """Several sinks fed from one stream, in order (the widget and its HTML snapshot)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def start(self, *, title: str, model: str) -> None:
        for sink in self.sinks:
            sink.start(title=title, model=model)

    def handle(self, event: Any) -> None:
        for sink in self.sinks:
            sink.handle(event)

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        for sink in self.sinks:
            sink.finish(prediction=prediction, error=error, stopped=stopped)


async def pour(events: AsyncIterable[Any], sink: Sink, *, title: str, model: str, started: bool = False) -> Any:
    """Start ``sink``, feed it every event of ``events`` and finish it; returns the prediction (the last one
    seen). ``started``: the caller started the sink already (to show it at once, before the stream's task runs).

    A cancellation finishes the sink as stopped, an error with the error; both are raised again.
    """
    if not started:
        sink.start(title=title, model=model)
    prediction = None
    try:
        async for event in events:
            sink.handle(event)
            if is_prediction(event):  # ours, or a DSPy program's own dspy.Prediction
                prediction = event
    except asyncio.CancelledError:
        sink.finish(stopped=True)
        raise
    except Exception as e:
        sink.finish(error=e)
        raise
    sink.finish(prediction=prediction)
    return prediction
