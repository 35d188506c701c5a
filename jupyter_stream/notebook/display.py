"""WidgetDisplay: the live widget in a cell and, when the stream ends, a static HTML snapshot beside it.

The widget (``StreamWidget`` fed by a ``WidgetSink``) shows the stream live. The snapshot is an output of
its own (a placeholder displayed with the widget, updated when the stream ends), not an alternative
inside the widget's bundle: ``nbconvert --to html`` prefers a widget view over any ``text/html`` beside
it in one bundle whenever the widget state is saved (nbclient saves it by default), and a widget view
needs the widget manager's scripts from a CDN, so offline the result would not show at all. As its own
output, GitHub, nbviewer and ``nbconvert --to html`` show it without a kernel or network.

Where the widget itself shows (JupyterLab, Notebook 7, Voila, an exported page whose widget manager
loaded) the snapshot hides itself: its stylesheet hides its own output when the same output area holds
the widget with the same id (``data-jps-uid``), so nothing is shown twice. ``snapshot=False`` leaves it
out (the text then goes over the wire once, in the widget's deltas; viewers without widgets show no result).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..streaming.sink import Sinks
from .snapshot import SnapshotSink, pending_html

__all__ = ["WidgetDisplay"]


class WidgetDisplay:
    """A sink (``start``/``handle``/``finish``/``on_stop``) that shows a live widget in the current cell, and
    its static snapshot beside it when the stream ends (see the module docs). ``variants``: the ``(label,
    model)`` of each variant when it shows a :class:`~jupyter_stream.Comparison` (a column each)."""

    def __init__(self, *, markdown: bool = False, display: bool = True, snapshot: bool = True,
                 variants: Sequence[tuple[str, str]] = ()) -> None:
        from .sink import WidgetSink
        from .widget import StreamWidget

        self.widget = StreamWidget()
        self.widget.markdown = markdown
        self.sink = WidgetSink(self.widget)
        self.snapshot_sink = SnapshotSink(uid=self.widget.uid, variants=variants) if snapshot else None
        self.variants = list(variants)
        self._sinks = Sinks(self.sink, *([self.snapshot_sink] if self.snapshot_sink is not None else []))
        self._display = display
        self._snapshot_handle: Any = None

    def on_stop(self, callback: Any) -> None:
        """Run ``callback`` when the Stop button is clicked."""
        self.widget.on_stop(callback)

    def start(self, *, title: str, model: str) -> None:
        if self._display:
            from IPython.display import display

            # The widget's output is never updated: JupyterLab answers an update of a widget's output by building a
            # new view (the old one's panes and their scroll are dropped, every pane is rendered again from its whole
            # text). So its plain text (what viewers without widgets show) names the stream and no status.
            self.widget.title = title
            self.widget.shown_text = f"<jupyter_stream {title}>"
            display(self.widget)
            if self.snapshot_sink is not None:  # updated at the end, also when that is after the cell (--background)
                self._snapshot_handle = display({"text/html": pending_html(self.widget.uid)}, raw=True,
                                                display_id=True)
        self.sink.start(title=title, model=model, variants=self.variants)
        if self.snapshot_sink is not None:
            self.snapshot_sink.start(title=title, model=model)

    def show_run_diff(self, run_diff: Any) -> None:
        """Offer "diff with the previous run of this cell" in the widget: what :func:`jupyter_stream.diff` found
        between that run and this one (one trait update, after the stream ended)."""
        self.widget.run_diff = {
            "title": f"{run_diff.a.label} \u2192 {run_diff.b.label}",
            "changed": bool(run_diff),
            "blocks": [{"heading": heading, "pieces": [list(p) for p in pieces]} for heading, pieces in run_diff.blocks()],
        }

    def handle(self, event: Any) -> None:
        self._sinks.handle(event)

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        self._sinks.finish(prediction=prediction, error=error, stopped=stopped)
        # Only the snapshot's output is updated (see start).
        if self._snapshot_handle is not None:
            self._snapshot_handle.update({"text/html": self.snapshot_sink.html}, raw=True)
