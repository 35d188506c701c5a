"""The XML adapter: every output field is an element, ``<answer>...</answer>``.

Reply grammar (what :meth:`XMLAdapter.parse` accepts and the field parser mirrors exactly), scanning
left to right:

* outside a field, the next ``<name>`` tag (exactly that: no attributes, no spaces) of an output field
  opens it; any other text or tag is ignored;
* inside a field, everything up to its own closing tag ``</name>`` is its text, other tags included;
  when the reply ends first, the field runs to the end of the reply (a cut-off reply);
* the text is ``.strip()``-ped but not entity-decoded: ``&lt;`` stays ``&lt;`` (models rarely escape,
  and decoding would turn a literal ``&amp;`` the model meant into ``&``);
* the first occurrence of a field wins; a later ``<name>...</name>`` element is skipped whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._signatures import Signature
from . import _prompt
from .base import FieldDelta, FieldParser, coerce_value
from .chat import _StrippedText, missing_fields_error

__all__ = ["XMLAdapter"]


def _open_tag_re(names: Sequence[str]) -> re.Pattern[str]:
    return re.compile("<(" + "|".join(re.escape(n) for n in names) + ")>")


def parse_elements(completion: str, names: Sequence[str]) -> dict[str, str]:
    """``{name: stripped text}`` for the output-field elements of a reply, first occurrence winning."""
    found: dict[str, str] = {}
    if not names:
        return found
    open_re = _open_tag_re(names)
    pos = 0
    while True:
        m = open_re.search(completion, pos)
        if m is None:
            return found
        name = m.group(1)
        close_tag = f"</{name}>"
        close = completion.find(close_tag, m.end())
        end = close if close >= 0 else len(completion)
        found.setdefault(name, completion[m.end() : end].strip())
        if close < 0:
            return found
        pos = close + len(close_tag)


class XMLFieldParser(_StrippedText, FieldParser):
    """Incremental parser for :class:`XMLAdapter` replies (see the module docstring for the grammar).

    Held back between calls: a suffix that may still become an opening tag (outside fields) or the
    field's closing tag (inside one), and a field's trailing whitespace run.
    """

    __slots__ = ("_open_re", "_prefixes", "_maxlen", "_close_tag", "_pend", "_done")

    def __init__(self, outputs: Sequence[str]) -> None:
        super().__init__(outputs)
        self._open_re = _open_tag_re(outputs) if outputs else re.compile(r"(?!)")
        tags = [f"<{n}>" for n in outputs]
        self._prefixes = frozenset(t[:k] for t in tags for k in range(1, len(t)))
        self._maxlen = max((len(t) for t in tags), default=0)
        self._close_tag: str | None = None  # set while inside an element (emitted or skipped)
        self._pend = ""
        self._done = False

    def passthrough(self, text: str) -> str | None:
        if not self._done and not self._pend and self._close_tag is not None and "<" not in text:
            return self._plain_field(text)
        return None

    def feed(self, text: str) -> list[FieldDelta]:
        if self._done or not text:
            return []
        if not self._pend and self._close_tag is not None and "<" not in text:  # fast path: inside a field
            return [] if self._field is None else self._plain(text)
        out: list[FieldDelta] = []
        s = self._pend + text if self._pend else text
        self._pend = ""
        n = len(s)
        i = 0
        while i < n:
            tag = self._close_tag
            if tag is None:  # outside: look for an opening tag
                j = s.find("<", i)
                m = None
                while j >= 0:
                    m = self._open_re.match(s, j)
                    if m is not None:
                        break
                    if n - j < self._maxlen and s[j:] in self._prefixes:
                        self._pend = s[j:]
                        break
                    j = s.find("<", j + 1)
                if m is None:
                    break
                name = m.group(1)
                self._open(name, out)  # opens only a new output field; a repeat is skipped
                self._close_tag = f"</{name}>"
                i = m.end()
            else:  # inside: look for the closing tag
                k = s.find(tag, i)
                if k >= 0:
                    self._text(s[i:k])
                    self._close(out)
                    self._close_tag = None
                    i = k + len(tag)
                    continue
                r = s.rfind("<", max(i, n - len(tag) + 1))
                if r >= 0 and tag.startswith(s[r:]):
                    self._text(s[i:r])
                    self._pend = s[r:]
                else:
                    self._text(s[i:])
                break
        self._flush(out)
        return out

    def finish(self) -> list[FieldDelta]:
        if self._done:
            return []
        self._done = True
        out: list[FieldDelta] = []
        if self._pend and self._close_tag is not None:  # half a closing tag is text of the cut-off field
            self._text(self._pend)
        self._pend = ""
        self._close(out)
        self._close_tag = None
        return out


class XMLAdapter(_prompt.PromptAdapter):
    """Each output field is an XML element, ``<answer>Paris</answer>``; its text streams between the tags.

    Example::

        >>> from jupyter_stream.adapters import XMLAdapter
        >>> from jupyter_stream._signatures import Signature
        >>> sig = Signature("question -> reasoning, answer: int")
        >>> adapter = XMLAdapter()
        >>> print(adapter.format_reply(sig, {"reasoning": "2 + 1", "answer": 3}))
        <reasoning>2 + 1</reasoning>
        <answer>3</answer>
        >>> adapter.parse(sig, "<reasoning> 2 + 1 </reasoning>\\n<answer>3")  # cut off: runs to the end
        {'reasoning': '2 + 1', 'answer': 3}
        >>> parser = adapter.field_parser(sig)
        >>> parser.feed("<reasoning>2 + 1</reas") + parser.feed("oning>\\n<answer>3</answer>")
        [FieldDelta(field='reasoning', text='2 + 1', last=False), FieldDelta(field='reasoning', text='', last=True), FieldDelta(field='answer', text='3', last=True)]
    """

    name = "xml"

    def system_message(self, signature: type[Signature]) -> str:
        """The system message: field descriptions, input blocks and one XML element per output, the instructions."""
        return _prompt.system_message_with_outputs(
            signature, "Outputs will be XML elements, one per field, in this order:",
            "\n\n".join(f"<{n}>\n{_prompt.placeholder(f)}\n</{n}>" for n, f in signature.output_fields.items()),
        )

    def output_requirements(self, signature: type[Signature]) -> str:
        """The sentence ending the last user message."""
        fields = ", then ".join(f"`<{n}>`{_prompt.type_info(f)}" for n, f in signature.output_fields.items())
        return f"Respond with the corresponding output fields as XML elements, starting with {fields}."

    def format_reply(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str:
        """The reply a model should write: one element per output field, one per line."""
        return "\n".join(
            f"<{n}>{_prompt.render_value(outputs[n])}</{n}>" for n in signature.output_fields if n in outputs
        )

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        found = parse_elements(completion, list(signature.output_fields))
        if any(n not in found for n in signature.output_fields):
            raise missing_fields_error(signature, found, completion, marker="<{name}>...</{name}>")
        return {n: coerce_value(f, found[n]) for n, f in signature.output_fields.items()}

    def field_parser(self, signature: type[Signature]) -> XMLFieldParser:
        return XMLFieldParser(list(signature.output_fields))
