"""A static HTML snapshot of a finished stream, for viewers without a kernel (GitHub, nbviewer, nbconvert).

Everything the model wrote is escaped: the snapshot is text, never HTML or script. Each long text
appears once: a prediction field whose value is the text of a pane above names that pane instead.

Example::

    >>> from jupyter_stream.notebook.snapshot import render_html
    >>> html = render_html(title="predict", model="demo", status="done",
    ...                    panes=[{"key": "predict.answer", "text": "<script>x</script>", "done": True}],
    ...                    prediction={"answer": "<b>Paris</b>"})
    >>> "<script>" in html, "&lt;script&gt;" in html
    (False, True)
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .._compare import CompareResult, VariantDone, VariantEvent
from .._prediction import is_prediction
from ..streaming.events import LMResponse, PaneLabels, StatusMessage, StreamResponse

__all__ = ["SnapshotSink", "pending_html", "render_compare_html", "render_html"]

_STYLE = (
    "font-family:var(--jp-ui-font-family,system-ui,sans-serif);border:1px solid var(--jp-border-color2,#ddd);"
    "border-radius:6px;padding:8px 10px;margin:4px 0;color:var(--jp-ui-font-color1,#222);"
    "background:var(--jp-layout-color1,#fff)"
)
_PRE = "white-space:pre-wrap;word-break:break-word;margin:2px 0 8px;font-family:var(--jp-code-font-family,monospace)"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    if hasattr(v, "model_dump"):
        v = v.model_dump(mode="json")
    try:
        return json.dumps(v, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(v)


def _hide_beside_widget(uid: str) -> str:
    """A stylesheet hiding this snapshot's output where the same output area shows the widget ``uid``
    (JupyterLab, Notebook 7, Voila, nbconvert's pages: the output area classes they share)."""
    sel = f'[data-jps-uid="{_e(uid)}"]'
    return (f"<style>.jp-OutputArea:has(.jps-widget{sel}) > .jp-OutputArea-child:has(.jps-snapshot{sel})"
            "{display:none}</style>")


def _pane_html(name: Any, text: Any) -> str:
    """One pane: its name, then its text (escaped)."""
    return (f'<div style="margin-top:6px;opacity:.75;font-size:90%">{_e(name)}</div>'
            f'<pre style="{_PRE}">{_e(text)}</pre>')


def _error_html(error: str) -> str:
    return f'<pre style="{_PRE};color:var(--jp-error-color1,#c00)">{_e(error)}</pre>'


def _parts_of(panes: dict[str, list[str]], labels: PaneLabels, ev: StreamResponse) -> list[str]:
    """The list of text parts of ``ev``'s pane (made on its first chunk): one pane per LM call and field."""
    key = labels.key(ev.predict_name, ev.call_id, ev.signature_field_name)
    parts = panes.get(key)
    if parts is None:
        parts = panes[key] = []
    return parts


def pending_html(uid: str) -> str:
    """The snapshot's placeholder while the stream runs: hidden wherever the host honours its stylesheet."""
    sel = f'[data-jps-uid="{_e(uid)}"]'
    return (f'<div class="jps-snapshot-pending" data-jps-uid="{_e(uid)}"></div>'
            f"<style>.jp-OutputArea-child:has(.jps-snapshot-pending{sel}){{display:none}}</style>")


def render_html(
    *,
    title: str,
    uid: str = "",
    model: str = "",
    status: str = "done",
    status_message: str = "",
    panes: Sequence[Mapping[str, Any]] = (),
    prediction: Mapping[str, Any] | None = None,
    error: str = "",
    stats: Mapping[str, Any] | None = None,
) -> str:
    """The stream as one self-contained, escaped HTML fragment (``uid``: the widget's, see ``display.py``)."""
    parts = [_hide_beside_widget(uid)] if uid else []
    parts.append(f'<div class="jps-snapshot" data-jps-uid="{_e(uid)}" style="{_STYLE}">')
    head = f"<b>{_e(title)}</b>" + (f" · {_e(model)}" if model else "") + f" · <i>{_e(status)}</i>"
    if status_message:
        head += f" · {_e(status_message)}"
    if stats:
        bits = []
        if stats.get("tokens"):
            bits.append(f"{int(stats['tokens'])} tokens")
        if stats.get("elapsed"):
            bits.append(f"{float(stats['elapsed']):.1f} s")
        if stats.get("ttft") is not None:
            bits.append(f"first token {float(stats['ttft']) * 1000:.0f} ms")
        if bits:
            head += " · " + _e(", ".join(bits))
    parts.append(f"<div>{head}</div>")
    parts.extend(_pane_html(pane.get("key", ""), pane.get("text", "")) for pane in panes)
    if error:
        parts.append(_error_html(error))
    if prediction:
        shown: dict[str, str] = {}
        for pane in panes:
            text = pane.get("text", "")
            if isinstance(text, str) and len(text) >= 32 and text not in shown:  # short ones: shown again
                shown[text] = str(pane.get("key", ""))
        parts.append("<details><summary>Prediction</summary>")
        for k, v in prediction.items():
            value = _value(v)
            parts.append(f"<div><b>{_e(k)}</b>")
            if value in shown:  # the text is in that pane above: not a second copy
                parts.append(f" <i>(the text of {_e(shown[value])} above)</i></div>")
            else:
                parts.append(f'</div><pre style="{_PRE}">{_e(value)}</pre>')
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)


