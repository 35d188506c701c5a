"""Unit tests for the chat, JSON and XML adapters: prompts, whole-reply parsing, incremental field parsing."""

from __future__ import annotations

import json

import pydantic
import pytest

from jupyter_stream._exceptions import AdapterParseError, ConfigurationError
from jupyter_stream.adapters import (
    Adapter,
    ChatAdapter,
    FieldDelta,
    FieldParser,
    JSONAdapter,
    XMLAdapter,
    coerce_value,
    get_adapter,
)
from jupyter_stream._signatures import InputField, OutputField, Signature, make_signature

COMPLETED = "[[ ## completed ## ]]"


class Capital(pydantic.BaseModel):
    city: str
    population: int


class QA(Signature):
    """Answer the question.
    Think first."""

    question: str = InputField(desc="what the user asks")
    context: str = InputField()
    reasoning: str = OutputField()
    answer: int = OutputField(desc="the number")


RA = make_signature("question -> reasoning, answer")
ANSWER = make_signature("question -> answer")
TYPED = make_signature(
    "question -> count: int, tags: list[str], mood: Literal['happy', 'sad'], capital: Capital",
    custom_types={"Capital": Capital},
)


def run(parser: FieldParser, chunks: list[str]) -> list[FieldDelta]:
    return [d for c in chunks for d in parser.feed(c)] + parser.finish()


def joined(deltas: list[FieldDelta]) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in deltas:
        out[d.field] = out.get(d.field, "") + d.text
    return out


def chars(text: str) -> list[str]:
    return list(text)


# --------------------------------------------------------------------------------------------- get_adapter


@pytest.mark.parametrize(
    ("name", "cls"), [("chat", ChatAdapter), ("JSON", JSONAdapter), ("Xml", XMLAdapter), ("json", JSONAdapter)]
)
def test_get_adapter_by_name(name: str, cls: type[Adapter]) -> None:
    assert type(get_adapter(name)) is cls


def test_get_adapter_returns_an_instance_as_is() -> None:
    adapter = XMLAdapter()
    assert get_adapter(adapter) is adapter


@pytest.mark.parametrize("bad", ["foo", "", None, 3, ChatAdapter])
def test_get_adapter_rejects_unknown(bad: object) -> None:
    with pytest.raises(ConfigurationError) as e:
        get_adapter(bad)
    assert str(e.value) == f"unknown adapter {bad!r}; use 'chat', 'json', 'xml' or an Adapter instance"


def test_names_and_repr() -> None:
    assert [a.name for a in (ChatAdapter(), JSONAdapter(), XMLAdapter())] == ["chat", "json", "xml"]
    assert repr(JSONAdapter()) == "JSONAdapter()"


# --------------------------------------------------------------------------------------------- format

FIELD_BLOCK = (
    "Your input fields are:\n"
    "1. `question` (str): what the user asks\n"
    "2. `context` (str)\n"
    "Your output fields are:\n"
    "1. `reasoning` (str)\n"
    "2. `answer` (int): the number"
)
TASK = "In adhering to this structure, your objective is: \n        Answer the question.\n        Think first."


def test_chat_system_message_exact() -> None:
    msgs = ChatAdapter().format(QA, {"question": "How many?", "context": "none"})
    assert msgs[0] == {
        "role": "system",
        "content": FIELD_BLOCK
        + "\nAll interactions will be structured in the following way, with the appropriate values filled in.\n\n"
        "[[ ## question ## ]]\n{question}\n\n"
        "[[ ## context ## ]]\n{context}\n\n"
        "[[ ## reasoning ## ]]\n{reasoning}\n\n"
        "[[ ## answer ## ]]\n{answer}        # note: must be an integer value\n\n"
        "[[ ## completed ## ]]\n" + TASK,
    }


def test_chat_user_message_exact() -> None:
    msgs = ChatAdapter().format(QA, {"question": "How many?", "context": "none"})
    assert msgs[1:] == [
        {
            "role": "user",
            "content": "[[ ## question ## ]]\nHow many?\n\n[[ ## context ## ]]\nnone\n\n"
            "Respond with the corresponding output fields, starting with the field `[[ ## reasoning ## ]]`, "
            "then `[[ ## answer ## ]]` (must be formatted as a valid Python int), "
            "and then ending with the marker for `[[ ## completed ## ]]`.",
        }
    ]


