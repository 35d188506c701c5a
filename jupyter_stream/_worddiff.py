"""The word diff of a comparison's predictions: field by field, each variant against the first.

Words are compared with :mod:`difflib` (whitespace kept as it was, so the text reads as written);
``str()`` is the terminal's form (``[-removed-]{+added+}``, control characters made visible), and
``_repr_html_`` a notebook's (``<del>``/``<ins>`` around escaped text: model output is never HTML).

    >>> import jupyter_stream as js
    >>> diff = PredictionDiff({"model=a": js.Prediction(answer="Paris is the capital."),
    ...                        "model=b": js.Prediction(answer="Paris is a city.")})
    >>> print(diff)
    ── answer: model=a → model=b ──
    Paris is [-the capital-]{+a city+}.
    >>> diff.fields[0].removed, diff.fields[0].added
    (['the', 'capital'], ['a', 'city'])
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._prediction import is_prediction
from ._terminal import inert

__all__ = ["FieldDiff", "PredictionDiff", "word_ops"]

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")  # words, spaces and each punctuation mark


def word_ops(a: str, b: str) -> list[tuple[str, str]]:
    """``b`` against ``a`` as ``(op, text)`` pieces: ``"="`` kept, ``"-"`` only in ``a``, ``"+"`` only in ``b``.

    >>> word_ops("the red car", "the blue car")
    [('=', 'the '), ('-', 'red'), ('+', 'blue'), ('=', ' car')]
    """
    ta, tb = _TOKENS.findall(a), _TOKENS.findall(b)
    spans = [("=" if tag == "equal" else "~", "".join(ta[i1:i2]), "".join(tb[j1:j2]))
             for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes()]
    # A lone space kept between two changes joins them: "[-the capital-]{+a city+}", not word by word.
    for i in range(1, len(spans) - 1):
        if spans[i][0] == "=" and spans[i][1].isspace() and spans[i - 1][0] == "~" and spans[i + 1][0] == "~":
            spans[i] = ("~", spans[i][1], spans[i][2])
    ops: list[tuple[str, str]] = []
    removed: list[str] = []
    added: list[str] = []
    for kind, old, new in [*spans, ("=", "", "")]:
        if kind == "~":
            removed.append(old)
            added.append(new)
            continue
        if removed or added:
            ops.extend((op, text) for op, text in (("-", "".join(removed)), ("+", "".join(added))) if text)
            removed, added = [], []
        if old:
            ops.append(("=", old))
    return ops


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One output field of one variant (``b``) against the first variant (``a``)."""

    field: str
    a: str
    """The label of the variant compared against (the first that finished)."""
    b: str
    ops: tuple[tuple[str, str], ...]

    @property
    def changed(self) -> bool:
        return any(op != "=" for op, _ in self.ops)

    @property
    def removed(self) -> list[str]:
        """The words only ``a`` has."""
        return [w for op, text in self.ops if op == "-" for w in text.split()]

    @property
    def added(self) -> list[str]:
        """The words only ``b`` has."""
        return [w for op, text in self.ops if op == "+" for w in text.split()]


class PredictionDiff:
    """The word diff of the predictions of a comparison (``{label: prediction or exception}``), field by field:
    each variant against the first one that has a prediction. Failed variants are named, not diffed."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        preds = {label: r for label, r in results.items() if is_prediction(r)}
        self.failed = {label: r for label, r in results.items() if isinstance(r, BaseException)}
        names: dict[str, None] = {}
        for p in preds.values():
            names.update(dict.fromkeys(p.keys()))
        fields: list[FieldDiff] = []
        labels = list(preds)
        for name in names:
            for other in labels[1:]:
                a, b = _text(preds[labels[0]], name), _text(preds[other], name)
                fields.append(FieldDiff(name, labels[0], other, tuple(word_ops(a, b))))
        self.fields = fields

    @property
    def changed(self) -> bool:
        """True when some field differs between two variants."""
        return any(f.changed for f in self.fields)

    def __str__(self) -> str:
        out: list[str] = []
        for f in self.fields:
            out.append(f"── {f.field}: {inert(f.a)} → {inert(f.b)} ──")
            if not f.changed:
                out.append("(the same)")
                continue
            marks = {"=": "{}", "-": "[-{}-]", "+": "{{+{}+}}"}
            out.append("".join(marks[op].format(inert(text)) for op, text in f.ops))
        out.extend(f"── {inert(label)} failed: {type(e).__name__}: {inert(str(e))}" for label, e in self.failed.items())
        return "\n".join(out)

    def _repr_html_(self) -> str:
        tags = {"=": "{}", "-": "<del>{}</del>", "+": "<ins>{}</ins>"}
        rows = []
        for f in self.fields:
            body = "".join(tags[op].format(html.escape(text)) for op, text in f.ops) if f.changed else "<i>the same</i>"
            rows.append(f"<div class='js-diff-field'><b>{html.escape(f.field)}</b>: {html.escape(f.a)} → "
                        f"{html.escape(f.b)}<pre style='white-space:pre-wrap'>{body}</pre></div>")
        rows.extend(f"<div class='js-diff-failed'>{html.escape(label)} failed: {html.escape(type(e).__name__)}: "
                    f"{html.escape(str(e))}</div>" for label, e in self.failed.items())
        return "<div class='js-diff'>" + "".join(rows) + "</div>"

    def __repr__(self) -> str:
        return f"<PredictionDiff of {len(self.fields)} field comparisons, {'changed' if self.changed else 'the same'}>"


def _text(prediction: Any, name: str) -> str:
    value = prediction.get(name, "") if hasattr(prediction, "get") else getattr(prediction, name, "")
    return value if isinstance(value, str) else str(value)
