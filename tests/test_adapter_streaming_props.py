"""Property tests: the incremental field parsers agree with ``parse`` for any split of any reply.

Invariants (see ``jupyter_stream/adapters/base.py``):

1. for every ``str`` output field, the joined deltas equal ``adapter.parse(sig, reply)[field]``;
2. no header, marker, quote, brace or tag text leaks into a delta;
3. one ``last=True`` delta per opened field, emitted as soon as the field is known to be over, nothing
   after it, and no empty non-last delta;
4. JSON strings stream decoded; other JSON values stream their raw text;
6. garbage never raises (``parse`` raises only ``AdapterParseError``) and never hangs.
"""

from __future__ import annotations

import gc
import json
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_stream._exceptions import AdapterParseError
from jupyter_stream.adapters import Adapter, ChatAdapter, FieldDelta, JSONAdapter, XMLAdapter
from jupyter_stream._signatures import make_signature

SIG = make_signature("question -> reasoning, answer")
TYPED_SIG = make_signature("question -> reasoning, count: int, answer")
ADAPTERS = [ChatAdapter(), JSONAdapter(), XMLAdapter()]
COMPLETED = "\n\n[[ ## completed ## ]]"

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRICKY = [
    "[", "]", "[[", "]]", "#", "##", " ## ", "[[ ## ", " ## ]]", "[[ ## answer ## ]]", "[[ ## reasoning ## ]]",
    "[[ ## completed ## ]]", "[[ ## other ## ]]", "<", ">", "</", "/", "<answer>", "</answer>", "<reasoning>",
    "</reasoning>", "<b>", "{", "}", "[1, 2]", '"', "\\", "\\n", "\\u00e9", "\\ud83d", "\\ude00", ":", ",",
    '"answer"', '"reasoning"', '{"answer": "', '", "answer": ', '{"reasoning": ', "```json\n", "```",
    "\n", " ", "\t", "\n\n", "  ", "\r\n", "\xa0", "\u2028", "é", "😀", "a", "Paris", " is", "3", "true", "null",
]

values = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(TRICKY), max_size=12).map("".join))


@st.composite
def splits(draw: st.DrawFn, text: str) -> list[str]:
    """A split of ``text`` into deltas: single characters, the whole text, random cuts, 30-80 character
    (Gemini-style) chunks or 1-6 character (token-style) chunks."""
    mode = draw(st.sampled_from(["chars", "whole", "cuts", "gemini", "tokens"]))
    if mode == "chars":
        return list(text)
    if mode == "whole":
        return [text]
    if mode == "cuts":
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=25)))  # repeats give empty deltas
        bounds = [0, *cuts, len(text)]
        return [text[a:b] for a, b in zip(bounds, bounds[1:])]
    rnd = draw(st.randoms(use_true_random=False))
    lo, hi = (30, 80) if mode == "gemini" else (1, 6)
    out, i = [], 0
    while i < len(text):
        k = rnd.randint(lo, hi)
        out.append(text[i : i + k])
        i += k
    return out


def stream(adapter: Adapter, sig: type, chunks: list[str]) -> tuple[list[FieldDelta], list[FieldDelta]]:
    """(deltas from feed, deltas from finish), checking the structural invariants on the way.

    The same chunks also go through a second parser the way the engine feeds it (``passthrough`` first,
    ``feed`` when it answers None): both must give the same deltas, so the fast path is exact.
    """
    parser, fast = adapter.field_parser(sig), adapter.field_parser(sig)
    fed, fast_fed = [], []
    for c in chunks:
        got = parser.feed(c)
        assert isinstance(got, list)
        fed.extend(got)
        field = fast.passthrough(c)
        fast_fed.extend([FieldDelta(field, c, False)] if field is not None else fast.feed(c))
    done = parser.finish()
    assert fast_fed + fast.finish() == fed + done, "passthrough() disagrees with feed()"
    check_structure(fed + done, sig)
    return fed, done


def check_structure(deltas: list[FieldDelta], sig: type) -> None:
    closed: set[str] = set()
    seen: set[str] = set()
    for d in deltas:
        assert isinstance(d, FieldDelta) and isinstance(d.text, str)
        assert d.field in sig.output_fields, d
        assert d.field not in closed, f"delta after the last one: {d}"
        assert d.text or d.last, f"empty non-last delta: {d}"
        seen.add(d.field)
        if d.last:
            closed.add(d.field)
    assert closed == seen, "every field that opened is closed exactly once"


def joined(deltas: list[FieldDelta]) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in deltas:
        out[d.field] = out.get(d.field, "") + d.text
    return out


def parse_or_none(adapter: Adapter, sig: type, reply: str) -> dict | None:
    try:
        return adapter.parse(sig, reply)
    except AdapterParseError:
        return None


def assert_mirrors_parse(adapter: Adapter, sig: type, reply: str, deltas: list[FieldDelta]) -> dict | None:
    parsed = parse_or_none(adapter, sig, reply)
    if parsed is not None:
        texts = joined(deltas)
        for name, f in sig.output_fields.items():
            if f.is_str:
                assert texts[name] == parsed[name], (name, reply)
    return parsed


