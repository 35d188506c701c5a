"""The events a stream yields. Small dataclasses; every renderer is a sink of these.

DSPy's two event types keep their names, fields and order (``StreamResponse``, ``StatusMessage``).
``LMRequest`` and ``LMResponse`` are ours: they carry what the prompt inspector and the status line
need (the exact messages sent, the raw reply, usage, time to first token). ``streamify`` yields them
only when asked (``include_lm_events=True``); ``stream()`` yields them with ``lm_events=True``.

Example::

    >>> from jupyter_stream import StreamResponse
    >>> StreamResponse("predict", "answer", "Par", is_last_chunk=False)
    StreamResponse(predict_name='predict', signature_field_name='answer', chunk='Par', is_last_chunk=False, call_id=0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LMRequest", "LMResponse", "PaneLabels", "StatusMessage", "StreamResponse"]


@dataclass(slots=True)
class StreamResponse:
    """A piece of one output field of one predictor, as it streams."""

    predict_name: str
    """The predictor's attribute path in the program (``"predict"``, ``"step.generate"``)."""
    signature_field_name: str
    """The output field this text belongs to."""
    chunk: str
    """The new text. Joined over a field, the chunks equal the field's final ``str`` value."""
    is_last_chunk: bool = False
    """True on exactly one chunk per streamed field: the one that closes it."""
    call_id: int = 0
    """Which LM call of the stream wrote this chunk (the ``call_id`` of its :class:`LMRequest`; 0 outside
    a stream). Repeated or concurrent calls of one predictor (a loop, ReAct's steps, ``asyncio.gather``)
    have different ids, so a renderer keys its panes by ``(predict_name, call_id)``, never by name alone."""


@dataclass(slots=True)
class StatusMessage:
    """A human-readable progress message ("Calling tool search...")."""

    message: str


@dataclass(slots=True)
class LMRequest:
    """A predictor is about to call the LM with these exact messages."""

    predict_name: str
    model: str
    messages: list[dict[str, str]]
    call_id: int = 0
    """Counts LM calls within one stream, so a request can be matched with its response."""


@dataclass(slots=True)
class LMResponse:
    """The LM call ended. ``raw`` is the reply as the model wrote it, adapter markers included."""

    predict_name: str
    model: str
    raw: str
    reasoning: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    ttft: float | None = None
    """Seconds from sending the request to the first content or reasoning delta."""
    duration: float = 0.0
    cached: bool = False
    call_id: int = 0


class PaneLabels:
    """Names the panes of one stream by call: ``"react"`` for a predictor's first LM call, ``"react[2]"``
    for its second, and so on (a loop, ReAct's steps, concurrent calls), so that no two calls share a pane.
    A bare predictor (``predict_name == "self"``, DSPy's name) has no label: its panes are its fields.
    Renderers (terminal, widget) use it, with :meth:`key`; O(1) per chunk.

    >>> labels = PaneLabels()
    >>> [labels(name, call) for name, call in [("react", 1), ("react", 1), ("react", 3), ("extract", 4), ("self", 5)]]
    ['react', 'react', 'react[2]', 'extract', '']
    >>> labels.key("react", 3, "next_thought"), labels.key("self", 5, "answer")
    ('react[2].next_thought', 'answer')
    """

    __slots__ = ("_labels", "_counts")

    def __init__(self) -> None:
        self._labels: dict[tuple[str, int], str] = {}
        self._counts: dict[str, int] = {}

    def __call__(self, predict_name: str, call_id: int) -> str:
        label = self._labels.get((predict_name, call_id))
        if label is None:
            n = self._counts[predict_name] = self._counts.get(predict_name, 0) + 1
            first = "" if predict_name == "self" else predict_name
            label = self._labels[(predict_name, call_id)] = first if n == 1 else f"{predict_name}[{n}]"
        return label

    def key(self, predict_name: str, call_id: int, field: str) -> str:
        """The pane of ``field`` in this call: ``"label.field"``, or ``"field"`` for a bare predictor."""
        label = self(predict_name, call_id)
        return f"{label}.{field}" if label else field
