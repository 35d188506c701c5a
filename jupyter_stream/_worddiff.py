"""The word diff of a comparison's predictions: field by field, each variant against the first.

Words are compared in time about linear in the text (:func:`matching_blocks`: common ends, then the words each
text holds once as anchors, :mod:`difflib` only between close anchors), whitespace kept as it was, so the text
reads as written;
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

__all__ = ["FieldDiff", "PredictionDiff", "matching_blocks", "word_ops"]

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")  # words, spaces and each punctuation mark


def word_ops(a: str, b: str) -> list[tuple[str, str]]:
    """``b`` against ``a`` as ``(op, text)`` pieces: ``"="`` kept, ``"-"`` only in ``a``, ``"+"`` only in ``b``.

    >>> word_ops("the red car", "the blue car")
    [('=', 'the '), ('-', 'red'), ('+', 'blue'), ('=', ' car')]
    """
    ta, tb = _TOKENS.findall(a), _TOKENS.findall(b)
    spans: list[tuple[str, str, str]] = []
    i = j = 0
    for bi, bj, n in [*matching_blocks(ta, tb), (len(ta), len(tb), 0)]:
        if bi > i or bj > j:
            spans.append(("~", "".join(ta[i:bi]), "".join(tb[j:bj])))
        if n:
            spans.append(("=", "".join(ta[bi:bi + n]), "".join(tb[bj:bj + n])))
        i, j = bi + n, bj + n
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


_SMALL = 40_000
"""A region of ``m x n`` tokens with ``m * n`` at most this goes to :class:`difflib.SequenceMatcher` (whose time grows
with ``m * n`` where tokens repeat, as spaces do); a larger one is cut at its anchors first."""


def matching_blocks(a: list[str], b: list[str]) -> list[tuple[int, int, int]]:
    """The runs ``(i, j, n)`` (``a[i:i+n] == b[j:j+n]``, increasing in ``i`` and ``j``) a word diff keeps.

    Each region of the two token lists loses its common start and end; a small one is then matched by
    :class:`difflib.SequenceMatcher`; a large one is cut at its anchors, the tokens found exactly once in each
    side, the longest run of them in the same order on both (patience sorting: O(k log k)), and each piece
    between two anchors is a region again. A large region with no anchor is reported changed as a whole. So the
    time stays about linear in the text where :class:`difflib.SequenceMatcher` alone grows with its square
    (2,000 tokens: seconds).

        >>> matching_blocks("a b c d".split(), "a x c d".split())
        [(0, 0, 1), (2, 2, 2)]
    """
    blocks: list[tuple[int, int, int]] = []
    regions = [(0, len(a), 0, len(b))]
    while regions:
        alo, ahi, blo, bhi = regions.pop()
        start = alo
        while alo < ahi and blo < bhi and a[alo] == b[blo]:
            alo, blo = alo + 1, blo + 1
        if alo > start:
            blocks.append((start, start - alo + blo, alo - start))
        end = ahi
        while alo < ahi and blo < bhi and a[ahi - 1] == b[bhi - 1]:
            ahi, bhi = ahi - 1, bhi - 1
        if end > ahi:
            blocks.append((ahi, bhi, end - ahi))
        if alo == ahi or blo == bhi:
            continue
        if (ahi - alo) * (bhi - blo) <= _SMALL:
            matcher = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi], autojunk=False)
            blocks.extend((alo + i, blo + j, n) for i, j, n in matcher.get_matching_blocks() if n)
            continue
        anchors = _anchors(a, b, alo, ahi, blo, bhi)
        if not anchors:
            continue
        i0, j0 = alo, blo
        for i, j in anchors:
            regions.append((i0, i, j0, j))
            i0, j0 = i, j  # the anchor itself starts the next region (its common start)
        regions.append((i0, ahi, j0, bhi))
    blocks.sort()
    merged: list[tuple[int, int, int]] = []
    for i, j, n in blocks:  # adjacent runs as one
        if merged and merged[-1][0] + merged[-1][2] == i and merged[-1][1] + merged[-1][2] == j:
            pi, pj, pn = merged[-1]
            merged[-1] = (pi, pj, pn + n)
        else:
            merged.append((i, j, n))
    return merged


def _anchors(a: list[str], b: list[str], alo: int, ahi: int, blo: int, bhi: int) -> list[tuple[int, int]]:
    """The longest increasing run of the tokens found once in ``a[alo:ahi]`` and once in ``b[blo:bhi]``."""
    once_a: dict[str, int] = {}
    for i in range(alo, ahi):
        once_a[a[i]] = -1 if a[i] in once_a else i
    once_b: dict[str, int] = {}
    for j in range(blo, bhi):
        once_b[b[j]] = -1 if b[j] in once_b else j
    pairs = [(i, once_b[t]) for t, i in once_a.items() if i >= 0 and once_b.get(t, -1) >= 0]
    pairs.sort()
    # Patience sorting on the b positions: the longest increasing subsequence, with back links.
    tails: list[int] = []  # per length, the index into pairs of the smallest tail
    back: list[int] = []
    for k, (_, j) in enumerate(pairs):
        n = _bisect_tails(pairs, tails, j)
        back.append(tails[n - 1] if n else -1)
        if n == len(tails):
            tails.append(k)
        else:
            tails[n] = k
    out: list[tuple[int, int]] = []
    k = tails[-1] if tails else -1
    while k >= 0:
        out.append(pairs[k])
        k = back[k]
    return out[::-1]


def _bisect_tails(pairs: list[tuple[int, int]], tails: list[int], j: int) -> int:
    """Where ``j`` goes among the b positions of the tails (the first not below it)."""
    lo, hi = 0, len(tails)
    while lo < hi:
        mid = (lo + hi) // 2
        if pairs[tails[mid]][1] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo


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