# ------------------------------------------------------------------------------------------ invariant 1


def variants(adapter: Adapter, reply: str) -> list[str]:
    """The reply as written, plus the shapes models produce: cut-off endings, fences."""
    if adapter.name == "chat":
        return [reply, reply.removesuffix(COMPLETED), reply.removesuffix(COMPLETED) + "\n"]
    if adapter.name == "json":
        return [reply, reply[:-1], f"```json\n{reply}\n```", f"Sure:\n{reply[:-1]}\n"]
    return [reply, reply.removesuffix("</answer>"), f"<thinking>hm</thinking>\n{reply}\n"]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FAST
@given(data=st.data(), reasoning=values, answer=values, count=st.integers(-5, 10**6))
def test_str_fields_join_to_parse(adapter: Adapter, data: st.DataObject, reasoning: str, answer: str, count: int) -> None:
    sig = data.draw(st.sampled_from([SIG, TYPED_SIG]))
    reply = adapter.format_reply(sig, {"reasoning": reasoning, "count": count, "answer": answer})
    for variant in variants(adapter, reply):
        fed, done = stream(adapter, sig, data.draw(splits(variant)))
        parsed = assert_mirrors_parse(adapter, sig, variant, fed + done)
        if adapter.name == "json":  # json.dumps escapes everything: parse always succeeds, values exact
            assert parsed is not None
            assert parsed["reasoning"] == reasoning and parsed["answer"] == answer


# ------------------------------------------------------------------------------------------ invariants 2, 3

clean_values = {
    "chat": st.text(st.characters(blacklist_characters="[]#", blacklist_categories=("Cs",)), max_size=40),
    "json": st.text(st.characters(blacklist_characters='"\\{}', blacklist_categories=("Cs",)), max_size=40),
    "xml": st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=40),
}
FORBIDDEN = {"chat": "[]#", "json": '"\\{}', "xml": "<>"}


def close_positions(adapter: Adapter, reply: str) -> dict[str, int]:
    """Where in a complete reply each field is known to be over (no marker text inside the values)."""
    if adapter.name == "chat":
        ends = [m.end() for m in re.finditer(r"\[\[ ## \w+ ## \]\]", reply)]
        return {"reasoning": ends[1], "answer": ends[2]}
    if adapter.name == "json":
        obj = json.loads(reply)
        first = len('{"reasoning": ' + json.dumps(obj["reasoning"], ensure_ascii=False))
        return {"reasoning": first, "answer": len(reply) - 1}
    return {name: reply.index(f"</{name}>") + len(f"</{name}>") for name in ("reasoning", "answer")}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FAST
@given(data=st.data())
def test_no_markup_leaks_and_fields_close_as_soon_as_known(adapter: Adapter, data: st.DataObject) -> None:
    outputs = {"reasoning": data.draw(clean_values[adapter.name]), "answer": data.draw(clean_values[adapter.name])}
    reply = adapter.format_reply(SIG, outputs)
    chunks = data.draw(splits(reply))
    closes = close_positions(adapter, reply)
    parser = adapter.field_parser(SIG)
    deltas: list[FieldDelta] = []
    consumed = 0
    for c in chunks:
        deltas += parser.feed(c)
        consumed += len(c)
        closed = {d.field for d in deltas if d.last}
        assert closed == {name for name, pos in closes.items() if pos <= consumed}, (consumed, closes)
    assert parser.finish() == []  # a complete reply closed every field before the end
    check_structure(deltas, SIG)
    assert not any(ch in d.text for d in deltas for ch in FORBIDDEN[adapter.name])
    parsed = adapter.parse(SIG, reply)
    assert joined(deltas) == {k: parsed[k] for k in ("reasoning", "answer")}
    if adapter.name == "json":
        assert parsed == outputs
    else:
        assert parsed == {k: v.strip() for k, v in outputs.items()}


# ------------------------------------------------------------------------------------------ invariant 4

surrogates = st.sampled_from(["\ud83d", "\ude00", "\udbff", "\udc00"])
json_text = st.text(st.one_of(st.characters(), surrogates, st.sampled_from(list('"\\/\n\t\x00\x1f{}[]'))), max_size=30)


@FAST
@given(data=st.data(), reasoning=json_text, answer=json_text)
def test_json_strings_stream_decoded(data: st.DataObject, reasoning: str, answer: str) -> None:
    ascii_only = data.draw(st.booleans())
    enc = [json.dumps(v, ensure_ascii=ascii_only) for v in (reasoning, answer)]
    if data.draw(st.booleans()):
        enc = [e.replace("/", "\\/") for e in enc]
    sep = data.draw(st.sampled_from([(", ", ": "), (",", ":"), (",\n  ", ": "), ("\n,\t", " :\r\n ")]))
    reply = "{" + f'"reasoning"{sep[1]}{enc[0]}{sep[0]}"answer"{sep[1]}{enc[1]}' + data.draw(st.sampled_from(["}", "", "\n}\n```"]))
    fed, done = stream(JSONAdapter(), SIG, data.draw(splits(reply)))
    parsed = JSONAdapter().parse(SIG, reply)
    assert joined(fed + done) == parsed
    assert parsed == {"reasoning": json.loads(enc[0]), "answer": json.loads(enc[1])}
    has_surrogates = any(0xD800 <= ord(ch) <= 0xDFFF for ch in reasoning + answer)
    if not has_surrogates:  # lone surrogates may pair up when encoded, exactly as json.loads does
        assert parsed == {"reasoning": reasoning, "answer": answer}


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), json_text),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(json_text, children, max_size=4)),
    max_leaves=12,
)


