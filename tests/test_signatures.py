"""Signatures: the class form, the string form (every supported type), ChainOfThought, and malformed strings.

No server is needed: building a signature never talks to a model.
"""

from __future__ import annotations

import typing
from typing import Literal

import pydantic
import pytest

import jupyter_stream as js
from jupyter_stream import SignatureError


class Address(pydantic.BaseModel):
    """A pydantic model at module level, found by name from a signature string."""

    street: str
    city: str


# ------------------------------------------------------------------------------------------- class form


class QA(js.Signature):
    """Answer the question.

    Use one short sentence.
    """

    question: str = js.InputField(desc="what the user asks")
    context: list[str] = js.InputField()
    answer: str = js.OutputField(desc="the reply")
    confidence: float = js.OutputField()
    label: Literal["yes", "no"] = js.OutputField()
    where: Address = js.OutputField(desc="the place")


def test_class_form_fields_in_order_with_kinds():
    assert list(QA.fields) == ["question", "context", "answer", "confidence", "label", "where"]
    assert list(QA.input_fields) == ["question", "context"]
    assert list(QA.output_fields) == ["answer", "confidence", "label", "where"]
    assert [f.kind for f in QA.fields.values()] == ["input", "input", "output", "output", "output", "output"]


def test_class_form_docstring_becomes_instructions_dedented():
    assert QA.instructions == "Answer the question.\n\nUse one short sentence."


def test_class_form_desc_and_types():
    f = QA.fields
    assert f["question"].desc == "what the user asks"
    assert f["context"].desc == ""
    assert f["answer"].desc == "the reply"
    assert f["where"].desc == "the place"
    # `from __future__ import annotations` makes these strings; the class body resolves them.
    assert f["question"].annotation is str
    assert f["context"].annotation == list[str]
    assert f["confidence"].annotation is float
    assert f["label"].annotation == Literal["yes", "no"]
    assert f["where"].annotation is Address
    assert f["question"].is_str and not f["context"].is_str


def test_class_form_signature_string_and_repr():
    assert QA.signature == "question, context: list[str] -> answer, confidence: float, label: Literal['yes', 'no'], where: Address"
    assert repr(QA) == f"QA({QA.signature})"


def test_class_form_without_docstring_gets_default_instructions():
    class NoDoc(js.Signature):
        question: str = js.InputField()
        answer: str = js.OutputField()

    assert NoDoc.instructions == "Given the fields `question`, produce the fields `answer`."


def test_class_form_annotation_without_field_is_an_error():
    with pytest.raises(SignatureError) as info:

        class Bad(js.Signature):
            question: str
            answer: str = js.OutputField()

    assert "'question'" in str(info.value)
    assert "InputField()" in str(info.value)


def test_signature_class_is_not_instantiated():
    with pytest.raises(TypeError, match="is a signature class"):
        QA()


# ------------------------------------------------------------------------------------------ string form


def test_string_form_default_types_are_str():
    sig = js.Signature("question, context -> answer")
    assert list(sig.input_fields) == ["question", "context"]
    assert list(sig.output_fields) == ["answer"]
    assert all(f.annotation is str for f in sig.fields.values())
    assert sig.signature == "question, context -> answer"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("str", str),
        ("int", int),
        ("float", float),
        ("bool", bool),
        ("list[str]", list[str]),
        ("list[int]", list[int]),
        ("dict[str, int]", dict[str, int]),
        ("Literal['pos', 'neg']", Literal["pos", "neg"]),
        ('Literal["a", "b", "c"]', Literal["a", "b", "c"]),
        ("Literal[1, 2]", Literal[1, 2]),
        ("Optional[int]", typing.Optional[int]),
        ("int | None", typing.Optional[int]),
    ],
)
def test_string_form_types(text, expected):
    sig = js.Signature(f"question -> answer: {text}")
    assert sig.output_fields["answer"].annotation == expected
    assert sig.output_fields["answer"].kind == "output"


def test_string_form_input_types_and_type_names():
    sig = js.Signature("n: int, xs: list[str], ok: bool -> label: Literal['a', 'b'], score: float")
    assert [f.annotation for f in sig.input_fields.values()] == [int, list[str], bool]
    assert [f.type_name() for f in sig.fields.values()] == ["int", "list[str]", "bool", "Literal['a', 'b']", "float"]
    assert sig.signature == "n: int, xs: list[str], ok: bool -> label: Literal['a', 'b'], score: float"


