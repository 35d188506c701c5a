"""The demo LM's brain: a fast tokenizer and an automatic responder that answers any signature.

:func:`tokenize` cuts text into deltas the size real models stream (gpt-4o-mini style ~1-token pieces),
:func:`chunk_text` into Gemini-style multi-token pieces, and :func:`auto_reply` writes a plausible,
deterministic reply to a chat request built by any of the project's three adapters (chat ``[[ ## f ## ]]``
markers, XML tags, or a JSON object), reading the output fields and their types from the system message.

Example::

    >>> from jupyter_stream.demo.responder import tokenize, auto_reply
    >>> tokenize("Hello, wonderful world!\\n")
    ['Hello', ',', ' wond', 'erfu', 'l', ' world', '!', '\\n']
    >>> system = "Your input fields are:\\n1. `question` (str)\\nYour output fields are:\\n1. `answer` (int)\\n" \\
    ...          "... end with [[ ## completed ## ]]"
    >>> print(auto_reply([{"role": "system", "content": system},
    ...                   {"role": "user", "content": "[[ ## question ## ]]\\nHow many?"}]))
    [[ ## answer ## ]]
    42
    <BLANKLINE>
    [[ ## completed ## ]]
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "OutputSpec",
    "auto_reply",
    "chunk_text",
    "count_tokens",
    "detect_format",
    "message_text",
    "parse_fields_block",
    "tokenize",
]

# One alternative per token kind; the last one matches any single character so that the tokens always
# join back to the text exactly (no alternative can match the empty string).
_TOKEN_RE = re.compile(
    r"\r?\n"  # a newline is its own token
    r"| ?[^\W\d_]+"  # a word (letters) with its leading space
    r"| ?\d{1,3}"  # numbers in groups of at most 3 digits, like gpt-4o
    r"| ?[^\w\s]{1,2}"  # punctuation, in runs of at most 2
    r"|[^\S\n]+(?!\S)"  # a run of spaces not directly before a word
    r"|[\s\S]"  # anything else, one character at a time
)
_PIECE = 4  # long words are cut into pieces of at most this many characters
_LONG = 6  # words of more letters than this are "long"


def tokenize(text: str) -> list[str]:
    """Split ``text`` into gpt-4o-mini-like stream deltas; ``"".join(tokenize(t)) == t`` always.

    Words keep their leading space, words longer than 6 letters are cut into pieces of at most 4
    letters (the leading space rides on the first piece), punctuation is separate and every newline is
    its own token. Regex based: about a microsecond per token.

        >>> tokenize("Let's go: 12345 apples.\\n\\n")
        ['Let', "'", 's', ' go', ':', ' 123', '45', ' apples', '.', '\\n', '\\n']
    """
    out: list[str] = []
    append = out.append
    for tok in _TOKEN_RE.findall(text):
        n = len(tok)
        if n <= _LONG or (n == _LONG + 1 and tok[0] == " "):
            append(tok)
            continue
        start = _PIECE + 1 if tok[0] == " " else _PIECE
        append(tok[:start])
        for i in range(start, n, _PIECE):
            append(tok[i : i + _PIECE])
    return out


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Split ``text`` into Gemini-style deltas of about ``chunk_chars`` characters, cut at token edges.

        >>> chunk_text("The quick brown fox jumps over the lazy dog.", 12)
        ['The quick brown', ' fox jumps over', ' the lazy dog', '.']
    """
    if chunk_chars <= 0:
        return tokenize(text)
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for tok in tokenize(text):
        cur.append(tok)
        size += len(tok)
        if size >= chunk_chars:
            out.append("".join(cur))
            cur, size = [], 0
    if cur:
        out.append("".join(cur))
    return out


def count_tokens(text: str) -> int:
    """How many tokens :func:`tokenize` makes of ``text`` (used for the ``usage`` numbers)."""
    return len(tokenize(text)) if text else 0


# --------------------------------------------------------------------------------------------------
# Reading the request
# --------------------------------------------------------------------------------------------------


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message, whether ``content`` is a string or a list of content parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


class OutputSpec:
    """One field read from the ``Your ... fields are:`` block: its name and its type as written."""

    __slots__ = ("name", "type_name")

    def __init__(self, name: str, type_name: str) -> None:
        self.name, self.type_name = name, type_name

    def __repr__(self) -> str:
        return f"OutputSpec({self.name!r}, {self.type_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputSpec) and (self.name, self.type_name) == (other.name, other.type_name)


_FIELD_LINE_RE = re.compile(r"^\s*\d+\.\s*`([^`]+)`\s*(?:\((.*?)\))?(?=:\s|:$|\s*$)", re.M)


