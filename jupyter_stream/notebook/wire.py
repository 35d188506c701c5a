"""The widget's wire protocol, described once: ``labextension/src/widget.ts`` and ``state.ts`` cite it.

The wire protocol (Python -> front end). The text of the panes travels once while streaming, in
custom messages; the synced traits are the durable state (what a saved notebook, a reloaded page or
a late view starts from) and are refreshed only at the start, on a view's request and at the end:

- custom messages ``{"type": "deltas", "seq": n, "items": [[key, text, done], ...], "stats": {...}}``,
  ``n`` going up by one per batch; ``stats`` (as in the ``stats`` trait) rides along at most every
  ``stats_interval`` seconds; ``items`` may be empty when a batch only carries stats. The front end
  applies a batch only if ``seq`` > the last applied one; a snapshot with ``snapshot_seq = s``
  replaces its panes and counts as batch ``s`` applied;
- synced traits: ``title``, ``model_name``, ``status`` (idle|running|done|stopped|error),
  ``status_message``, ``status_log``, ``error``, ``markdown``, ``started_at`` (epoch ms),
  ``lm_calls`` (the prompt inspector), and the snapshot ``panes`` (``[{key, predict, field, text,
  done}]`` in display order) + ``snapshot_seq`` + ``stats``, always set together: at the start
  (empty), when a view asks (``resync``), optionally every ``snapshot_interval`` s once the text has
  grown ``snapshot_growth`` times, and at the end, where the final snapshot also carries the text
  and done flags not yet sent in a batch. ``prediction`` (``{"fields": {...}, "usage": {...}}``) is
  set at the end, in the same update as the final snapshot.
- The final snapshot by reference: once a view has said ``hello``, the final ``panes`` go out as
  ``[{key, predict, field, done, "tail": text not yet in a batch, "len": n}]`` (``n``: the whole
  text's length in UTF-16 code units): a view that applied every batch up to ``snapshot_seq`` fills in
  the text itself (its saved widget state holds it); any other view asks for a ``resync`` and gets
  the text. With no view (a notebook run headless, e.g. by nbclient) the text goes out in full. The
  Python ``panes`` trait always holds the text. Why it earns its place: the final update would otherwise
  carry the text three more times (the panes, the prediction, the inspector's raw reply). In
  ``benchmarks/RESULTS.md`` section 7, 50,000 tokens with ``--no-snapshot``: the final update is 2.5 kB and
  the whole cell 1.22x the text plus envelopes; in full it would add about 600 kB (3 x the 200 kB text,
  computed), near 2.2x, so the text would no longer cross once.
- Text sent by reference: in the synced form of ``prediction``, a field whose value is exactly the text
  of a pane is ``{"$pane": key}``; in ``lm_calls``, ``raw`` and ``reasoning`` may be a list of strings
  and ``{"$pane": key, "end": n}`` (the first ``n`` UTF-16 code units of that pane's text, which only
  grows). The Python values (``widget.prediction``, ``widget.lm_calls``) always hold the full text;
  :func:`resolve_text` turns the synced form back into text.

A comparison (``%%stream --compare``, :class:`~jupyter_stream.Comparison`) is one widget with a column per
variant, on the same protocol: a pane's group (``predict``) is the variant's label, :data:`VARIANT_SEP`,
then the call's label (``"model=a\x1freact[2]"``, key ``"model=a\x1freact[2].answer"``; a bare predictor's
panes are ``"model=a\x1f.answer"``), and an ``lm_calls`` entry names its ``variant``; the ``variants``
trait lists ``{label, model, status, error, message, stats, prediction}`` per variant (set at the start,
with the next batch after a variant's status message or end, and with every snapshot; a prediction's field that
is exactly the text of one of its variant's panes goes by reference, ``{"$pane": key}``), a deltas message that carries
``stats`` also carries ``vstats`` (``{label: stats}`` of the variants still running), and ``diff``
(``[{field, a, b, ops: [[op, text], ...]}]``, ``op`` one of ``=``, ``-``, ``+``: the word diff of each
variant's prediction against the first's) is set at the end. Outside a comparison ``variants`` and
``diff`` stay empty.

``run_diff`` (``{title, changed, blocks: [{heading, pieces: [[op, text], ...]}]}``, see
:func:`jupyter_stream.diff` and its ``blocks()``) is set after a ``%%stream`` cell's stream ended when the same cell ran
before: what changed in the settings, inputs, prompts and outputs since that run.

Held messages: an LM call whose prompt messages exceed :data:`HELD_MESSAGES` characters syncs a
preview of them (each content cut, with ``cut``: the characters left out; the call has ``held``: the
whole messages' characters); the front end asks for them with ``{"type": "messages", "call_id": id}``
when its inspector shows that call and gets ``{"type": "messages", "call_id": id, "messages": [...]}``,
a custom message, so a saved notebook keeps only the preview.

Front end -> Python: ``{"type": "stop"}`` (the Stop button), ``{"type": "hello"}`` (a model came up
in a front end), ``{"type": "messages", "call_id": id}`` (see above) and ``{"type": "resync"}`` (a view that missed batches, a view created while the
stream runs, e.g. a page reloaded mid-stream, or one that cannot fill in a final snapshot sent by
reference, asks for the text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .widget import StreamWidget

__all__ = ["HELD_MESSAGES", "PANE_REF", "VARIANT_SEP", "resolve_text"]

VARIANT_SEP = "\x1f"
"""Between a variant's label and the rest of a pane's group in a comparison (see the module docstring)."""

PANE_REF = "$pane"
"""The key of a reference to a pane's text in the synced form of ``prediction`` and ``lm_calls``."""