def render_compare_html(*, title: str, uid: str = "", status: str = "done", columns: Sequence[Mapping[str, Any]] = (),
                        diff_html: str = "", error: str = "") -> str:
    """A comparison as one escaped HTML fragment: a column per variant (``columns``: ``label``, ``model``,
    ``status``, ``line`` (its stats), ``error``, ``panes`` (``[(name, text)]``)), then the word
    diff (``diff_html``: :meth:`~jupyter_stream._worddiff.PredictionDiff._repr_html_`, escaped there)."""
    parts = [_hide_beside_widget(uid)] if uid else []
    parts.append(f'<div class="jps-snapshot jps-snapshot-compare" data-jps-uid="{_e(uid)}" style="{_STYLE}">')
    parts.append(f"<div><b>{_e(title)}</b> · {len(columns)} variants · <i>{_e(status)}</i></div>")
    if error:
        parts.append(_error_html(error))
    parts.append(f'<div style="display:grid;grid-template-columns:repeat({max(1, len(columns))},minmax(0,1fr));gap:10px">')
    for col in columns:
        parts.append('<div class="jps-snapshot-variant" style="min-width:0">')
        head = f"<b>{_e(col.get('label', ''))}</b>"
        if col.get("model"):
            head += f" · {_e(col['model'])}"
        head += f" · <i>{_e(col.get('status', ''))}</i>"
        parts.append(f"<div>{head}</div>")
        if col.get("line"):
            parts.append(f'<div style="opacity:.75;font-size:90%">{_e(col["line"])}</div>')
        parts.extend(_pane_html(name, text) for name, text in col.get("panes", ()))
        if col.get("error"):
            parts.append(_error_html(col["error"]))
        parts.append("</div>")
    parts.append("</div>")
    if diff_html:
        parts.append(f"<details open><summary>Diff</summary>{diff_html}</details>")
    parts.append("</div>")
    return "".join(parts)


class SnapshotSink:
    """A :class:`~jupyter_stream.streaming.sink.Sink` that keeps what a stream showed and renders it as the
    static snapshot when it finishes (:attr:`html`): the panes' text, the last status message, the stats
    (tokens, time, time to the first chunk), the prediction or the error. O(1) per chunk.

    >>> from jupyter_stream.streaming.events import StreamResponse
    >>> sink = SnapshotSink(uid="w1")
    >>> sink.start(title="qa", model="m")
    >>> for text, last in (("Par", False), ("is", True)): sink.handle(StreamResponse("self", "answer", text, last))
    >>> sink.finish()
    >>> ">Paris</pre>" in sink.html and 'data-jps-uid="w1"' in sink.html
    True
    """

    def __init__(self, *, uid: str = "", variants: Sequence[tuple[str, str]] = ()) -> None:
        self.uid = uid
        self.html = ""
        # A comparison (see WidgetSink.start): each variant's model, panes ({key: parts}), pane labels and end.
        self._variants = {label: (model, {}, PaneLabels()) for label, model in variants}
        self._ends: dict[str, VariantDone] = {}
        self._diff_html = ""
        self._labels = PaneLabels()
        self._parts: dict[str, list[str]] = {}
        self._title = self._model = self._message = ""
        self._prediction: Any = None
        self._chunks = 0
        self._usage_tokens: int | None = None
        self._t0 = 0.0
        self._ttft: float | None = None

    def start(self, *, title: str, model: str) -> None:
        self._title, self._model = title, model
        self._t0 = time.perf_counter()

    def handle(self, event: Any) -> None:
        if type(event) is VariantEvent:
            variant = self._variants.get(event.variant)
            inner = event.event
            if variant is not None and isinstance(inner, StreamResponse):
                _, panes, labels = variant
                parts = _parts_of(panes, labels, inner)
                if inner.chunk:
                    parts.append(inner.chunk)
        elif type(event) is VariantDone:
            self._ends[event.variant] = event
        elif isinstance(event, CompareResult):
            self._diff_html = event.diff._repr_html_()
        elif isinstance(event, StreamResponse):
            parts = _parts_of(self._parts, self._labels, event)
            if event.chunk:
                parts.append(event.chunk)
                self._chunks += 1
                if self._ttft is None:
                    self._ttft = time.perf_counter() - self._t0
        elif isinstance(event, StatusMessage):
            self._message = event.message
        elif isinstance(event, LMResponse):
            n = (event.usage or {}).get("completion_tokens")
            if isinstance(n, int):
                self._usage_tokens = (self._usage_tokens or 0) + n
        elif is_prediction(event):
            self._prediction = event

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        pred = prediction if prediction is not None else self._prediction
        status = "error" if error is not None else "stopped" if stopped else "done"
        if self._variants:
            self.html = render_compare_html(
                uid=self.uid, title=self._title, status=status, columns=self._columns(status),
                diff_html=self._diff_html, error=f"{type(error).__name__}: {error}" if error is not None else "")
            return
        fields = dict(pred.items()) if pred is not None and error is None and not stopped else None
        panes = [{"key": key, "text": "".join(parts)} for key, parts in self._parts.items()]
        stats = {"tokens": self._usage_tokens if self._usage_tokens is not None else self._chunks,
                 "elapsed": time.perf_counter() - self._t0, "ttft": self._ttft}
        self.html = render_html(uid=self.uid, title=self._title, model=self._model, status=status,
                                status_message=self._message, panes=panes, prediction=fields,
                                error=f"{type(error).__name__}: {error}" if error is not None else "", stats=stats)

    def _columns(self, status: str) -> list[dict[str, Any]]:
        columns = []
        for label, (model, panes, _) in self._variants.items():
            end = self._ends.get(label)
            col: dict[str, Any] = {"label": label, "model": model,
                                   "panes": [(key, "".join(parts)) for key, parts in panes.items()]}
            if end is None:
                col["status"] = "stopped" if status in ("done", "stopped") else status
            else:
                col["status"] = "error" if end.error is not None else "done"
                col["line"] = end.stats.line()
                if end.error is not None:
                    col["error"] = f"{type(end.error).__name__}: {end.error}"
            columns.append(col)
        return columns
