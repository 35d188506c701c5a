"""The chat adapter: DSPy's ``[[ ## field ## ]]`` section format.

Reply grammar (what :meth:`ChatAdapter.parse` accepts and the field parser mirrors exactly):

* a header is ``[[ ## name ## ]]`` with ``name`` matching ``\\w+``, anywhere in the text (not only at a
  line start: models write ``"...text [[ ## completed ## ]]"``);
* a field's text is everything between its header and the next header (any name, ``completed`` and
  unknown names included) or the end of the reply, ``.strip()``-ped;
* the first occurrence of a field wins; text before the first header and unknown sections are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import AdapterParseError
from .._signatures import Signature
from . import _prompt
from .base import FieldDelta, FieldParser, coerce_value

__all__ = ["ChatAdapter"]

HEADER_RE = re.compile(r"\[\[ ## (\w+) ## \]\]")
_HEADER_START = "[[ ## "
_WORD_RE = re.compile(r"\w*")


def _prefix_pattern(tokens: list[str]) -> str:
    pat = tokens[-1]
    for tok in reversed(tokens[:-1]):
        pat = f"{tok}(?:{pat})?"
    return pat


# Matches the longest start of a header at a position; when it reaches the end of the text, the text
# from that position may still become a header and is held back.
_HEADER_PREFIX_RE = re.compile(
    _prefix_pattern([r"\[", r"\[", " ", "#", "#", " ", r"\w+", " ", "#", "#", " ", r"\]", r"\]"])
)


class _StrippedText:
    """Emits one field's text stripped like ``str.strip()`` would, without seeing it whole.

    Leading whitespace of a field is dropped; a trailing whitespace run is held back until non-space
    text follows it (then it is emitted) or the field closes (then it is dropped). Pieces found within
    one ``feed`` call are coalesced into one :class:`FieldDelta` per field.
    """

    __slots__ = ("_field", "_started", "_ws", "_acc", "_opened", "_outputs")

    def __init__(self, outputs: Sequence[str]) -> None:
        self._outputs = frozenset(outputs)
        self._opened: set[str] = set()
        self._field: str | None = None  # the output field whose text is being emitted
        self._started = False  # non-whitespace text seen in the current field
        self._ws: list[str] = []  # held-back trailing whitespace of the current field
        self._acc: list[str] = []  # text of the current field found in this feed call

    def _text(self, t: str) -> None:
        if self._field is None or not t:
            return
        if not self._started:
            t = t.lstrip()
            if not t:
                return
            self._started = True
        body = t.rstrip()
        if not body:
            self._ws.append(t)
            return
        if self._ws:
            self._acc.append("".join(self._ws))
            self._ws.clear()
        self._acc.append(body)
        if len(body) != len(t):
            self._ws.append(t[len(body) :])

    def _plain_field(self, text: str) -> str | None:
        """The field ``_plain(text)`` would pass ``text`` to unchanged, as one delta (else ``None``)."""
        if self._started and not self._ws and text and not text[-1].isspace():
            return self._field
        return None

    def _plain(self, text: str) -> list[FieldDelta]:
        """The deltas for a whole feed of plain text (no markup, nothing held back) in the open field."""
        if self._started:  # the common case: a token inside a field that has begun
            if not self._ws and not text[-1].isspace():
                return [FieldDelta(self._field, text, False)]  # type: ignore[arg-type]
            body = text.rstrip()
            if body:  # emit up to the trailing whitespace, which is held back
                if len(body) != len(text):
                    tail = text[len(body) :]
                    if self._ws:
                        body = "".join(self._ws) + body
                        self._ws.clear()
                    self._ws.append(tail)
                else:
                    body = "".join(self._ws) + body
                    self._ws.clear()
                return [FieldDelta(self._field, body, False)]  # type: ignore[arg-type]
        out: list[FieldDelta] = []
        self._text(text)
        self._flush(out)
        return out

    def _open(self, name: str, out: list[FieldDelta]) -> None:
        """A section called ``name`` starts: close the current field, open ``name`` if it is a new output."""
        self._close(out)
        if name in self._outputs and name not in self._opened:
            self._opened.add(name)
            self._field = name
            self._started = False

    def _close(self, out: list[FieldDelta]) -> None:
        if self._field is not None:
            out.append(FieldDelta(self._field, "".join(self._acc), True))
            self._acc.clear()
            self._ws.clear()
            self._field = None

    def _flush(self, out: list[FieldDelta]) -> None:
        if self._acc:
            out.append(FieldDelta(self._field, "".join(self._acc), False))  # type: ignore[arg-type]
            self._acc.clear()


class ChatFieldParser(_StrippedText, FieldParser):
    """Incremental parser for :class:`ChatAdapter` replies (see the module docstring for the grammar).

    Held back between calls: a suffix that may still become a header (``[``, ``[[ #``, ``[[ ## ans``...)
    and a field's trailing whitespace run. Plain text is skipped with ``str.find("[")``.
    """

    __slots__ = ("_pend", "_name", "_done")

    def __init__(self, outputs: Sequence[str]) -> None:
        super().__init__(outputs)
        self._pend = ""
        # While the held-back text is "[[ ## " plus a name still being written, the name's pieces
        # collect here instead, so a long name fed in small pieces is not re-scanned on every call.
        self._name: list[str] | None = None
        self._done = False

    def feed(self, text: str) -> list[FieldDelta]:
        if self._done or not text:
            return []
        if self._name is not None:
            if _WORD_RE.match(text).end() == len(text):  # type: ignore[union-attr]
                self._name.append(text)
                return []
            self._pend = _HEADER_START + "".join(self._name)
            self._name = None
        elif not self._pend and "[" not in text:  # fast path: plain text
            return [] if self._field is None else self._plain(text)
        out: list[FieldDelta] = []
        s = self._pend + text if self._pend else text
        self._pend = ""
        n = len(s)
        i = 0  # start of the text not yet passed on
        k = 0  # where to look for the next "["
        find = s.find
        while True:
            j = find("[", k)
            if j < 0:
                self._text(s[i:] if i else s)
                break
            m = HEADER_RE.match(s, j)
            if m is not None:
                self._text(s[i:j])
                self._open(m.group(1), out)
                i = k = m.end()
                continue
            if _HEADER_PREFIX_RE.match(s, j).end() == n:  # type: ignore[union-attr]
                self._text(s[i:j])
                if n - j > 6 and s.startswith(_HEADER_START, j) and _WORD_RE.match(s, j + 6).end() == n:  # type: ignore[union-attr]
                    self._name = [s[j + 6 :]]
                else:
                    self._pend = s[j:]
                break
            k = j + 1
        self._flush(out)
        return out

    def passthrough(self, text: str) -> str | None:
        if not self._pend and self._name is None and not self._done and "[" not in text:
            return self._plain_field(text)
        return None

    def finish(self) -> list[FieldDelta]:
        if self._done:
            return []
        self._done = True
        out: list[FieldDelta] = []
        if self._name is not None:
            self._pend = _HEADER_START + "".join(self._name)
            self._name = None
        if self._pend:  # an unfinished header is plain text
            self._text(self._pend)
            self._pend = ""
        self._close(out)
        return out


def parse_sections(completion: str) -> dict[str, str]:
    """``{name: stripped text}`` for every header in a chat reply, first occurrence of each name winning."""
    sections: dict[str, str] = {}
    matches = list(HEADER_RE.finditer(completion))
    for idx, m in enumerate(matches):
        start, end = m.end(), matches[idx + 1].start() if idx + 1 < len(matches) else len(completion)
        while end > start and completion[end - 1].isspace():  # strip by index: one copy of a long field
            end -= 1
        while start < end and completion[start].isspace():
            start += 1
        sections.setdefault(m.group(1), completion[start:end])
    return sections


def missing_fields_error(
    signature: type[Signature], found: Mapping[str, str], completion: str, *, marker: str
) -> AdapterParseError:
    missing = [name for name in signature.output_fields if name not in found]
    shown = ", ".join(marker.format(name=n) for n in missing)
    noun = "field" if len(missing) == 1 else "fields"
    return AdapterParseError(
        f"the model's reply lacks the output {noun} {', '.join(repr(n) for n in missing)} "
        f"(expected {shown}); the reply starts with: {_prompt.reply_start(completion)!r}",
        field=missing[0],
        partial={k: v for k, v in found.items() if k in signature.output_fields},
        raw=completion,
    )


class ChatAdapter(_prompt.PromptAdapter):
    """DSPy's chat format: every field is a ``[[ ## name ## ]]`` section, ending with ``[[ ## completed ## ]]``.

    Example::

        >>> from jupyter_stream.adapters import ChatAdapter
        >>> from jupyter_stream._signatures import Signature
        >>> sig = Signature("question -> reasoning, answer: int")
        >>> adapter = ChatAdapter()
        >>> reply = adapter.format_reply(sig, {"reasoning": "2 + 1", "answer": 3})
        >>> print(reply)
        [[ ## reasoning ## ]]
        2 + 1
        <BLANKLINE>
        [[ ## answer ## ]]
        3
        <BLANKLINE>
        [[ ## completed ## ]]
        >>> adapter.parse(sig, reply)
        {'reasoning': '2 + 1', 'answer': 3}
        >>> parser = adapter.field_parser(sig)
        >>> [d for chunk in ["[[ ## reas", "oning ## ]]\\n2 +", " 1\\n\\n[[ ## answer ## ]]\\n3"] for d in parser.feed(chunk)]
        [FieldDelta(field='reasoning', text='2 +', last=False), FieldDelta(field='reasoning', text=' 1', last=True), FieldDelta(field='answer', text='3', last=False)]
        >>> parser.finish()
        [FieldDelta(field='answer', text='', last=True)]
    """

    name = "chat"

    def system_message(self, signature: type[Signature]) -> str:
        """The system message: field descriptions, the section structure, then the instructions."""
        blocks = [f"{_prompt.header(n)}\n{{{n}}}" for n in signature.input_fields]
        blocks += [f"{_prompt.header(n)}\n{_prompt.placeholder(f)}" for n, f in signature.output_fields.items()]
        blocks.append(_prompt.header("completed"))
        structure = "\n\n".join([_prompt.STRUCTURE_INTRO, *blocks])
        return f"{_prompt.field_description_block(signature)}\n{structure}\n{_prompt.task_description(signature)}"

    def output_requirements(self, signature: type[Signature]) -> str:
        """The sentence ending the last user message: which sections to write, in which order."""
        fields = ", then ".join(
            f"`{_prompt.header(n)}`{_prompt.type_info(f)}" for n, f in signature.output_fields.items()
        )
        return (
            f"Respond with the corresponding output fields, starting with the field {fields}, "
            f"and then ending with the marker for `{_prompt.header('completed')}`."
        )

    def format_reply(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str:
        """The reply a model should write for ``outputs`` (fields missing from ``outputs`` are left out)."""
        parts = [
            f"{_prompt.header(n)}\n{_prompt.render_value(outputs[n])}" for n in signature.output_fields if n in outputs
        ]
        parts.append(_prompt.header("completed"))
        return "\n\n".join(parts)

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        sections = parse_sections(completion)
        if any(n not in sections for n in signature.output_fields):
            raise missing_fields_error(signature, sections, completion, marker="`[[ ## {name} ## ]]`")
        return {n: coerce_value(f, sections[n]) for n, f in signature.output_fields.items()}

    def field_parser(self, signature: type[Signature]) -> ChatFieldParser:
        return ChatFieldParser(list(signature.output_fields))