def test_json_messages() -> None:
    system, user = (m["content"] for m in JSONAdapter().format(QA, {"question": "How many?", "context": "c"}))
    assert system.startswith(FIELD_BLOCK + "\n")
    assert system.endswith("\n" + TASK)
    assert "Outputs will be a JSON object with the following fields." in system
    assert COMPLETED not in system and "XML" not in system
    assert user == (
        "[[ ## question ## ]]\nHow many?\n\n[[ ## context ## ]]\nc\n\n"
        "Respond with a JSON object in the following order of fields: `reasoning`, then `answer` "
        "(must be formatted as a valid Python int)."
    )


def test_xml_messages() -> None:
    system, user = (m["content"] for m in XMLAdapter().format(QA, {"question": "How many?", "context": "c"}))
    assert system.startswith(FIELD_BLOCK + "\n")
    assert system.endswith("\n" + TASK)
    assert "XML" in system and "JSON" not in system and COMPLETED not in system
    assert "<reasoning>\n{reasoning}\n</reasoning>" in system
    # Each non-text field carries its type note, as in the chat and JSON structures.
    assert "<answer>\n{answer}        # note: must be an integer value\n</answer>" in system
    assert user == (
        "[[ ## question ## ]]\nHow many?\n\n[[ ## context ## ]]\nc\n\n"
        "Respond with the corresponding output fields as XML elements, starting with `<reasoning>`, "
        "then `<answer>` (must be formatted as a valid Python int)."
    )
    assert COMPLETED not in user and "JSON" not in user


def test_no_inputs_field_block() -> None:
    sig = make_signature("-> answer")
    for adapter in (ChatAdapter(), JSONAdapter(), XMLAdapter()):
        msgs = adapter.format(sig, {})
        assert msgs[0]["content"].startswith(
            "Your input fields are: none\nYour output fields are:\n1. `answer` (str)\n"
        )
        assert len(msgs) == 2 and msgs[1]["content"].startswith("Respond with ")


def test_non_str_inputs_rendered_as_json() -> None:
    sig = make_signature("items: list, info: dict, place: Capital -> answer", custom_types={"Capital": Capital})
    inputs = {"items": ["é", 1], "info": {"k": None}, "place": Capital(city="Zürich", population=3)}
    user = ChatAdapter().format(sig, inputs)[-1]["content"]
    assert user.startswith(
        '[[ ## items ## ]]\n["é", 1]\n\n[[ ## info ## ]]\n{"k": null}\n\n'
        '[[ ## place ## ]]\n{"city": "Zürich", "population": 3}\n\nRespond with'
    )


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=lambda a: a.name)
def test_demos_and_history_become_turns(adapter: Adapter) -> None:
    demo = ({"question": "1+1?", "context": "math"}, {"reasoning": "add", "answer": 2})
    past = ({"question": "2+2?", "context": "math"}, {"reasoning": "add again", "answer": 4})
    msgs = adapter.format(QA, {"question": "3+3?", "context": "math"}, demos=[demo], history=[past])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "[[ ## question ## ]]\n1+1?\n\n[[ ## context ## ]]\nmath"
    assert msgs[2]["content"] == adapter.format_reply(QA, demo[1])
    assert msgs[4]["content"] == adapter.format_reply(QA, past[1])
    assert msgs[5]["content"].startswith("[[ ## question ## ]]\n3+3?\n\n")
    assert adapter.parse(QA, msgs[4]["content"]) == {"reasoning": "add again", "answer": 4}


def test_format_reply_shapes() -> None:
    outputs = {"reasoning": "r", "answer": 3}
    assert ChatAdapter().format_reply(QA, outputs) == "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\n3\n\n" + COMPLETED
    assert JSONAdapter().format_reply(QA, outputs) == '{"reasoning": "r", "answer": 3}'
    assert XMLAdapter().format_reply(QA, outputs) == "<reasoning>r</reasoning>\n<answer>3</answer>"
    # Missing outputs are left out.
    assert ChatAdapter().format_reply(QA, {"answer": 3}) == "[[ ## answer ## ]]\n3\n\n" + COMPLETED


TYPED_VALUES = {
    "count": 7,
    "tags": ["a b", "é"],
    "mood": "sad",
    "capital": Capital(city="Paris", population=2_100_000),
}


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=lambda a: a.name)
def test_typed_fields_round_trip(adapter: Adapter) -> None:
    parsed = adapter.parse(TYPED, adapter.format_reply(TYPED, TYPED_VALUES))
    assert parsed == TYPED_VALUES
    assert isinstance(parsed["capital"], Capital)