def test_string_form_literal_values_may_hold_commas_and_brackets():
    sig = js.Signature("question -> sep: Literal[',', ';'], opener: Literal['[', '('], closer: Literal[\"]\"], answer")
    assert sig.output_fields["sep"].annotation == Literal[",", ";"]
    assert sig.output_fields["opener"].annotation == Literal["[", "("]
    assert sig.output_fields["closer"].annotation == Literal["]"]
    assert list(sig.output_fields) == ["sep", "opener", "closer", "answer"]


def test_string_form_literal_values_may_hold_arrows():
    sig = js.Signature("rule: Literal['a -> b', \"->\"] -> step: Literal['x->y', 'z'], answer")
    assert sig.input_fields["rule"].annotation == Literal["a -> b", "->"]
    assert sig.output_fields["step"].annotation == Literal["x->y", "z"]
    assert list(sig.output_fields) == ["step", "answer"]
    assert js.Signature(sig.signature).signature == sig.signature
    with pytest.raises(js.SignatureError, match="exactly one '->'"):
        js.Signature("a -> b: Literal['->'] -> c")


def test_string_form_signature_round_trips():
    for text in ["a, b: int -> c: list[str], d: Literal['x', 'y']", "a -> b: int | None", "a -> b: dict[str, float]"]:
        sig = js.Signature(text)
        again = js.Signature(sig.signature)
        assert again.signature == sig.signature
        assert [f.annotation for f in again.fields.values()] == [f.annotation for f in sig.fields.values()]


def test_string_form_whitespace_is_ignored():
    sig = js.Signature("  question ,context->answer :  int ")
    assert list(sig.fields) == ["question", "context", "answer"]
    assert sig.output_fields["answer"].annotation is int


def test_string_form_module_level_pydantic_model_from_caller_scope():
    sig = js.Signature("question -> where: Address")
    assert sig.output_fields["where"].annotation is Address
    assert sig.signature == "question -> where: Address"


def test_string_form_local_pydantic_model_from_caller_scope():
    class Person(pydantic.BaseModel):
        name: str
        age: int

    sig = js.Signature("text -> people: list[Person], first: Person")
    assert sig.output_fields["people"].annotation == list[Person]
    assert sig.output_fields["first"].annotation is Person


def test_predict_and_chain_of_thought_also_find_caller_types():
    class Verdict(pydantic.BaseModel):
        ok: bool

    assert js.Predict("claim -> verdict: Verdict").signature.output_fields["verdict"].annotation is Verdict
    cot = js.ChainOfThought("claim -> verdict: Verdict")
    assert cot.predict.signature.output_fields["verdict"].annotation is Verdict


def test_custom_types_argument():
    class Hidden(pydantic.BaseModel):
        x: int

    sig = js._signatures.make_signature("a -> b: Thing", custom_types={"Thing": Hidden})
    assert sig.output_fields["b"].annotation is Hidden


def test_string_form_instructions_argument():
    sig = js.Signature("question -> answer", "Reply in French.")
    assert sig.instructions == "Reply in French."


def test_default_instructions_text():
    assert js.Signature("question -> answer").instructions == "Given the fields `question`, produce the fields `answer`."
    assert (
        js.Signature("question, context -> reasoning, answer: int").instructions
        == "Given the fields `question`, `context`, produce the fields `reasoning`, `answer`."
    )
    assert js.Signature("-> answer").instructions == "Produce the fields `answer`."


def test_with_instructions_returns_a_copy():
    sig = QA.with_instructions("Be terse.")
    assert sig.instructions == "Be terse."
    assert QA.instructions == "Answer the question.\n\nUse one short sentence."
    assert list(sig.fields) == list(QA.fields)
    assert js.Signature(QA, "Other.").instructions == "Other."
    assert js.Signature(QA) is QA


# ------------------------------------------------------------------------------------------ ChainOfThought