def parse_fields_block(system: str, which: str = "output") -> list[OutputSpec]:
    """The fields listed under ``Your {which} fields are:`` in a system message, in order.

        >>> parse_fields_block("Your input fields are:\\n1. `q` (str)\\nYour output fields are:\\n"
        ...                    "1. `reasoning` (str)\\n2. `answer` (int): a number\\n\\nAll interactions...")
        [OutputSpec('reasoning', 'str'), OutputSpec('answer', 'int')]
    """
    head = f"Your {which} fields are:"
    start = system.find(head)
    if start < 0:
        return []
    start += len(head)
    # The block runs until the other block's heading or the first blank line after at least one field.
    end = len(system)
    for stop in ("Your input fields are:", "Your output fields are:", "\n\n"):
        j = system.find(stop, start)
        if j >= 0:
            end = min(end, j)
    block = system[start:end]
    return [OutputSpec(m.group(1), (m.group(2) or "str").strip()) for m in _FIELD_LINE_RE.finditer(block)]


def detect_format(system: str, request: Mapping[str, Any] | None = None) -> str | None:
    """Which adapter wrote the prompt: ``"chat"``, ``"xml"``, ``"json"``, or None when unknown.

    ``[[ ## completed ## ]]`` in the system message means chat, else "XML" means XML (DSPy's XMLAdapter
    says so in the last user message), else "JSON" (or a ``response_format`` asking for JSON) means JSON.
    """
    if "[[ ## completed ## ]]" in system:
        return "chat"
    messages = (request or {}).get("messages") or []
    last = messages[-1].get("content") if messages and isinstance(messages[-1], Mapping) else None
    if "XML" in system or (isinstance(last, str) and "XML tags" in last):
        return "xml"
    rf = (request or {}).get("response_format")
    if "JSON" in system or (isinstance(rf, Mapping) and rf.get("type") in ("json_object", "json_schema")):
        return "json"
    return None


_CHAT_INPUT_RE = re.compile(r"\[\[ ## (\w+) ## \]\]\n?(.*?)(?=\n*\[\[ ## |\n\nRespond with|\Z)", re.S)
_XML_INPUT_RE = re.compile(r"<(\w+)>\n?(.*?)\n?</\1>", re.S)
_JSON_INPUT_RE = re.compile(r"\{.*\}", re.S)