# --------------------------------------------------------------------------------------------- chat

DSPY_REPLY = (
    "[[ ## reasoning ## ]]\nThe capital of France is Paris.\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
)
GPT_TOKENS = [
    "[[", " ##", " reasoning", " ##", " ]]\n", "The", " capital", " of", " France", " is", " Paris", ".\n\n",
    "[[", " ##", " answer", " ##", " ]]\n", "Par", "is", "\n\n", "[[", " ##", " completed", " ##", " ]]",
]


def test_chat_parse_dspy_reply() -> None:
    assert ChatAdapter().parse(RA, DSPY_REPLY) == {"reasoning": "The capital of France is Paris.", "answer": "Paris"}


def test_chat_stream_gpt_tokens() -> None:
    assert "".join(GPT_TOKENS) == DSPY_REPLY
    parser = ChatAdapter().field_parser(RA)
    per_feed = [parser.feed(t) for t in GPT_TOKENS]
    R, A = "reasoning", "answer"
    assert per_feed == [
        [], [], [], [], [],
        [FieldDelta(R, "The")], [FieldDelta(R, " capital")], [FieldDelta(R, " of")], [FieldDelta(R, " France")],
        [FieldDelta(R, " is")], [FieldDelta(R, " Paris")], [FieldDelta(R, ".")],
        [], [], [], [], [FieldDelta(R, "", True)],
        [FieldDelta(A, "Par")], [FieldDelta(A, "is")], [],
        [], [], [], [], [FieldDelta(A, "", True)],
    ]
    assert parser.finish() == []
    assert parser.feed("more") == [] and parser.finish() == []


def test_chat_stream_gemini_chunks() -> None:
    chunks = [
        "[[ ## reasoning ## ]]\nThe capital of France is Paris.\n\n[[ ## ans",
        "wer ## ]]\nParis\n\n[[ ## completed ## ]]\n",
    ]
    parser = ChatAdapter().field_parser(RA)
    assert parser.feed(chunks[0]) == [FieldDelta("reasoning", "The capital of France is Paris.")]
    assert parser.feed(chunks[1]) == [FieldDelta("reasoning", "", True), FieldDelta("answer", "Paris", True)]
    assert parser.finish() == []


def test_chat_header_split_across_three_deltas() -> None:
    deltas = run(ChatAdapter().field_parser(ANSWER), ["intro [[ ## ans", "wer #", "# ]]Paris is big"])
    assert deltas == [FieldDelta("answer", "Paris is big"), FieldDelta("answer", "", True)]


def test_chat_text_on_the_header_line() -> None:
    reply = "[[ ## reasoning ## ]] Because it is. [[ ## answer ## ]] Paris [[ ## completed ## ]] bye"
    assert ChatAdapter().parse(RA, reply) == {"reasoning": "Because it is.", "answer": "Paris"}
    assert joined(run(ChatAdapter().field_parser(RA), chars(reply))) == {"reasoning": "Because it is.", "answer": "Paris"}


def test_chat_reply_without_completed_marker() -> None:
    reply = "[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\nParis\n\n"
    parser = ChatAdapter().field_parser(RA)
    deltas = [d for c in chars(reply) for d in parser.feed(c)]
    assert deltas[-1] == FieldDelta("answer", "s")  # still open: the trailing newlines are held back
    assert parser.finish() == [FieldDelta("answer", "", True)]
    assert ChatAdapter().parse(RA, reply) == {"reasoning": "r", "answer": "Paris"}


def test_chat_unknown_sections_repeats_and_preamble_are_ignored() -> None:
    reply = "Sure!\n[[ ## answer ## ]]\nA\n[[ ## notes ## ]]\nxx\n[[ ## answer ## ]]\nB"
    assert ChatAdapter().parse(ANSWER, reply) == {"answer": "A"}
    deltas = run(ChatAdapter().field_parser(ANSWER), [reply[i : i + 3] for i in range(0, len(reply), 3)])
    assert joined(deltas) == {"answer": "A"}
    assert [d.last for d in deltas] == [False, True]


def test_chat_brackets_that_are_not_headers_stay_text() -> None:
    reply = "[[ ## answer ## ]]\nsee [1], [[x]] and [[ ## a[[ ## b ## ]] [[ ## no header ## ]]\n[[ ## completed ## ]]"
    assert ChatAdapter().parse(ANSWER, reply) == {"answer": "see [1], [[x]] and [[ ## a"}
    assert joined(run(ChatAdapter().field_parser(ANSWER), chars(reply))) == {"answer": "see [1], [[x]] and [[ ## a"}


