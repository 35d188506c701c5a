"""``js.diff(a, b)``: what changed between two runs, in their settings, inputs, prompts and outputs.

The prompts are compared LM call by LM call (in the order the calls started) and message by message, as a
unified diff of lines; the outputs field by field, as a word diff (``[-old-]{+new+}`` in text, ``<del>`` and
``<ins>`` in HTML). ``str(d)`` is the terminal's rendering, ``d._repr_html_()`` the notebook's: escaped text
and inline styles only, never a script or the model's HTML.

Example::

    >>> from jupyter_stream._runs import LMCall, Run
    >>> def run(label, instructions, answer):
    ...     call = LMCall(1, "predict", "m", [{"role": "system", "content": instructions}], raw=answer)
    ...     return Run(label, "stream", "Predict(q -> a)", {"q": "?"}, {"model": "m"}, 0.0, status="ok",
    ...                lm_calls=[call], prediction=js.Prediction(a=answer))
    >>> import jupyter_stream as js
    >>> print(js.diff(run("#1", "Be brief.", "Paris is the capital."), run("#2", "Be very brief.", "Paris.")))
    diff #1 -> #2: Predict(q -> a)
    prompt, LM call 1 (predict), message 1 (system):
      -Be brief.
      +Be very brief.
    output a: Paris[- is the capital-].
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Mapping
from typing import Any

from . import _runs
from ._exceptions import UsageError
from ._terminal import inert
from ._worddiff import word_ops

__all__ = ["RunDiff", "diff"]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


class RunDiff:
    """What changed from run ``a`` to run ``b`` (made by :func:`diff`); falsy when nothing did.

    Attributes:
        settings: ``(name, a's value, b's value)`` for each setting that differs (``"call 1 temperature"`` for a
            request parameter of one LM call).
        inputs: ``(name, a's value, b's value)`` for each input that differs.
        prompts: ``(where, unified diff lines)`` for each message that differs, ``where`` naming the LM call and
            the message; a call only one run made is listed whole.
        outputs: ``(field, word diff)`` for each output field that differs (``(op, text)`` pieces of
            :func:`~jupyter_stream._worddiff.word_ops`: ``"="`` kept, ``"-"`` removed, ``"+"`` added).
        status: ``(a's, b's)`` when the runs ended differently (``"ok"``, ``"error: LMError"``...), else None.
    """

    def __init__(self, a: _runs.Run, b: _runs.Run) -> None:
        self.a, self.b = a, b
        self.settings = _changed(a.settings, b.settings)
        for i, (ca, cb) in enumerate(zip(a.lm_calls, b.lm_calls), 1):
            for name, va, vb in _changed({"model": ca.model, **ca.params}, {"model": cb.model, **cb.params}):
                if (name, va, vb) not in self.settings:
                    self.settings.append((f"call {i} {name}", va, vb))
        self.inputs = _changed(a.inputs, b.inputs)
        self.prompts: list[tuple[str, list[str]]] = []
        for i in range(max(len(a.lm_calls), len(b.lm_calls))):
            ca = a.lm_calls[i] if i < len(a.lm_calls) else None
            cb = b.lm_calls[i] if i < len(b.lm_calls) else None
            self.prompts.extend(_prompt_changes(i + 1, ca, cb))
        oa, ob = a.outputs(), b.outputs()
        self.outputs = [(f, word_ops(oa.get(f, ""), ob.get(f, ""))) for f in dict.fromkeys([*oa, *ob])
                        if oa.get(f) != ob.get(f)]
        sa, sb = _status(a), _status(b)
        self.status = (sa, sb) if sa != sb else None

    def __bool__(self) -> bool:
        return bool(self.settings or self.inputs or self.prompts or self.outputs or self.status)

    def __repr__(self) -> str:
        parts = [f"{len(x)} {name}" for name, x in (("settings", self.settings), ("inputs", self.inputs),
                                                    ("messages", self.prompts), ("fields", self.outputs)) if x]
        return f"<RunDiff {self.a.label} -> {self.b.label}: {', '.join(parts) or 'no change'}>"

    def blocks(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """What changed, as ``(heading, [(op, text)])`` blocks (a prompt's are its unified diff's lines, the others a
        word diff's pieces): the rendering shared by the text, the HTML and the widget."""
        out: list[tuple[str, list[tuple[str, str]]]] = []
        if self.status:
            out.append((f"status: {self.status[0]} -> {self.status[1]}", []))
        for name, va, vb in self.settings:
            out.append((f"setting {name}: {_text(va)} -> {_text(vb)}", []))
        for name, va, vb in self.inputs:
            out.append((f"input {name}:", word_ops(_text(va), _text(vb))))
        for where, lines in self.prompts:
            out.append((f"prompt, {where}:", [(line[:1].strip() or "=", line[1:]) for line in lines]))
        for name, pieces in self.outputs:
            out.append((f"output {name}:", pieces))
        return out

    def __str__(self) -> str:
        lines = [inert(f"diff {self.a.label} -> {self.b.label}: {self.b.title}")]
        if not self:
            lines.append("no change in settings, inputs, prompts or outputs")
        for heading, pieces in self.blocks():
            heading = inert(heading)
            if heading.startswith("prompt"):
                lines.append(heading)
                lines.extend(f"  {' ' if op == '=' else op}{inert(text)}" for op, text in pieces)
            elif pieces:
                marks = {"=": "{}", "-": "[-{}-]", "+": "{{+{}+}}"}
                lines.append(f"{heading} " + "".join(marks[op].format(inert(text)) for op, text in pieces))
            else:
                lines.append(heading)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        style = {"-": "background:#fdd;text-decoration:line-through", "+": "background:#dfd"}
        tag = {"-": "del", "+": "ins"}
        rows = [f"<div><b>diff {esc(self.a.label)} &rarr; {esc(self.b.label)}</b>: {esc(self.b.title)}</div>"]
        if not self:
            rows.append("<div>no change in settings, inputs, prompts or outputs</div>")
        for heading, pieces in self.blocks():
            if heading.startswith("prompt"):
                body = "\n".join(
                    f'<{tag[op]} style="{style[op]}">{esc(op + text)}</{tag[op]}>' if op in tag else esc(" " + text)
                    for op, text in pieces
                )
            else:
                body = "".join(
                    f'<{tag[op]} style="{style[op]}">{esc(text)}</{tag[op]}>' if op in tag else esc(text)
                    for op, text in pieces
                )
            rows.append(f"<div><b>{esc(heading)}</b>" + (f'<pre style="white-space:pre-wrap;margin:2px 0 6px 1em">'
                                                         f"{body}</pre>" if pieces else "") + "</div>")
        return f'<div class="jupyter-stream-diff" style="font-family:monospace">{"".join(rows)}</div>'


def _status(run: _runs.Run) -> str:
    return f"error: {type(run.error).__name__}" if run.status == "error" and run.error is not None else run.status


def _changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def _content(message: Any) -> str:
    if isinstance(message, Mapping):
        return _text(message.get("content", ""))
    return _text(message)


def _prompt_changes(i: int, ca: _runs.LMCall | None, cb: _runs.LMCall | None) -> list[tuple[str, list[str]]]:
    name = (cb or ca).predict_name  # type: ignore[union-attr]
    if ca is None or cb is None:
        which = "b" if ca is None else "a"
        only = cb or ca
        return [(f"LM call {i} ({name}), made by run {which} only",
                 [("+" if ca is None else "-") + line for m in only.messages for line in _content(m).splitlines()])]  # type: ignore[union-attr]
    out = []
    ma, mb = ca.messages, cb.messages
    for j in range(max(len(ma), len(mb))):
        a = ma[j] if j < len(ma) else None
        b = mb[j] if j < len(mb) else None
        ta, tb = (_content(a) if a is not None else ""), (_content(b) if b is not None else "")
        if ta == tb and (a or {}).get("role") == (b or {}).get("role"):
            continue
        role = (b or a or {}).get("role", "?")
        lines = list(difflib.unified_diff(ta.splitlines(), tb.splitlines(), lineterm="", n=1))[2:]  # no ---/+++
        out.append((f"LM call {i} ({name}), message {j + 1} ({role})",
                    [line for line in lines if not line.startswith("@@")] or [f" (role {a and a.get('role')} -> {role})"]))
    return out


def diff(a: Any = -2, b: Any = -1) -> RunDiff:
    """What changed from run ``a`` to run ``b``: runs (``js.runs[i]``, ``js.load_recording(path)[i]``) or
    indices into ``js.runs`` (default: the last two runs)."""
    return RunDiff(_run(a, "a"), _run(b, "b"))


def _run(x: Any, name: str) -> _runs.Run:
    if isinstance(x, _runs.Run):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        n = len(_runs.runs)
        if not -n <= x < n:
            raise UsageError(f"js.diff({name}={x}): the history holds {n} run{'' if n == 1 else 's'} (js.runs)")
        return _runs.runs[x]
    raise UsageError(f"js.diff() takes runs or indices into js.runs, got {name}={type(x).__name__}")
