"""Fuzzing the three incremental field parsers beyond ``tests/test_adapter_streaming_props.py``.

That module already covers: any split of replies built from short values and marker-like tokens, a few
random edits with marker tokens, short "soups" of marker tokens, lone surrogates inside JSON strings, and
pathological inputs fed one character at a time. This one adds:

* arbitrary garbage text (any code point: lone surrogates, NUL, C0/C1 controls, ANSI escapes, bidi
  overrides, astral characters) inserted INTO valid replies at random places;
* values made of that same full alphabet in valid chat and XML replies (surrogates and controls there too);
* raw network-like garbage: random bytes decoded with ``surrogateescape``, split anywhere;
* huge single deltas (a 1-2 MB field in one, two or three deltas) and huge garbage deltas.

The properties: ``feed``/``finish`` never raise and never hang (inputs are bounded, each is timed); every
field that opens closes exactly once, with no delta after its last one and no empty non-last delta;
whenever ``parse`` succeeds, each ``str`` field's chunks join exactly to its parsed value; ``parse`` itself
raises nothing but ``AdapterParseError``.
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_stream._exceptions import AdapterParseError
from jupyter_stream.adapters import FieldDelta, get_adapter
from jupyter_stream._signatures import make_signature

ADAPTERS = ["chat", "json", "xml"]
SIG = make_signature("question -> reasoning, answer")
TYPED = make_signature("question -> reasoning, count: int, answer")
RUN = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Every code point, lone surrogates included, biased towards the ones that break naive code.
NASTY = ["\x00", "\x1b[2J", "\x1b[31m", "\x1b]0;title\x07", "\r", "\r\n", "\x0b", "\x0c", "\x7f", "\x85", "\x9b",
         "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\ud800", "\udfff", "\udc80", "\U0001f600", "e\u0301",
         "\uffff", "[[ ## answer ## ]]", "</answer>", '"answer": "', "{", "}", "\\", '"', "<answer>"]
any_char = st.one_of(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), st.sampled_from(NASTY))
garbage = st.lists(any_char, max_size=60).map("".join)
value = st.lists(any_char, max_size=80).map("".join)


def run(adapter_name: str, sig: type, chunks: list[str], budget: float = 2.0) -> list[FieldDelta]:
    """Feed ``chunks`` then finish, checking the structural invariants and the time taken."""
    parser = get_adapter(adapter_name).field_parser(sig)
    started = time.perf_counter()
    deltas: list[FieldDelta] = []
    for c in chunks:
        out = parser.feed(c)
        assert isinstance(out, list)
        deltas += out
    deltas += parser.finish()
    assert time.perf_counter() - started < budget, "the parser took too long: a hang or quadratic work"
    closed: set[str] = set()
    opened: set[str] = set()
    for d in deltas:
        assert isinstance(d, FieldDelta) and isinstance(d.text, str) and isinstance(d.last, bool), d
        assert d.field in sig.output_fields, d
        assert d.field not in closed, f"a delta after the field's last one: {d!r}"
        assert d.text or d.last, f"an empty non-last delta: {d!r}"
        opened.add(d.field)
        if d.last:
            closed.add(d.field)
    assert opened == closed, "every field that opened closed exactly once"
    return deltas


def mirror(adapter_name: str, sig: type, reply: str, deltas: list[FieldDelta]) -> dict | None:
    """When ``parse`` succeeds, the chunks of every str field join to exactly its parsed value."""
    try:
        parsed = get_adapter(adapter_name).parse(sig, reply)
    except AdapterParseError:
        return None
    joined: dict[str, str] = {}
    for d in deltas:
        joined[d.field] = joined.get(d.field, "") + d.text
    for name, f in sig.output_fields.items():
        if f.is_str:
            assert joined.get(name, "") == parsed[name], (name, reply)
    return parsed


@st.composite
def splits(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def with_garbage(draw: st.DrawFn, text: str) -> str:
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(garbage) + text[at:]
    return text


@pytest.mark.parametrize("adapter", ADAPTERS)
@RUN
@given(data=st.data(), reasoning=value, answer=value)
def test_garbage_inside_valid_replies(adapter: str, data: st.DataObject, reasoning: str, answer: str) -> None:
    sig = data.draw(st.sampled_from([SIG, TYPED]))
    reply = get_adapter(adapter).format_reply(sig, {"reasoning": reasoning, "count": 7, "answer": answer})
    damaged = data.draw(with_garbage(reply))
    mirror(adapter, sig, damaged, run(adapter, sig, data.draw(splits(damaged))))


@pytest.mark.parametrize("adapter", ADAPTERS)
@RUN
@given(data=st.data(), reasoning=value, answer=value)
def test_valid_replies_with_any_characters(adapter: str, data: st.DataObject, reasoning: str, answer: str) -> None:
    reply = get_adapter(adapter).format_reply(SIG, {"reasoning": reasoning, "answer": answer})
    parsed = mirror(adapter, SIG, reply, run(adapter, SIG, data.draw(splits(reply))))
    if adapter == "json":  # json.dumps escapes whatever it must: the values come back exactly
        assert parsed == {"reasoning": reasoning, "answer": answer}
    elif not any(m in v for v in (reasoning, answer) for m in ("[[", "##", "<", ">")):
        # Without marker text in the values, chat and XML give them back, stripped like parse does.
        assert parsed == {"reasoning": reasoning.strip(), "answer": answer.strip()}


@pytest.mark.parametrize("adapter", ADAPTERS)
@RUN
@given(data=st.data(), raw=st.binary(max_size=3000))
def test_network_garbage(adapter: str, data: st.DataObject, raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")  # what undecodable bytes become
    mirror(adapter, TYPED, text, run(adapter, TYPED, data.draw(splits(text))))


@pytest.mark.parametrize("adapter", ADAPTERS)
@FEW
@given(data=st.data(), unit=st.lists(any_char, min_size=1, max_size=20).map("".join))
def test_huge_single_deltas(adapter: str, data: st.DataObject, unit: str) -> None:
    big = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    reply = get_adapter(adapter).format_reply(SIG, {"reasoning": "short", "answer": big})
    pieces = data.draw(st.sampled_from([1, 2, 3]))
    step = len(reply) // pieces + 1
    chunks = [reply[i:i + step] for i in range(0, len(reply), step)]
    mirror(adapter, SIG, reply, run(adapter, SIG, chunks, budget=5.0))


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("shape", ["one_delta", "per_kb"])
def test_huge_garbage_and_huge_values(adapter: str, shape: str) -> None:
    """1 MB of valid field text, and 1 MB of garbage before or after it, in one delta or in 1 KB deltas."""
    value_text = ("Paris \x1b[31m<b>é😀\x00 " * 50_000)[:1_000_000]
    junk = ("[[ ## <answer> {\"answer\": \\\ud800\x1b " * 30_000)[:1_000_000]
    reply = get_adapter(adapter).format_reply(SIG, {"reasoning": value_text, "answer": "fine"})
    for text in (reply, reply + junk, junk + reply):
        chunks = [text] if shape == "one_delta" else [text[i:i + 1024] for i in range(0, len(text), 1024)]
        deltas = run(adapter, SIG, chunks, budget=10.0)
        parsed = mirror(adapter, SIG, text, deltas)
        if text is reply:
            expected = value_text if adapter == "json" else value_text.strip()
            assert parsed is not None and parsed["reasoning"] == expected and parsed["answer"] == "fine"