def test_chat_unfinished_header_at_the_end_is_text() -> None:
    reply = "[[ ## answer ## ]]\nParis [[ ## compl"
    assert ChatAdapter().parse(ANSWER, reply) == {"answer": "Paris [[ ## compl"}
    parser = ChatAdapter().field_parser(ANSWER)
    assert run(parser, [reply]) == [FieldDelta("answer", "Paris"), FieldDelta("answer", " [[ ## compl", True)]


def test_chat_whitespace_inside_is_kept_and_outside_stripped() -> None:
    reply = "[[ ## answer ## ]]\n \n  line 1\n\n   line 2\t \n\n[[ ## completed ## ]]"
    deltas = run(ChatAdapter().field_parser(ANSWER), chars(reply))
    assert joined(deltas) == {"answer": "line 1\n\n   line 2"}
    assert all(d.text or d.last for d in deltas)


def test_chat_empty_field() -> None:
    reply = "[[ ## reasoning ## ]]\n\n[[ ## answer ## ]]\nx"
    assert ChatAdapter().parse(RA, reply) == {"reasoning": "", "answer": "x"}
    assert run(ChatAdapter().field_parser(RA), [reply]) == [
        FieldDelta("reasoning", "", True),
        FieldDelta("answer", "x"),
        FieldDelta("answer", "", True),
    ]


def test_chat_typed_fields() -> None:
    reply = (
        "[[ ## count ## ]]\n 42 \n\n[[ ## tags ## ]]\n[\"x\", \"y\"]\n\n[[ ## mood ## ]]\nhappy\n\n"
        '[[ ## capital ## ]]\n{"city": "Rome", "population": 5}\n\n[[ ## completed ## ]]'
    )
    assert ChatAdapter().parse(TYPED, reply) == {
        "count": 42,
        "tags": ["x", "y"],
        "mood": "happy",
        "capital": Capital(city="Rome", population=5),
    }
    assert joined(run(ChatAdapter().field_parser(TYPED), chars(reply)))["tags"] == '["x", "y"]'


def test_chat_missing_field_error() -> None:
    reply = "[[ ## reasoning ## ]]\nI think so.\n\n[[ ## completed ## ]]"
    with pytest.raises(AdapterParseError) as e:
        ChatAdapter().parse(RA, reply)
    assert e.value.field == "answer"
    assert str(e.value) == (
        "the model's reply lacks the output field 'answer' (expected `[[ ## answer ## ]]`); "
        f"the reply starts with: {reply!r}"
    )
    assert e.value.partial == {"reasoning": "I think so."}
    assert e.value.raw == reply


def test_chat_missing_fields_error_names_all() -> None:
    with pytest.raises(AdapterParseError, match=r"lacks the output fields 'reasoning', 'answer'") as e:
        ChatAdapter().parse(RA, "x" * 500)
    assert e.value.field == "reasoning"
    assert str(e.value).endswith(repr("x" * 200 + "..."))


def test_chat_invalid_typed_value() -> None:
    with pytest.raises(AdapterParseError, match=r"field 'answer' is not a valid int: 'three'") as e:
        ChatAdapter().parse(QA, "[[ ## reasoning ## ]]\nr\n[[ ## answer ## ]]\nthree")
    assert e.value.field == "answer"


# --------------------------------------------------------------------------------------------- JSON


def test_json_reply_in_a_fence_with_prose() -> None:
    reply = 'Here you go:\n```json\n{\n  "reasoning": "Paris is the capital.",\n  "answer": "Paris"\n}\n```\nDone.'
    assert JSONAdapter().parse(RA, reply) == {"reasoning": "Paris is the capital.", "answer": "Paris"}
    parser = JSONAdapter().field_parser(RA)
    deltas = run(parser, [reply[i : i + 5] for i in range(0, len(reply), 5)])
    assert joined(deltas) == {"reasoning": "Paris is the capital.", "answer": "Paris"}
    assert [d.field for d in deltas if d.last] == ["reasoning", "answer"]
    assert deltas[-1] == FieldDelta("answer", "s", True)  # the chunk 's"\n}\n' holds the closing quote


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_json_reply_after_prose_with_braces_of_its_own(size) -> None:
    """Braces in the prose before the object ("{a, b}", "{}", "{ }" split across deltas) are not the object:
    both parsers take the first "{" followed by a key, at any split."""
    reply = 'The sets {a, b} and {} and { } differ.\n{\n "reasoning": "r {x}", "answer": "A"}\nbye {"z": 1}'
    want = {"reasoning": "r {x}", "answer": "A"}
    assert JSONAdapter().parse(RA, reply) == want
    deltas = run(JSONAdapter().field_parser(RA), [reply[i : i + size] for i in range(0, len(reply), size)])
    assert joined(deltas) == want
    assert [d.field for d in deltas if d.last] == ["reasoning", "answer"]