_MIN_REF = 32
"""Texts shorter than this are sent as they are (a reference would not be much shorter)."""


HELD_MESSAGES = 64 * 1024
"""An LM call whose prompt messages hold more characters than this keeps them in the kernel: the synced
``lm_calls`` (and so a saved notebook's widget state) holds a preview of each message, and the inspector
asks for the whole messages when it is opened."""

_PREVIEW = 2_000
"""Characters of each message's content in the preview of held messages."""


def _payload_size(content: Any) -> int:
    try:
        return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8"))
    except (TypeError, ValueError):
        return 0


# ------------------------------------------------------------------------ text by reference


def _len16(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (JavaScript's ``string.length``)."""
    # surrogatepass: a lone surrogate (JSON allows "\ud800") is one unit, as in JavaScript.
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def _prefix16(text: str, n: int) -> str:
    """The first ``n`` UTF-16 code units of ``text`` (JavaScript's ``text.slice(0, n)``)."""
    if text.isascii():
        return text[:n]
    return text.encode("utf-16-le", "surrogatepass")[: 2 * n].decode("utf-16-le", "surrogatepass")


def _compact(text: str, panes: Iterable[tuple[str, str]]) -> str | list[Any]:
    """``text`` with the whole texts of ``panes`` (``(key, text)``, in the order they appear) replaced by
    references ``{"$pane": key, "end": n}``; ``text`` itself when none appears in it."""
    parts: list[Any] = []
    cursor = 0
    for key, pane_text in panes:
        if len(pane_text) < _MIN_REF:
            continue
        i = text.find(pane_text, cursor)
        if i < 0:
            continue
        if i > cursor:
            parts.append(text[cursor:i])
        parts.append({PANE_REF: key, "end": _len16(pane_text)})
        cursor = i + len(pane_text)
    if not parts:
        return text
    if cursor < len(text):
        parts.append(text[cursor:])
    return parts


def resolve_text(value: Any, panes: Mapping[str, str] | Iterable[Mapping[str, Any]]) -> Any:
    """The text of a value in its synced form: a string as it is, ``{"$pane": key}`` (with an optional
    ``end``) as that pane's text, a list of those joined. ``panes``: ``{key: text}`` or the ``panes``
    trait. Any other value is returned unchanged; a reference to an unknown pane resolves to ``""``.

        >>> resolve_text(["<", {"$pane": "p.answer", "end": 3}, ">"], {"p.answer": "Paris"})
        '<Par>'
    """
    texts = panes if isinstance(panes, Mapping) else {p.get("key"): p.get("text", "") for p in panes}

    def one(part: Any) -> str | None:
        if isinstance(part, str):
            return part
        if isinstance(part, dict) and isinstance(part.get(PANE_REF), str):
            text = texts.get(part[PANE_REF]) or ""
            end = part.get("end")
            return _prefix16(text, end) if isinstance(end, int) else text
        return None

    if isinstance(value, list):
        pieces = [one(p) for p in value]
        return "".join(pieces) if all(p is not None for p in pieces) else value
    text = one(value)
    return value if text is None else text


def _fields_by_ref(fields: Mapping[str, Any], key_of: Callable[[str], str | None]) -> dict[str, Any]:
    """``fields`` with each string value that ``key_of`` finds as a pane's whole text sent as ``{"$pane": key}``."""
    out = {}
    for name, value in fields.items():
        key = key_of(value) if isinstance(value, str) else None
        out[name] = value if key is None else {PANE_REF: key}
    return out


def _prediction_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``prediction``: a field equal to the text of a pane of ``widget.panes`` (set in
    the same update, at the end of the stream) is sent as ``{"$pane": key}``."""
    fields = value.get("fields") if isinstance(value, dict) else None
    if not isinstance(fields, dict) or not fields:
        return value
    by_text: dict[str, str] = {}
    for pane in widget.panes:
        text = pane.get("text")
        if isinstance(text, str) and len(text) >= _MIN_REF and text not in by_text:
            by_text[text] = pane.get("key", "")
    if not by_text:
        return value
    return {**value, "fields": _fields_by_ref(fields, by_text.get)}


def _variants_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``variants``: in each variant's prediction, a field whose value is exactly the text of
    one of that variant's panes is sent as ``{"$pane": key}`` (the front end has the text from the deltas)."""
    if not isinstance(value, list) or not any(isinstance(v, dict) and v.get("prediction") for v in value):
        return value
    by_text: dict[tuple[str, str], str] = {}
    for key, predict, text in widget.pane_texts():
        label = predict.split(VARIANT_SEP, 1)[0] if VARIANT_SEP in predict else None
        if label is not None and len(text) >= _MIN_REF:
            by_text.setdefault((label, text), key)
    out = []
    for v in value:
        fields = v.get("prediction", {}).get("fields") if isinstance(v, dict) else None
        if isinstance(fields, dict) and fields:
            label = v.get("label")
            refs = _fields_by_ref(fields, lambda text, label=label: by_text.get((label, text)))
            v = {**v, "prediction": {**v["prediction"], "fields": refs}}
        out.append(v)
    return out


def _panes_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``panes``: the final snapshot by reference (see the module docstring) when the
    sink set one for exactly this value, else the panes with their text."""
    ref = widget.final_by_ref
    return ref[1] if ref is not None and ref[0] is value else value


def _lm_calls_to_json(value: Any, widget: StreamWidget) -> Any:
    """The synced form of ``lm_calls``: in ``raw`` and ``reasoning``, the text of a pane of the call's
    own pane group (``group``: its label, see :class:`~jupyter_stream.streaming.events.PaneLabels`) is sent
    as a reference (the front end has that text from the deltas or the snapshot)."""
    if not isinstance(value, list) or not value:
        return value
    value = [_preview_messages(call) for call in value]
    by_predict: dict[str, list[tuple[str, str]]] = {}
    for key, predict, text in widget.pane_texts():
        if len(text) >= _MIN_REF:
            by_predict.setdefault(predict, []).append((key, text))
    if not by_predict:
        return value
    out = []
    for call in value:
        candidates = by_predict.get(call.get("group")) if isinstance(call, dict) else None
        if candidates:
            call = dict(call)
            for name in ("raw", "reasoning"):
                text = call.get(name)
                if isinstance(text, str) and text:
                    call[name] = _compact(text, candidates)
        out.append(call)
    return out


def _message_chars(messages: Any) -> int:
    return sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))


def _preview_messages(call: Any) -> Any:
    """``call`` with its messages cut to a preview when they are too big to sync (see :data:`HELD_MESSAGES`):
    each content keeps its first ``_PREVIEW`` characters and says how many it lost (``cut``); ``held`` is
    the characters of the whole messages, which the front end asks for (``{"type": "messages"}``)."""
    messages = call.get("messages") if isinstance(call, dict) else None
    if not isinstance(messages, list):
        return call
    total = _message_chars(messages)
    if total <= HELD_MESSAGES:
        return call
    preview = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str) and len(content) > _PREVIEW:
            m = {**m, "content": content[:_PREVIEW], "cut": len(content) - _PREVIEW}
        preview.append(m)
    return {**call, "messages": preview, "held": total}