def _input_values(user: str, names: Sequence[str]) -> dict[str, str]:
    """Best-effort extraction of the input values from the last user message, in any adapter's format."""
    found: dict[str, str] = {}
    for m in _CHAT_INPUT_RE.finditer(user):
        found.setdefault(m.group(1), m.group(2).strip())
    for m in _XML_INPUT_RE.finditer(user):
        found.setdefault(m.group(1), m.group(2).strip())
    if not found:
        m = _JSON_INPUT_RE.search(user)
        if m:
            try:
                obj = json.loads(m.group(0))
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                for k, v in obj.items():
                    found.setdefault(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    if names:
        picked = {n: found[n] for n in names if n in found}
        if picked:
            return picked
    return found


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# --------------------------------------------------------------------------------------------------
# Writing values
# --------------------------------------------------------------------------------------------------

_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def _str_value(name: str, topic: str, ref: str, seed: int, notes: str = "") -> str:
    lname = name.lower()
    if "reason" in lname or "rationale" in lname or "thought" in lname:
        return (
            f'Let me think step by step about "{topic}".{notes} '
            f"The key facts point one way, so I check them against each other before answering (ref {ref})."
        )
    if "answer" in lname or "response" in lname or "output" in lname or "result" in lname:
        return f'The answer to "{topic}" is the demo value {ref}.'
    if "summary" in lname or "title" in lname:
        return f"A short {name} of {topic} ({ref})."
    templates = (
        "The {name} for \"{topic}\" is worked out here ({ref}).",
        "Here is the {name}: it follows from \"{topic}\" ({ref}).",
        "For \"{topic}\", the {name} is simple and clear ({ref}).",
    )
    return templates[seed % len(templates)].format(name=name.replace("_", " "), topic=topic, ref=ref)


def _split_top_level(inner: str, sep: str) -> list[str]:
    """Split a type expression on ``sep`` outside brackets: ``"dict[str, int], str"`` -> two parts."""
    parts, depth, cur = [], 0, []
    for ch in inner:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _first_real_member(t: str) -> str:
    """``Optional[X]``, ``Union[X, None]``, ``UnionType[X, None]``, ``X | None`` -> ``X``."""
    for _ in range(5):  # nested optionals
        t = t.strip()
        members: list[str] | None = None
        for head in ("Optional[", "Union[", "UnionType[", "typing.Optional[", "typing.Union["):
            if t.startswith(head) and t.endswith("]"):
                members = _split_top_level(t[len(head) : -1], ",")
                break
        if members is None:
            members = _split_top_level(t, "|")
            if len(members) <= 1:
                return t
        real = [m for m in members if m not in ("None", "NoneType")]
        t = real[0] if real else "str"
    return t


def _value(
    type_name: str, name: str, topic: str, ref: str, seed: int, notes: str = "", schema: dict[str, Any] | None = None,
) -> Any:
    """A Python value of the written type (``str``, ``int``, ``list[str]``, ``Literal['a', 'b']``, ...); for other
    types (pydantic models, ...), one made from the ``schema`` the prompt gives, if any."""
    t = _first_real_member(type_name)
    if t == "str":
        return _str_value(name, topic, ref, seed, notes)
    if t == "int":
        return 42
    if t == "float":
        return 3.14
    if t == "bool":
        return True
    if t.startswith("Literal[") and t.endswith("]"):
        try:
            options = ast.literal_eval("[" + t[len("Literal[") : -1] + "]")
            if options:
                return options[0]
        except (ValueError, SyntaxError):
            pass
        return ""
    if t.startswith(("list[", "List[")) and t.endswith("]"):
        inner = t[t.index("[") + 1 : -1].strip()
        if inner == "str":
            start = seed % len(_WORDS)
            return [f"{_WORDS[(start + i) % len(_WORDS)]} {ref}" for i in range(3)]
        if inner == "int":
            return [1, 2, 3]
        if inner == "float":
            return [0.5, 1.5]
    if schema is not None:
        return _from_schema(schema, schema.get("$defs", {}), name, topic, ref, seed, 0)
    if t == "list" or t.startswith(("list[", "List[")):
        return []
    return {}


_SCHEMA_NOTE = "must adhere to the schema: "


def _field_schemas(system: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The JSON schema each output field's note gives (``{name}  # note: must adhere to the schema: {...}``),
    as written by any of the three adapters (inside a JSON string for the JSON adapter)."""
    out: dict[str, dict[str, Any]] = {}
    decoder = json.JSONDecoder()
    for name in names:
        at = system.find("{" + name + "}")
        while at >= 0:
            line_end = system.find("\n", at)
            line = system[at : line_end if line_end >= 0 else len(system)]
            k = line.find(_SCHEMA_NOTE)
            if k >= 0:
                rest = line[k + len(_SCHEMA_NOTE) :]
                for text in (rest, _unescape(rest)):
                    try:
                        schema = decoder.raw_decode(text)[0]
                    except ValueError:
                        continue
                    if isinstance(schema, dict):
                        out[name] = schema
                    break
                break
            at = system.find("{" + name + "}", at + 1)
    return out


def _unescape(text: str) -> str:
    """The content of a JSON string that starts at ``text`` (up to its closing quote), decoded."""
    try:
        return json.decoder.scanstring(text, 0)[0]  # type: ignore[attr-defined]
    except ValueError:
        return text


def _from_schema(schema: Any, defs: Mapping[str, Any], name: str, topic: str, ref: str, seed: int, depth: int) -> Any:
    """A value that validates against a (pydantic-made) JSON schema: required and optional properties,
    ``$ref`` to ``$defs``, enums, unions, arrays; text fields get the usual demo sentence."""
    if not isinstance(schema, Mapping) or depth > 8:
        return None
    if isinstance(schema.get("$ref"), str):
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1])
        return _from_schema(target, defs, name, topic, ref, seed, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or () if not (isinstance(o, Mapping) and o.get("type") == "null")]
        if options:
            return _from_schema(options[0], defs, name, topic, ref, seed, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _from_schema(v, defs, k, topic, ref, seed + i, depth + 1) for i, (k, v) in enumerate(props.items())}
    if t == "array":
        count = max(1, int(schema.get("minItems", 2)))
        return [_from_schema(schema.get("items", {}), defs, name, topic, ref, seed + i, depth + 1) for i in range(count)]
    if t == "integer":
        return max(42, int(schema.get("minimum", 0)))
    if t == "number":
        return 3.14
    if t == "boolean":
        return True
    if t == "null":
        return None
    if t == "string":
        fmt = schema.get("format")
        if fmt in _STRING_FORMATS:
            return _STRING_FORMATS[fmt]
        return _str_value(name, topic, ref, seed) if depth <= 1 else f"{name.replace('_', ' ')} {ref}"
    return schema.get("default")


_STRING_FORMATS = {
    "date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "12:00:00", "email": "demo@example.com",
    "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000",
}


def _render_text(value: Any) -> str:
    """A value as the chat and XML formats write it: text as is, booleans as True/False, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value, ensure_ascii=False)


_TOOL_RE = re.compile(r"\(\d+\) (\w+), whose description is <desc>.*?</desc>\. It takes arguments (\{.*?\})\.\n", re.S)


def _agent_step(system: str, user: str, topic: str) -> dict[str, Any]:
    r"""An agent's next step (DSPy ReAct's ``next_thought``/``next_tool_name``/``next_tool_args``): the
    listed tools one after the other, each asked about the topic, then ``finish``.

        >>> system = "(1) search, whose description is <desc>Search.</desc>. It takes arguments {'query': {'type': 'string'}}.\n"
        >>> _agent_step(system, "[[ ## trajectory ## ]]\n", "Paris")["next_tool_args"]
        {'query': 'Paris'}
        >>> _agent_step(system, "[[ ## thought_0 ## ]]\n...", "Paris")["next_tool_name"]
        'finish'
    """
    tools: list[tuple[str, dict[str, Any]]] = []
    for name, args in _TOOL_RE.findall(system):
        try:
            schema = ast.literal_eval(args)
        except (ValueError, SyntaxError):
            schema = {}
        if name != "finish":
            tools.append((name, schema if isinstance(schema, dict) else {}))
    done = len(set(re.findall(r"thought_(\d+)", user)))
    if done < len(tools):
        name, schema = tools[done]
        return {"next_thought": f'To answer, I will ask {name} about "{topic}".', "next_tool_name": name,
                "next_tool_args": {arg: topic for arg in schema}}
    return {"next_thought": "I have what I need to answer.", "next_tool_name": "finish", "next_tool_args": {}}


def auto_reply(messages: Sequence[Mapping[str, Any]], request: Mapping[str, Any] | None = None) -> str:
    """A plausible reply to a chat request: fills every output field of the signature found in the prompt.

    Deterministic: the same messages give the same reply; a short hash of the last user message is
    part of every text value, so different inputs give different text. Without a recognizable
    ``Your output fields are:`` block it answers with one plain sentence.

        >>> system = "Your input fields are:\\n1. `question` (str)\\nYour output fields are:\\n" \\
        ...          "1. `answer` (str)\\n\\nReply with a JSON object."
        >>> auto_reply([{"role": "system", "content": system},
        ...             {"role": "user", "content": "[[ ## question ## ]]\\nWhy?"}])[:31]
        '{"answer": "The answer to \\\\"Why'
    """
    system = "\n".join(message_text(m) for m in messages if m.get("role") in ("system", "developer"))
    users = [message_text(m) for m in messages if m.get("role") == "user"]
    user = users[-1] if users else ""
    ref = hashlib.sha1(user.encode("utf-8", "surrogatepass")).hexdigest()[:6]

    outputs = parse_fields_block(system, "output")
    fmt = detect_format(system, request) if outputs else None
    if not outputs or fmt is None:
        topic = _short(user) if user.strip() else "your message"
        return f'This is the demo model replying to "{topic}" (ref {ref}).'

    inputs = [f.name for f in parse_fields_block(system, "input")]
    values = _input_values(user, inputs)
    first = next((values[n] for n in inputs if n in values), None)
    if first is None:
        first = next(iter(values.values()), None) if values else None
    topic = _short(first if first is not None else user) or "the task"
    others = [(n, v) for n, v in values.items() if v is not first][:2]
    notes = "".join(f' The {n.replace("_", " ")} says "{_short(v, 40)}".' for n, v in others)

    schemas = _field_schemas(system, [spec.name for spec in outputs])
    filled: list[tuple[str, Any]] = []
    for i, spec in enumerate(outputs):
        seed = int(hashlib.sha1(f"{spec.name}:{ref}".encode()).hexdigest()[:8], 16) + i
        filled.append((spec.name, _value(spec.type_name, spec.name, topic, ref, seed, notes, schemas.get(spec.name))))
    if {"next_thought", "next_tool_name", "next_tool_args"} <= {name for name, _ in filled}:
        step = _agent_step(system, user, topic)
        filled = [(name, step.get(name, value)) for name, value in filled]

    if fmt == "chat":
        parts = [f"[[ ## {name} ## ]]\n{_render_text(value)}" for name, value in filled]
        return "\n\n".join(parts) + "\n\n[[ ## completed ## ]]"
    if fmt == "xml":
        return "\n".join(f"<{name}>\n{_render_text(value)}\n</{name}>" for name, value in filled)
    return json.dumps(dict(filled), ensure_ascii=False)