def test_json_reply_without_a_key_after_any_brace_keeps_the_first_brace_error() -> None:
    with pytest.raises(AdapterParseError, match="expected a key in double quotes"):
        JSONAdapter().parse(RA, "{reasoning: r, answer: A}")
    assert run(JSONAdapter().field_parser(RA), ["{reasoning: r, ", "answer: A}"]) == []


def test_json_gpt_tokens_exact() -> None:
    tokens = ['{"', "reason", "ing", '":', ' "', "Par", "is", ' is."', ', "', "answer", '":', ' "', "Paris", '"}']
    parser = JSONAdapter().field_parser(RA)
    assert [parser.feed(t) for t in tokens] == [
        [], [], [], [], [],
        [FieldDelta("reasoning", "Par")], [FieldDelta("reasoning", "is")],
        [FieldDelta("reasoning", " is.", True)],
        [], [], [], [],
        [FieldDelta("answer", "Paris")], [FieldDelta("answer", "", True)],
    ]
    assert parser.finish() == []


def test_json_gemini_chunk_spanning_fields() -> None:
    parser = JSONAdapter().field_parser(RA)
    assert parser.feed('{"reasoning": "The capital is Paris.", "ans') == [
        FieldDelta("reasoning", "The capital is Paris.", True)
    ]
    assert parser.feed('wer": "Paris"}') == [FieldDelta("answer", "Paris", True)]
    assert parser.finish() == []


def test_json_escapes_split_across_deltas() -> None:
    reply = r'{"answer": "a\nb \"q\" \\ \/ \u00e9 \ud83d\ude00 \t end"}'
    expected = 'a\nb "q" \\ / é 😀 \t end'
    assert JSONAdapter().parse(ANSWER, reply) == {"answer": expected}
    for cut in range(len(reply) + 1):
        deltas = run(JSONAdapter().field_parser(ANSWER), [reply[:cut], reply[cut:]])
        assert joined(deltas) == {"answer": expected}, cut
    deltas = run(JSONAdapter().field_parser(ANSWER), chars(reply))
    assert joined(deltas) == {"answer": expected}
    assert all("\\" not in d.text or d.text == "\\" for d in deltas)
    assert FieldDelta("answer", "😀") in deltas  # the surrogate pair arrives as one character


def test_json_lone_surrogate_escape_matches_json() -> None:
    reply = r'{"answer": "x\ud83dy\ud83d\u0041"}'
    assert JSONAdapter().parse(ANSWER, reply) == {"answer": json.loads(reply)["answer"]}
    assert joined(run(JSONAdapter().field_parser(ANSWER), chars(reply))) == {"answer": "x\ud83dy\ud83dA"}


def test_json_str_value_is_not_stripped_and_raw_newlines_are_allowed() -> None:
    reply = '{"answer": "  two\nlines  "}'
    assert JSONAdapter().parse(ANSWER, reply) == {"answer": "  two\nlines  "}
    assert joined(run(JSONAdapter().field_parser(ANSWER), chars(reply))) == {"answer": "  two\nlines  "}


def test_json_non_string_values_stream_raw() -> None:
    reply = '{"reasoning": [1, {"a": "}]\\""}, "]"] , "answer": 12.5e3}'
    assert JSONAdapter().parse(RA, reply) == {"reasoning": '[1, {"a": "}]\\""}, "]"]', "answer": "12.5e3"}
    deltas = run(JSONAdapter().field_parser(RA), chars(reply))
    assert joined(deltas) == {"reasoning": '[1, {"a": "}]\\""}, "]"]', "answer": "12.5e3"}
    assert [d for d in deltas if d.last] == [FieldDelta("reasoning", "]", True), FieldDelta("answer", "", True)]


