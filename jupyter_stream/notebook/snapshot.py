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
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_html"]

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
    for pane in panes:
        parts.append(f'<div style="margin-top:6px;opacity:.75;font-size:90%">{_e(pane.get("key", ""))}</div>')
        parts.append(f'<pre style="{_PRE}">{_e(pane.get("text", ""))}</pre>')
    if error:
        parts.append(f'<pre style="{_PRE};color:var(--jp-error-color1,#c00)">{_e(error)}</pre>')
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