@FAST
@given(data=st.data(), value=json_values)
def test_json_non_string_values_stream_raw(data: st.DataObject, value: object) -> None:
    indent = data.draw(st.sampled_from([None, 0, 2]))
    raw = json.dumps(value, indent=indent, ensure_ascii=data.draw(st.booleans()))
    if isinstance(value, str):
        return
    first = data.draw(st.booleans())
    if first:
        reply = f'{{"reasoning": {raw}, "answer": "x"}}'
    else:
        reply = f'{{"reasoning": "x", "answer": {raw}' + data.draw(st.sampled_from(["}", "", " ", "\n,"]))
    fed, done = stream(JSONAdapter(), SIG, data.draw(splits(reply)))
    field = "reasoning" if first else "answer"
    assert joined(fed + done)[field] == raw == JSONAdapter().parse(SIG, reply)[field]
    if first or reply.endswith("}"):
        assert done == []  # closed by its closing bracket or the delimiter after it


# ------------------------------------------------------------------------------------------ invariant 6

soup = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=4)), max_size=40).map("".join)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` after a few random edits: insert a tricky token, delete or duplicate a slice."""
    for _ in range(draw(st.integers(1, 4))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, min(len(text), a + 12)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if op == "insert":
            text = text[:a] + draw(st.sampled_from(TRICKY)) + text[a:]
        elif op == "delete":
            text = text[:a] + text[b:]
        else:
            text = text[:b] + text[a:b] + text[b:]
    return text


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@QUICK
@given(data=st.data(), reply=soup)
def test_garbage_never_raises(adapter: Adapter, data: st.DataObject, reply: str) -> None:
    sig = data.draw(st.sampled_from([SIG, TYPED_SIG]))
    fed, done = stream(adapter, sig, data.draw(splits(reply)))
    assert_mirrors_parse(adapter, sig, reply, fed + done)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FAST
@given(data=st.data(), reasoning=values, answer=values)
def test_damaged_replies_never_raise_and_still_mirror_parse(
    adapter: Adapter, data: st.DataObject, reasoning: str, answer: str
) -> None:
    sig = data.draw(st.sampled_from([SIG, TYPED_SIG]))
    reply = data.draw(mutated(adapter.format_reply(sig, {"reasoning": reasoning, "count": 3, "answer": answer})))
    fed, done = stream(adapter, sig, data.draw(splits(reply)))
    assert_mirrors_parse(adapter, sig, reply, fed + done)


@pytest.mark.parametrize(
    ("adapter", "make"),
    [
        (ChatAdapter(), lambda n: "[[ ## answer ## ]]x [[ ## " + "a" * n),
        (ChatAdapter(), lambda n: "[" * n),
        (ChatAdapter(), lambda n: "[[ ## answer ## ]]x" + " \n" * (n // 2) + "y"),
        (JSONAdapter(), lambda n: '{"answer": ' + "[" * n),
        (JSONAdapter(), lambda n: '{"answer": "' + "\\" * n),
        (JSONAdapter(), lambda n: '{"' + "a" * n),
        (XMLAdapter(), lambda n: "<answer>" + "</answe" * (n // 6)),
        (XMLAdapter(), lambda n: "<answe" * (n // 6)),
    ],
    ids=lambda v: v.name if isinstance(v, (ChatAdapter, JSONAdapter, XMLAdapter)) else None,
)
def test_pathological_input_fed_one_char_at_a_time_is_linear(adapter: Adapter, make: Any) -> None:
    """A complexity check, not a speed test: feeding 4x the characters one at a time costs about 4x this
    thread's CPU time when each character is handled once, about 16x when the parser re-scans what it holds.
    Thread CPU time (not wall time), the least of three runs: other processes on the machine do not count."""

    def cpu(n: int) -> float:
        reply = make(n)
        best = float("inf")
        for _ in range(3):
            gc.collect()
            gc.disable()  # a collection landing in one run is not the parser's cost
            try:
                start = time.thread_time()
                fed, done = stream(adapter, SIG, list(reply))
                best = min(best, time.thread_time() - start)
            finally:
                gc.enable()
        assert_mirrors_parse(adapter, SIG, reply, fed + done)
        return best

    small, large = cpu(8_000), cpu(32_000)
    assert large / small < 10, f"4x the input took {large / small:.1f}x the CPU time ({small:.3f} s -> {large:.3f} s)"