def test_json_number_closes_at_the_whitespace_after_it() -> None:
    reply = '{"reasoning": -12 \n, "answer": true }'
    assert JSONAdapter().parse(RA, reply) == {"reasoning": "-12", "answer": "true"}
    parser = JSONAdapter().field_parser(RA)
    assert [parser.feed(c) for c in ['{"reasoning": -1', "2", " ", '\n, "answer": tr', "ue", " }"]] == [
        [FieldDelta("reasoning", "-1")], [FieldDelta("reasoning", "2")], [FieldDelta("reasoning", "", True)],
        [FieldDelta("answer", "tr")], [FieldDelta("answer", "ue")], [FieldDelta("answer", "", True)],
    ]
    assert parser.finish() == []


def test_json_typed_fields() -> None:
    reply = '{"count": 3, "tags": ["x"], "mood": "happy", "capital": {"city": "Rome", "population": "5"}}'
    assert JSONAdapter().parse(TYPED, reply) == {
        "count": 3,
        "tags": ["x"],
        "mood": "happy",
        "capital": Capital(city="Rome", population=5),
    }
    assert joined(run(JSONAdapter().field_parser(TYPED), [reply])) == {
        "count": "3",
        "tags": '["x"]',
        "mood": "happy",
        "capital": '{"city": "Rome", "population": "5"}',
    }


def test_json_truncated_after_the_last_value_is_accepted() -> None:
    for reply in ('{"reasoning": "r", "answer": 3', '{"reasoning": "r", "answer": 3,\n', '{"reasoning": "r", "answer": 3, "ex'):
        assert JSONAdapter().parse(QA, reply) == {"reasoning": "r", "answer": 3}
        parser = JSONAdapter().field_parser(QA)
        assert [d for c in chars(reply) for d in parser.feed(c)][-1] == FieldDelta("answer", "", True) or reply.endswith("3")
    parser = JSONAdapter().field_parser(QA)
    parser.feed('{"reasoning": "r", "answer": 3')
    assert parser.finish() == [FieldDelta("answer", "", True)]


def test_json_cut_off_inside_a_value_is_an_error() -> None:
    reply = '{"reasoning": "r", "answer": "Par'
    with pytest.raises(AdapterParseError, match=r"invalid or cut-off value for key 'answer' at character 29") as e:
        JSONAdapter().parse(RA, reply)
    assert e.value.field == "answer"
    # The stream still shows what came and closes the field.
    assert run(JSONAdapter().field_parser(RA), chars(reply)) == [
        FieldDelta("reasoning", "r"), FieldDelta("reasoning", "", True),
        FieldDelta("answer", "P"), FieldDelta("answer", "a"), FieldDelta("answer", "r"), FieldDelta("answer", "", True),
    ]


def test_json_first_occurrence_wins_and_unknown_keys_are_skipped() -> None:
    reply = '{"note": "{\\"answer\\": 1}", "answer": "first", "answer": "second", "x": [1]}'
    assert JSONAdapter().parse(ANSWER, reply) == {"answer": "first"}
    deltas = run(JSONAdapter().field_parser(ANSWER), chars(reply))
    assert joined(deltas) == {"answer": "first"}
    assert sum(d.last for d in deltas) == 1


def test_json_missing_field_error() -> None:
    with pytest.raises(AdapterParseError) as e:
        JSONAdapter().parse(RA, '{"reasoning": "r"}')
    assert e.value.field == "answer"
    assert str(e.value) == (
        "the model's reply lacks the output field 'answer' (expected \"answer\"); "
        "the reply starts with: '{\"reasoning\": \"r\"}'"
    )
    assert e.value.partial == {"reasoning": "r"}


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("no object here", "contains no JSON object"),
        ('{"answer" "x"}', "expected ':' after a key at character 10"),
        ('{"answer": "x" "y"}', "expected ',' or '}' after a value at character 15"),
        ("{answer: 1}", "expected a key in double quotes at character 1"),
        ('{"answer": tru}', "invalid or cut-off value for key 'answer'"),
        ('{"answer": ' + "[" * 5000 + "}", "invalid or cut-off value for key 'answer'"),
    ],
)
def test_json_invalid_replies(reply: str, message: str) -> None:
    with pytest.raises(AdapterParseError, match=message):
        JSONAdapter().parse(ANSWER, reply)
    run(JSONAdapter().field_parser(ANSWER), chars(reply))  # never raises


