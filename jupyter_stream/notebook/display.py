"""WidgetDisplay: the live widget in a cell, replaced by a static HTML snapshot when the stream ends.

The widget (``StreamWidget`` fed by a ``WidgetSink``) shows the stream live. When it ends, the cell's
display is updated to a bundle holding the widget view *and* a ``text/html`` snapshot, so a saved
notebook shows the result on GitHub, nbviewer and ``nbconvert --to html`` without a kernel, while
JupyterLab keeps showing the widget. ``snapshot=False`` leaves the snapshot out (the text then goes
over the wire once, in the widget's deltas, instead of twice; viewers without widgets show no result).
"""

from __future__ import annotations

from typing import Any

from .snapshot import render_html

__all__ = ["WidgetDisplay"]


class WidgetDisplay:
    """A sink (``start``/``handle``/``finish``/``on_stop``) that shows a live widget in the current cell."""

    def __init__(self, *, markdown: bool = False, display: bool = True, snapshot: bool = True) -> None:
        from .widget import StreamWidget, WidgetSink

        self.widget = StreamWidget()
        self.widget.markdown = markdown
        self.sink = WidgetSink(self.widget)
        self._display = display
        self.snapshot = snapshot
        self._handle: Any = None
        self._prediction: Any = None

    def on_stop(self, callback: Any) -> None:
        """Run ``callback`` when the Stop button is clicked."""
        self.widget.on_stop(callback)

    def start(self, *, title: str, model: str) -> None:
        if self._display:
            from IPython.display import display

            self._handle = display(self.widget, display_id=True)
        self.sink.start(title=title, model=model)

    def handle(self, event: Any) -> None:
        self.sink.handle(event)

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        self.sink.finish(prediction=prediction, error=error, stopped=stopped)
        if self._handle is not None:
            w = self.widget
            bundle = {
                "text/plain": f"<jupyter_stream: {w.title} ({w.status})>",
                "application/vnd.jupyter.widget-view+json": {
                    "version_major": 2, "version_minor": 0, "model_id": w.model_id,
                },
            }
            if self.snapshot:
                bundle["text/html"] = self.snapshot_html(prediction)
            self._handle.update(bundle, raw=True)

    def snapshot_html(self, prediction: Any = None) -> str:
        """The static HTML of the widget's current state."""
        w = self.widget
        fields = prediction.to_dict() if prediction is not None and hasattr(prediction, "to_dict") else None
        return render_html(
            title=w.title, model=w.model_name, status=w.status, status_message=w.status_message,
            panes=w.panes, prediction=fields, error=w.error, stats=w.stats,
        )
