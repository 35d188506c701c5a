"""The JSON adapter: the reply is one JSON object whose keys are the output fields.

Reply grammar (what :meth:`JSONAdapter.parse` accepts and the field parser mirrors):

* the object starts at the first ``{`` of the reply; anything before it (a ```json fence, prose
  without braces) and anything after its closing ``}`` is ignored;
* the first occurrence of a key wins; keys that are not output fields are skipped;
* a string value is its decoded text, exactly (no stripping); any other value is its raw JSON text
  for a ``str`` field, and is validated into the field's type otherwise;
* a reply cut off *between* values (no closing brace, a dangling comma, half a key) is accepted when
  every output field is complete; a reply cut off *inside* a value is an error.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._exceptions import AdapterParseError
from .._signatures import Signature
from . import _prompt
from .base import FieldDelta, FieldParser, coerce_value
from .chat import missing_fields_error

__all__ = ["JSONAdapter"]

_DECODER = _json.JSONDecoder(strict=False)  # models put raw newlines in strings
_scan_once = _DECODER.scan_once
_scanstring = _json.decoder.scanstring
_WS_RE = re.compile(r"[ \t\n\r]*")
_STR_SPECIAL_RE = re.compile(r'["\\]')
_CONT_SPECIAL_RE = re.compile(r'[\[\]{}"]')
_SCALAR_END_RE = re.compile(r"[ \t\n\r,\]}]")
_AFTER_RE = re.compile(r"[,}]")
_KEYWAIT_RE = re.compile(r'["}]')
_HEX4_RE = re.compile(r"[0-9a-fA-F]{4}")
# A run of string content json.decoder.scanstring decodes exactly as the step-by-step decoder would:
# plain characters and complete escapes, a high surrogate only together with its low half.
_STR_RUN_RE = re.compile(
    r'(?:[^"\\]+|\\["\\/bfnrt]|\\u(?![dD][89abAB])[0-9a-fA-F]{4}'
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})*"
)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

# Parser states.
_PRE, _KEYWAIT, _KEY, _COLON, _VALWAIT, _STR, _CONT, _SCALAR, _AFTER, _DONE, _OPEN = range(11)
# Where the reply's object starts: the first "{" whose next non-space character opens a key. Prose before
# the object may hold braces of its own ("the set {a, b}"); both parsers skip them alike.
_OBJECT_START_RE = re.compile(r'\{[ \t\n\r]*"')


def _decode_escape(s: str, j: int, n: int) -> tuple[str, int] | None:
    """Decode the escape starting at ``s[j] == "\\\\"``: ``(text, end)``, or None if more text is needed.

    Mirrors ``json.decoder.scanstring``: a high surrogate followed by a low-surrogate escape is joined.
    Invalid escapes (which make ``parse`` fail) pass through raw.
    """
    if j + 1 >= n:
        return None
    c = s[j + 1]
    if c != "u":
        v = _SIMPLE_ESCAPES.get(c)
        return (v, j + 2) if v is not None else (s[j : j + 2], j + 2)
    if j + 6 > n:
        return None
    if not _HEX4_RE.fullmatch(s, j + 2, j + 6):
        return s[j : j + 2], j + 2
    cp = int(s[j + 2 : j + 6], 16)
    if 0xD800 <= cp <= 0xDBFF:
        nxt = s[j + 6 : j + 8]
        if len(nxt) < 2 and "\\u".startswith(nxt):
            return None
        if nxt == "\\u":
            if j + 12 > n:
                return None
            if _HEX4_RE.fullmatch(s, j + 8, j + 12):
                cp2 = int(s[j + 8 : j + 12], 16)
                if 0xDC00 <= cp2 <= 0xDFFF:
                    return chr(0x10000 + (((cp - 0xD800) << 10) | (cp2 - 0xDC00))), j + 12
    return chr(cp), j + 6


class JSONFieldParser(FieldParser):
    """Incremental parser for :class:`JSONAdapter` replies: a small JSON state machine.

    String values stream decoded (escapes may be split anywhere; at most 12 characters are held back
    for an unfinished escape or surrogate pair); other values stream their raw JSON text, with nested
    brackets and strings tracked. Plain runs are skipped with precompiled regexes.
    """

    __slots__ = (
        "_outputs", "_opened", "_state", "_pend", "_key", "_field", "_acc",
        "_depth", "_in_str", "_esc", "_done",
    )

    def __init__(self, outputs: Sequence[str]) -> None:
        self._outputs = frozenset(outputs)
        self._opened: set[str] = set()
        self._state = _PRE
        self._pend = ""  # an unfinished escape (string state) or a lone backslash (key state)
        self._key: list[str] = []  # raw text of the key being read
        self._field: str | None = None  # the output field whose value is being read (None: skip it)
        self._acc: list[str] = []
        self._depth = 0  # container nesting of a non-string value
        self._in_str = False  # inside a string nested in a container
        self._esc = False  # the next character of a nested string is escaped
        self._done = False

    def _emit(self, t: str) -> None:
        if self._field is not None and t:
            self._acc.append(t)

    def _open_value(self) -> None:
        raw = "".join(self._key)
        self._key.clear()
        key = raw
        if "\\" in raw:
            try:
                key = _scanstring(raw + '"', 0, False)[0]
            except ValueError:
                pass
        if key in self._outputs and key not in self._opened:
            self._opened.add(key)
            self._field = key
        else:
            self._field = None

    def _close(self, out: list[FieldDelta]) -> None:
        if self._field is not None:
            out.append(FieldDelta(self._field, "".join(self._acc), True))
            self._acc.clear()
            self._field = None

    def passthrough(self, text: str) -> str | None:
        if self._state == _STR and text and not self._pend and not self._done and '"' not in text and "\\" not in text:
            return self._field
        return None

    def feed(self, text: str) -> list[FieldDelta]:
        if self._done or not text:
            return []
        state = self._state
        if state == _STR and not self._pend and '"' not in text and "\\" not in text:  # fast path
            if self._field is None:
                return []
            return [FieldDelta(self._field, text, False)]
        out: list[FieldDelta] = []
        s = self._pend + text if self._pend else text
        self._pend = ""
        n = len(s)
        i = 0
        while i < n:
            if state == _STR:
                j = _STR_RUN_RE.match(s, i).end()  # type: ignore[union-attr]
                if j > i:  # plain text and complete escapes: decoded in one C call
                    if self._field is not None:
                        seg = s[i:j]
                        self._acc.append(_scanstring(seg + '"', 0, False)[0] if "\\" in seg else seg)
                    i = j
                    if i >= n:
                        break
                if s[i] == '"':
                    self._close(out)
                    state = _AFTER
                    i += 1
                    continue
                # A backslash the run did not take: an unfinished or invalid escape, or a high
                # surrogate whose low half is not (yet) there.
                r = _decode_escape(s, i, n)
                if r is None:
                    self._pend = s[i:]
                    break
                self._emit(r[0])
                i = r[1]
            elif state == _CONT:
                start = i
                closed = False
                while i < n:
                    if self._esc:
                        self._esc = False
                        i += 1
                    elif self._in_str:
                        m = _STR_SPECIAL_RE.search(s, i)
                        if m is None:
                            i = n
                        else:
                            i = m.end()
                            if s[m.start()] == '"':
                                self._in_str = False
                            else:
                                self._esc = True
                    else:
                        m = _CONT_SPECIAL_RE.search(s, i)
                        if m is None:
                            i = n
                        else:
                            i = m.end()
                            c = s[m.start()]
                            if c == '"':
                                self._in_str = True
                            elif c == "[" or c == "{":
                                self._depth += 1
                            else:
                                self._depth -= 1
                                if self._depth <= 0:
                                    closed = True
                                    break
                self._emit(s[start:i])
                if closed:
                    self._close(out)
                    state = _AFTER
            elif state == _SCALAR:
                m = _SCALAR_END_RE.search(s, i)
                if m is None:
                    self._emit(s[i:])
                    break
                self._emit(s[i : m.start()])
                self._close(out)
                state = _AFTER
                i = m.start()
            elif state == _PRE:
                j = s.find("{", i)
                if j < 0:
                    break
                state = _OPEN
                i = j + 1
            elif state == _OPEN:  # after a "{": the object if a key follows, else prose (look further)
                i = _WS_RE.match(s, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                if s[i] == '"':
                    state = _KEY
                    i += 1
                else:
                    state = _PRE
            elif state == _KEYWAIT:  # lenient: skips anything but a key or the closing brace
                m = _KEYWAIT_RE.search(s, i)
                if m is None:
                    break
                i = m.end()
                state = _KEY if s[m.start()] == '"' else _DONE
            elif state == _KEY:
                m = _STR_SPECIAL_RE.search(s, i)
                if m is None:
                    self._key.append(s[i:])
                    break
                j = m.start()
                if s[j] == '"':
                    self._key.append(s[i:j])
                    state = _COLON
                    i = j + 1
                elif j + 1 >= n:
                    self._key.append(s[i:j])
                    self._pend = "\\"
                    break
                else:
                    self._key.append(s[i : j + 2])
                    i = j + 2
            elif state == _COLON:
                j = s.find(":", i)
                if j < 0:
                    break
                state = _VALWAIT
                i = j + 1
            elif state == _VALWAIT:
                i = _WS_RE.match(s, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                c = s[i]
                if c in ",}]":  # no value: invalid JSON, nothing to open
                    self._key.clear()
                    state = _AFTER
                    continue
                self._open_value()
                if c == '"':
                    state = _STR
                    i += 1
                elif c == "{" or c == "[":
                    state = _CONT
                    self._depth, self._in_str, self._esc = 1, False, False
                    self._emit(c)
                    i += 1
                else:
                    state = _SCALAR
            elif state == _AFTER:
                m = _AFTER_RE.search(s, i)
                if m is None:
                    break
                i = m.end()
                state = _KEYWAIT if s[m.start()] == "," else _DONE
            else:  # _DONE: the object is closed; the rest is ignored
                break
        self._state = state
        if self._acc:
            out.append(FieldDelta(self._field, "".join(self._acc), False))  # type: ignore[arg-type]
            self._acc.clear()
        return out

    def finish(self) -> list[FieldDelta]:
        if self._done:
            return []
        self._done = True
        out: list[FieldDelta] = []
        self._pend = ""  # half an escape in a cut-off string: the reply is invalid anyway
        self._close(out)
        self._state = _DONE
        return out


def _invalid(completion: str, why: str, pos: int, field: str | None = None) -> AdapterParseError:
    return AdapterParseError(
        f"the model's reply is not a valid JSON object ({why} at character {pos}); "
        f"the reply starts with: {_prompt.reply_start(completion)!r}",
        field=field,
        raw=completion,
    )


def scan_object(completion: str, outputs: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """``{key: (value, raw JSON text)}`` for the reply's JSON object (it starts at the first ``{`` followed by a
    key; else at the first ``{``), first occurrence of a key winning.

    Stops quietly where the reply is cut off between values; raises :class:`AdapterParseError` for
    invalid JSON or a value cut off in the middle.
    """
    m = _OBJECT_START_RE.search(completion)
    start = m.start() if m is not None else completion.find("{")
    if start < 0:
        raise AdapterParseError(
            f"the model's reply contains no JSON object; the reply starts with: {_prompt.reply_start(completion)!r}",
            raw=completion,
        )
    text, n = completion, len(completion)
    found: dict[str, tuple[Any, str]] = {}
    pos = _WS_RE.match(text, start + 1).end()  # type: ignore[union-attr]
    if pos < n and text[pos] == "}":
        return found
    while pos < n:
        if text[pos] != '"':
            raise _invalid(completion, "expected a key in double quotes", pos)
        try:
            key, pos = _scanstring(text, pos + 1, False)
        except ValueError:  # cut off inside the key (or a bad escape in it): stop there
            return found
        pos = _WS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return found
        if text[pos] != ":":
            raise _invalid(completion, "expected ':' after a key", pos)
        pos = _WS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
        if pos >= n:
            return found
        field = key if key in outputs and key not in found else None
        try:
            value, end = _scan_once(text, pos)
        except (StopIteration, ValueError, RecursionError):
            raise _invalid(completion, f"invalid or cut-off value for key {key!r}", pos, field) from None
        found.setdefault(key, (value, text[pos:end]))
        pos = _WS_RE.match(text, end).end()  # type: ignore[union-attr]
        if pos >= n:
            return found
        c = text[pos]
        if c == "}":
            return found
        if c != ",":
            raise _invalid(completion, "expected ',' or '}' after a value", pos)
        pos = _WS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
        if pos < n and text[pos] == "}":  # a trailing comma
            return found
    return found


class JSONAdapter(_prompt.PromptAdapter):
    """The reply is a JSON object, ``{"reasoning": "...", "answer": 3}``; string values stream decoded.

    Example::

        >>> from jupyter_stream.adapters import JSONAdapter
        >>> from jupyter_stream._signatures import Signature
        >>> sig = Signature("question -> reasoning, answer: int")
        >>> adapter = JSONAdapter()
        >>> reply = adapter.format_reply(sig, {"reasoning": 'say "hi"', "answer": 3})
        >>> reply
        '{"reasoning": "say \\\\"hi\\\\"", "answer": 3}'
        >>> adapter.parse(sig, "```json\\n" + reply + "\\n```")
        {'reasoning': 'say "hi"', 'answer': 3}
        >>> parser = adapter.field_parser(sig)
        >>> parser.feed('{"reasoning": "say \\\\') + parser.feed('"hi\\\\"", "answer": 3}')
        [FieldDelta(field='reasoning', text='say ', last=False), FieldDelta(field='reasoning', text='"hi"', last=True), FieldDelta(field='answer', text='3', last=True)]
    """

    name = "json"

    def system_message(self, signature: type[Signature]) -> str:
        """The system message: field descriptions, the input blocks and the JSON object, the instructions."""
        skeleton = {n: _prompt.placeholder(f) for n, f in signature.output_fields.items()}
        return _prompt.system_message_with_outputs(
            signature, "Outputs will be a JSON object with the following fields.",
            _json.dumps(skeleton, indent=2, ensure_ascii=False),
        )

    def output_requirements(self, signature: type[Signature]) -> str:
        """The sentence ending the last user message."""
        fields = ", then ".join(f"`{n}`{_prompt.type_info(f)}" for n, f in signature.output_fields.items())
        return f"Respond with a JSON object in the following order of fields: {fields}."

    def format_reply(self, signature: type[Signature], outputs: Mapping[str, Any]) -> str:
        """The reply a model should write: one JSON line, output fields in signature order."""
        obj = {n: _prompt.jsonable(outputs[n]) for n in signature.output_fields if n in outputs}
        return _json.dumps(obj, ensure_ascii=False)

    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        outputs = signature.output_fields
        found = scan_object(completion, outputs)
        if any(n not in found for n in outputs):
            texts = {k: v if isinstance(v, str) else raw for k, (v, raw) in found.items()}
            raise missing_fields_error(signature, texts, completion, marker='"{name}"')
        result: dict[str, Any] = {}
        for n, f in outputs.items():
            value, raw = found[n]
            if f.annotation is str:
                result[n] = value if isinstance(value, str) else raw
            else:
                result[n] = coerce_value(f, value, from_json=True)
        return result

    def field_parser(self, signature: type[Signature]) -> JSONFieldParser:
        return JSONFieldParser(list(signature.output_fields))
