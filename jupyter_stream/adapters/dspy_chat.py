"""DSPy's chat format as DSPy itself reads it: the incremental parser the DSPy bridge streams with.

DSPy's ``ChatAdapter.parse`` reads a reply line by line (``str.splitlines``: CRLF, CR and the other
Unicode line breaks count as one break each): a line whose stripped text starts with ``[[ ## name ## ]]``
opens the section ``name`` (what follows on that line, stripped, is its first line), every other line
belongs to the open section, a field's value is its FIRST section's lines joined with ``\\n`` and
stripped, and text before the first header or under other headers (``completed``) is dropped. Our own
:class:`~jupyter_stream.ChatAdapter` finds headers anywhere, so on messy replies the two disagree; a
DSPy program's chunks must join to the value DSPy parses, so the bridge uses this dialect.

One quirk is kept on purpose: on a header line with leading whitespace DSPy takes the text after the
header from the unstripped line at the stripped line's offset, so ``"  [[ ## a ## ]]x"`` starts ``a`` with
``"]]x"``.

Example::

    >>> from jupyter_stream.adapters.dspy_chat import DSPyChatAdapter
    >>> from jupyter_stream import Signature
    >>> sig = Signature("question -> answer")
    >>> parser = DSPyChatAdapter().field_parser(sig)
    >>> out = parser.feed("note [[ ## answer ## ]] no\\r\\n[[ ## answer ## ]] Par") + parser.feed("is  \\n\\n") + parser.finish()
    >>> "".join(d.text for d in out if d.field == "answer"), DSPyChatAdapter().parse(sig, "[[ ## answer ## ]] Paris  \\n\\n")
    ('Paris', {'answer': 'Paris'})
"""

from __future__ import annotations

import re
from typing import Any

from .._exceptions import AdapterParseError
from .._signatures import Signature
from .base import FieldDelta, FieldParser, coerce_value
from .chat import ChatAdapter

__all__ = ["DSPyChatAdapter", "DSPyChatFieldParser"]

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_OPEN = "[[ ## "
_CLOSE = " ## ]]"
_BREAKS = re.compile(r"(\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029])")
_NAME = re.compile(r"\w+")


def _could_be_header(stripped: str) -> bool:
    """True while ``stripped`` (a line's start, left-stripped) may still grow into ``[[ ## name ## ]]``."""
    if len(stripped) <= len(_OPEN):
        return _OPEN.startswith(stripped)
    if not stripped.startswith(_OPEN):
        return False
    rest = stripped[len(_OPEN):]
    name = _NAME.match(rest)
    if name is None:
        return False
    return _CLOSE.startswith(rest[name.end():])


class DSPyChatFieldParser(FieldParser):
    """Streams the fields of a reply in DSPy's chat format exactly as DSPy's parse reads them.

    Per delta the work is proportional to its length: a line's start is held back only while it may
    still be a header, and whitespace only while it may end its section (DSPy strips each value).
    """

    def __init__(self, fields: Any) -> None:
        self._fields = frozenset(fields)
        self._seen: set[str] = set()
        self._field: str | None = None  # the open section's field, when it is one to stream
        self._started = False  # the open field has emitted text (leading whitespace is dropped before)
        self._pending = ""  # whitespace held back: it is emitted only if text follows in the section
        self._line: str | None = ""  # the start of the current line while it may be a header, else None
        self._header_line = False  # on the header's own line: its trailing whitespace is dropped
        self._cr = False  # the last delta ended with "\r": a "\n" starting the next one is the same break

    # -------------------------------------------------------------------------------- contract
    def passthrough(self, text: str) -> str | None:
        field = self._field
        if (field is not None and self._started and self._line is None and not self._pending and text
                and text.isprintable() and not text[-1].isspace()):
            self._cr = False
            return field
        return None

    def feed(self, text: str) -> list[FieldDelta]:
        out: list[FieldDelta] = []
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        for i, part in enumerate(_BREAKS.split(text)):
            if i % 2:
                self._break(out)
            elif part:
                self._text(part, out)
        return out

    def finish(self) -> list[FieldDelta]:
        out: list[FieldDelta] = []
        if self._line:
            self._flush_line(out)
        self._close(out)
        return out

    # -------------------------------------------------------------------------------- the state machine
    def _text(self, part: str, out: list[FieldDelta]) -> None:
        if self._line is None:
            self._content(part, out)
            return
        line = self._line + part
        stripped = line.lstrip()
        header = _HEADER.match(stripped)
        if header is not None:
            self._open(header.group(1), out)
            rest = line[header.end():]  # DSPy's offset: from the unstripped line (see the module doc)
            self._line = None
            self._header_line = True
            rest = rest.lstrip()
            if rest:
                self._content(rest, out)
        elif _could_be_header(stripped) or not stripped:
            self._line = line
        else:
            self._line = ""
            self._flush_line(out, line)

    def _flush_line(self, out: list[FieldDelta], line: str | None = None) -> None:
        text = self._line if line is None else line
        self._line = None
        if text:
            self._content(text, out)

    def _break(self, out: list[FieldDelta]) -> None:
        if self._line:
            self._flush_line(out)
        if self._header_line:
            self._pending = ""  # DSPy strips the text after a header on its line
            self._header_line = False
        if self._started:
            self._pending += "\n"
        self._line = ""

    def _content(self, text: str, out: list[FieldDelta]) -> None:
        if self._line is not None:
            self._line = None
        field = self._field
        if field is None:
            return
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
        core = text.rstrip()
        if core:
            out.append(FieldDelta(field, self._pending + core, False))
            self._pending = text[len(core):]
        else:
            self._pending += text

    def _open(self, name: str, out: list[FieldDelta]) -> None:
        self._close(out)
        if name in self._fields and name not in self._seen:
            self._seen.add(name)
            self._field = name
        else:
            self._field = None
        self._started = False
        self._pending = ""

    def _close(self, out: list[FieldDelta]) -> None:
        if self._field is not None:
            out.append(FieldDelta(self._field, "", True))
        self._field = None
        self._pending = ""


class DSPyChatAdapter(ChatAdapter):
    """DSPy's chat format (ours writes DSPy's prompts word for word) read as DSPy reads it."""

    name = "dspy-chat"

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        sections: list[tuple[str | None, list[str]]] = [(None, [])]
        for line in completion.splitlines():
            header = _HEADER.match(line.strip())
            if header:
                rest = line[header.end():].strip()
                sections.append((header.group(1), [rest] if rest else []))
            else:
                sections[-1][1].append(line)
        outputs = signature.output_fields
        values: dict[str, Any] = {}
        for name, lines in sections:
            if name in outputs and name not in values:
                values[name] = coerce_value(outputs[name], "\n".join(lines).strip())
        missing = [n for n in outputs if n not in values]
        if missing:
            raise AdapterParseError(f"the reply has no section for field(s) {missing}", field=missing[0])
        return values

    def field_parser(self, signature: type[Signature]) -> DSPyChatFieldParser:
        return DSPyChatFieldParser(signature.output_fields)
