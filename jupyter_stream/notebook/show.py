"""show(): the live widget for any stream, from Python code.

``show(program, **inputs)`` displays the widget and streams into it on the kernel's loop: the cell
returns at once and the widget fills while the kernel is idle. It accepts a program (Module or
Predict), a :class:`~jupyter_stream.Stream`, a :class:`~jupyter_stream.Comparison` (a column per variant), a
replay, a streamified callable, or any async iterable of events.
``await view`` waits for the prediction; ``view.stop()`` cancels. ``markdown=True`` renders the panes as
Markdown; ``snapshot=False`` leaves out the static HTML copy the cell gets at the end (for viewers without
widgets), so the text crosses the wire once.

Example (in a notebook)::

    view = js.show(js.ChainOfThought("question -> answer"), question="Why is the sky blue?")
    prediction = await view          # optional: wait for the end
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any

from .. import _programs as programs
from .. import settings as _settings
from .._compare import Comparison
from .._exceptions import UsageError
from .._program import Predict
from .._recording import Replay
from ..streaming.sink import pour
from ..streaming.stream import Stream, stream
from .display import WidgetDisplay

__all__ = ["ShownStream", "show"]


def _events(source: Any, inputs: dict[str, Any]) -> tuple[AsyncIterable[Any], str, str]:
    """An async iterable of events for ``source``, with a title and a model name."""
    lm = _settings.current().lm
    model = lm.model if lm is not None else "demo LM"
    if isinstance(source, Stream):
        return source, source.predictor_name or type(source.program).__name__, model
    if isinstance(source, Replay):  # a recorded run, played again: its own title and model
        return source, source.title, source.model
    if isinstance(source, Comparison):  # a column per variant
        return source, "compare", f"{len(source.labels)} variants"
    if programs.is_program(source):  # ours or a DSPy module
        s = stream(source, None, inputs, lm_events=True, timeout_profile="streaming")
        bridge = programs.dspy_bridge(source)
        if bridge is not None:
            model = bridge.model_name()
        return s, type(source).__name__ if not isinstance(source, Predict) else source.signature.signature, model
    if callable(source) and hasattr(source, "program"):  # a streamified callable
        return source(**inputs), type(source.program).__name__, model
    if hasattr(source, "__aiter__"):
        return source, "stream", model
    raise UsageError(
        f"show() takes a program, a Stream, a Comparison, a replay (js.replay), a streamified callable or an async iterable of "
        f"events, got {type(source).__name__}"
    )


class ShownStream:
    """A displayed stream: the widget, the task feeding it, and the prediction when it ends."""

    def __init__(
        self, events: AsyncIterable[Any], *, title: str, model: str, markdown: bool = False, display: bool = True,
        snapshot: bool = True,
    ) -> None:
        variants = events.variants if isinstance(events, Comparison) else []
        self.display = WidgetDisplay(markdown=markdown, display=display, snapshot=snapshot, variants=variants)
        self.widget = self.display.widget
        self.prediction: Any = None
        self.error: BaseException | None = None
        self._events = events
        self._title, self._model = title, model
        self._stopped = False
        self.display.on_stop(self.stop)
        self.display.start(title=title, model=model)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> Any:
        try:
            self.prediction = await pour(self._events, self.display, title=self._title, model=self._model, started=True)
            if isinstance(self._events, Comparison):  # {label: prediction or exception}
                self.prediction = self._events.result
        except asyncio.CancelledError:
            return None
        except Exception as e:  # shown in the widget; also kept on the view
            self.error = e
            return None
        return self.prediction

    def stop(self) -> None:
        """Cancel the stream (the LM request is closed; the panes keep what arrived)."""
        self._stopped = True
        self.task.cancel()

    def __await__(self) -> Any:
        return self.task.__await__()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.widget._repr_mimebundle_(**kwargs)


def show(source: Any, /, *, markdown: bool = False, snapshot: bool = True, **inputs: Any) -> ShownStream:
    """Display the live widget for ``source`` and stream into it (see the module docs)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise UsageError("show() needs a running event loop, as in a Jupyter cell; use stream() in scripts") from None
    events, title, model = _events(source, inputs)
    return ShownStream(events, title=title, model=model, markdown=markdown, snapshot=snapshot)