def test_json_invalid_typed_value() -> None:
    with pytest.raises(AdapterParseError, match="field 'answer' is not a valid int") as e:
        JSONAdapter().parse(QA, '{"reasoning": "r", "answer": "many"}')
    assert e.value.field == "answer"


# --------------------------------------------------------------------------------------------- XML


def test_xml_stream_tokens() -> None:
    tokens = ["<", "reason", "ing", ">", "The", " capital", "\n", "</", "reason", "ing>\n", "<answer", ">", "Par", "is", "</answer>"]
    parser = XMLAdapter().field_parser(RA)
    assert [parser.feed(t) for t in tokens] == [
        [], [], [], [], [FieldDelta("reasoning", "The")], [FieldDelta("reasoning", " capital")], [], [], [],
        [FieldDelta("reasoning", "", True)], [], [], [FieldDelta("answer", "Par")], [FieldDelta("answer", "is")],
        [FieldDelta("answer", "", True)],
    ]
    assert parser.finish() == []


def test_xml_truncated_reply_runs_to_the_end() -> None:
    reply = "<reasoning>r</reasoning>\n<answer>\n  Paris is\n"
    assert XMLAdapter().parse(RA, reply) == {"reasoning": "r", "answer": "Paris is"}
    parser = XMLAdapter().field_parser(RA)
    assert [d for c in chars(reply) for d in parser.feed(c)][-1] == FieldDelta("answer", "s")
    assert parser.finish() == [FieldDelta("answer", "", True)]


def test_xml_half_a_closing_tag_at_the_end_is_text() -> None:
    reply = "<answer>Paris</answ"
    assert XMLAdapter().parse(ANSWER, reply) == {"answer": "Paris</answ"}
    assert run(XMLAdapter().field_parser(ANSWER), [reply]) == [
        FieldDelta("answer", "Paris"),
        FieldDelta("answer", "</answ", True),
    ]


def test_xml_other_tags_repeats_and_entities() -> None:
    reply = (
        "<thinking>hmm <answer>early</answer></thinking>"
        "<reasoning> use <b>bold</b> &lt;ok&gt; <answer>x</answer> </reasoning>"
        "<answer>late</answer>"
    )
    expected = {"reasoning": "use <b>bold</b> &lt;ok&gt; <answer>x</answer>", "answer": "early"}
    assert XMLAdapter().parse(RA, reply) == expected
    deltas = run(XMLAdapter().field_parser(RA), chars(reply))
    assert joined(deltas) == expected
    assert [d.field for d in deltas if d.last] == ["answer", "reasoning"]


def test_xml_typed_fields() -> None:
    reply = (
        "<count>\n5\n</count>\n<tags>[\"a\"]</tags>\n<mood>sad</mood>\n"
        '<capital>{"city": "Oslo", "population": 1}</capital>'
    )
    assert XMLAdapter().parse(TYPED, reply) == {
        "count": 5,
        "tags": ["a"],
        "mood": "sad",
        "capital": Capital(city="Oslo", population=1),
    }


def test_xml_missing_field_error() -> None:
    with pytest.raises(AdapterParseError) as e:
        XMLAdapter().parse(RA, "<reasoning>r</reasoning>")
    assert e.value.field == "answer"
    assert str(e.value) == (
        "the model's reply lacks the output field 'answer' (expected <answer>...</answer>); "
        "the reply starts with: '<reasoning>r</reasoning>'"
    )


# --------------------------------------------------------------------------------------------- shared


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=lambda a: a.name)
def test_parsers_are_fresh_and_finish_is_idempotent(adapter: Adapter) -> None:
    reply = adapter.format_reply(RA, {"reasoning": "r", "answer": "a"})
    p1, p2 = adapter.field_parser(RA), adapter.field_parser(RA)
    assert p1 is not p2
    assert joined(run(p1, [reply])) == {"reasoning": "r", "answer": "a"}
    assert p1.finish() == [] and p1.feed(reply) == []
    assert joined(run(p2, chars(reply))) == {"reasoning": "r", "answer": "a"}


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(), XMLAdapter()], ids=lambda a: a.name)
def test_empty_feeds_do_nothing(adapter: Adapter) -> None:
    parser = adapter.field_parser(ANSWER)
    assert parser.feed("") == []
    assert parser.finish() == []


def test_coerce_value_is_reexported() -> None:
    assert coerce_value(QA.output_fields["answer"], " 4 ") == 4