def test_chain_of_thought_prepends_reasoning_to_a_string_signature():
    cot = js.ChainOfThought("question -> answer: int")
    sig = cot.predict.signature
    assert list(sig.input_fields) == ["question"]
    assert list(sig.output_fields) == ["reasoning", "answer"]
    assert sig.output_fields["reasoning"].annotation is str
    assert sig.output_fields["reasoning"].desc == "Think step by step in order to produce the outputs."
    assert sig.output_fields["answer"].annotation is int
    assert cot.signature is sig
    # The instructions are the original signature's, default sentence included, as in DSPy 3.4.
    assert sig.instructions == "Given the fields `question`, produce the fields `answer`."
    assert repr(cot) == "ChainOfThought(question -> reasoning, answer: int)"
    assert [name for name, _ in cot.named_predictors()] == ["predict"]


def test_chain_of_thought_keeps_class_instructions_and_fields():
    sig = js.ChainOfThought(QA).predict.signature
    assert list(sig.output_fields) == ["reasoning", "answer", "confidence", "label", "where"]
    assert sig.instructions == QA.instructions
    assert sig.output_fields["where"].annotation is Address
    assert list(QA.output_fields) == ["answer", "confidence", "label", "where"]  # the original is untouched


def test_chain_of_thought_with_existing_reasoning_field_does_not_duplicate_it():
    sig = js.ChainOfThought("question -> answer, reasoning").predict.signature
    assert list(sig.output_fields) == ["reasoning", "answer"]


# ---------------------------------------------------------------------------------------- malformed strings


def _error(text: str) -> str:
    with pytest.raises(SignatureError) as info:
        js.Signature(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, js.UsageError)
    return str(err)


def test_signature_error_is_a_value_error():
    assert issubclass(SignatureError, ValueError)
    assert issubclass(SignatureError, js.UsageError)
    assert issubclass(SignatureError, js.JupyterStreamError)


def test_no_arrow():
    msg = _error("question answer")
    assert "exactly one '->'" in msg
    assert "'question answer'" in msg


def test_two_arrows():
    msg = _error("a -> b -> c")
    assert "exactly one '->'" in msg
    assert "'a -> b -> c'" in msg


@pytest.mark.parametrize("text", ["question ->", "question ->   ", "->"])
def test_no_outputs(text):
    msg = _error(text)
    assert "has no output field" in msg


@pytest.mark.parametrize(("text", "name"), [("a, a -> b", "a"), ("q -> answer, answer", "answer"), ("x -> x", "x")])
def test_duplicate_name(text, name):
    msg = _error(text)
    assert f"names field {name!r} twice" in msg


@pytest.mark.parametrize(
    ("text", "bad"),
    [("1st -> answer", "1st"), ("question -> final answer", "final answer"), ("q -> class", "class"),
     ("q-x -> a", "q-x"), ("q -> a.b", "a.b")],
)
def test_invalid_identifier(text, bad):
    msg = _error(text)
    assert f"{bad!r}" in msg
    assert "is not a valid field name" in msg


def test_leading_underscore_name():
    msg = _error("q -> _private")
    assert "'_private'" in msg and "must not start with '_'" in msg


def test_empty_field_name_from_stray_comma():
    msg = _error("a, -> b")
    assert "empty field name" in msg


@pytest.mark.parametrize(("text", "name"), [("q -> a: Foo", "Foo"), ("q -> a: list[Bar]", "Bar"), ("q: strr -> a", "strr")])
def test_unknown_type(text, name):
    msg = _error(text)
    assert f"unknown type {name!r}" in msg
    assert "custom_types" in msg


def test_non_type_value_is_not_a_type():
    msg = _error("q -> a: 3")
    assert "3 is not a type" in msg


def test_unreadable_type():
    msg = _error("q -> a: list[]")
    assert "cannot read the type 'list[]'" in msg


@pytest.mark.parametrize("text", ["q -> a: list[str", "q -> a: list[str]]", "q -> a: dict[str, list[int]", "q) -> a"])
def test_unbalanced_brackets(text):
    msg = _error(text)
    assert msg == f"unbalanced brackets in signature {text!r}"


@pytest.mark.parametrize(("text", "name"), [("q -> a:", "a"), ("q: -> a", "q"), ("q -> a:  , b", "a")])
def test_missing_type_after_colon(text, name):
    msg = _error(text)
    assert f"field {name!r}" in msg
    assert "has ':' but no type" in msg


def test_literal_with_non_constant():
    msg = _error("q -> a: Literal[int]")
    assert "takes constants only" in msg


def test_not_a_string_or_signature():
    with pytest.raises(SignatureError, match="expected a signature string"):
        js.Predict(42)
