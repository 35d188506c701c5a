"""CompareTextRenderer: a comparison written as text, the variants one after the other, then the word diff.

The variants run at once; the first is written as it streams, the events of the others wait for their turn
(a variant already done comes out at once). Each variant gets its label as a heading, its fields through a
:class:`~jupyter_stream.TextRenderer` (model output inert), its stats line or its error. What
``jupyter-stream run --compare`` prints, and ``%%stream --compare --text``.

Example::

    >>> import io, jupyter_stream as js
    >>> from jupyter_stream._compare import VariantDone, VariantStats
    >>> out = io.StringIO()
    >>> r = CompareTextRenderer(["model=a", "model=b"], out, color=False, show_prediction=False)
    >>> r.handle(js.VariantEvent("model=b", js.StreamResponse("self", "answer", "Lyon", True)))
    >>> r.handle(js.VariantEvent("model=a", js.StreamResponse("self", "answer", "Paris", True)))
    >>> r.handle(VariantDone("model=a", js.Prediction(answer="Paris"), None, VariantStats(started=0.0, seconds=1)))
    >>> r.handle(VariantDone("model=b", js.Prediction(answer="Lyon"), None, VariantStats(started=0.0, seconds=1)))
    >>> print(out.getvalue())
    ═══ model=a ═══
    ── answer ──
    Paris
    · 0 tokens in 1.00 s
    <BLANKLINE>
    ═══ model=b ═══
    ── answer ──
    Lyon
    · 0 tokens in 1.00 s
    <BLANKLINE>
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._compare import CompareResult, VariantDone, VariantEvent
from ._terminal import TextRenderer, inert

__all__ = ["CompareTextRenderer"]


class CompareTextRenderer:
    """Writes the items of a :class:`~jupyter_stream.Comparison` (``handle`` each, ``finish`` once)."""

    def __init__(self, labels: Sequence[str], file: TextIO | None = None, *, color: bool | None = None,
                 show_prediction: bool = True) -> None:
        self.labels = list(labels)
        self.file = file or sys.stdout
        self.color = self.file.isatty() if color is None else color
        self.show_prediction = show_prediction
        self.done: dict[str, VariantDone] = {}
        self._waiting: dict[str, list[Any]] = {label: [] for label in self.labels}
        self._shown = 0
        self._renderer = self._turn()

    @property
    def failed(self) -> bool:
        """True when a variant ended with an error."""
        return any(end.error is not None for end in self.done.values())

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _turn(self) -> TextRenderer:
        """The next variant's heading, and what it has streamed so far."""
        label = self.labels[self._shown]
        self.file.write(("\n" if self._shown else "") + self._style(f"═══ {inert(label)} ═══", "1;35") + "\n")
        renderer = TextRenderer(self.file, color=self.color, show_prediction=self.show_prediction)
        for event in self._waiting.pop(label):
            renderer.handle(event)
        return renderer

    def handle(self, item: Any) -> None:
        """One item of the comparison: a variant's event, a variant's end, or the result (then the diff)."""
        if type(item) is VariantEvent:
            if item.variant == self.labels[self._shown]:
                self._renderer.handle(item.event)
            else:
                self._waiting[item.variant].append(item.event)
        elif type(item) is VariantDone:
            self.done[item.variant] = item
            while self._shown < len(self.labels) and self.labels[self._shown] in self.done:
                end = self.done[self.labels[self._shown]]
                self._renderer.finish(error=end.error)
                self.file.write(self._style(f"· {end.stats.line()}", "2") + "\n")
                self._shown += 1
                if self._shown < len(self.labels):
                    self._renderer = self._turn()
            self.file.flush()
        elif isinstance(item, CompareResult):
            self.file.write("\n" + self._style("═══ diff ═══", "1;35") + "\n" + str(item.diff) + "\n")
            self.file.flush()

    def start(self, *, title: str, model: str) -> None:
        """Nothing to write before the first variant's heading (a :class:`~jupyter_stream.streaming.Sink`)."""

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        """End the output: ``stopped`` (or an ``error`` that ended the whole comparison) marks the variant being
        shown. ``prediction`` is unused: each variant's is written when it ends."""
        if (stopped or error is not None) and self._shown < len(self.labels):
            self._renderer.finish(stopped=stopped, error=error)
