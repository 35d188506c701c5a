"""Bad input: one clear error naming the cause, raised before any request, and everything usable after.

Most single cases are tested where they belong (``tests/test_errors.py``, ``tests/test_signatures.py``,
``tests/notebook/test_magic.py``); this table adds the inputs those do not try - text that is not valid
Unicode (a lone surrogate, as ``surrogateescape`` makes of bad bytes), bytes that are not UTF-8, such text
nested in a list, a 10 MB input - and checks the same three properties for every kind of bad input side by
side, as the soak (``benchmarks/soak.py``) runs them over and over.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from _reliability import close_pools  # noqa: F401

import jupyter_stream as js

pytestmark = pytest.mark.usefixtures("close_pools")

GOOD = "[[ ## answer ## ]]\nstill fine\n\n[[ ## completed ## ]]"


@dataclass
class Bad:
    id: str
    run: Callable[[], Any]
    error: type[BaseException]
    message: str  # a regex the message must match


def _stream_all(s: Any) -> list[Any]:
    return list(s)


def _magic(line: str, body: str) -> Any:
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    if "jupyter_stream" not in ip.extension_manager.loaded:
        ip.run_line_magic("load_ext", "jupyter_stream")
    ip.user_ns.pop("nosuchvar", None)
    return ip.run_cell_magic("stream", line, body)


def _ipython_usage_error() -> type[BaseException]:
    from IPython.core.error import UsageError

    return UsageError


Q = js.Predict("question -> answer")
CASES = [
    # text that cannot be sent: caught by the input check, naming the input and the position
    Bad("lone_surrogate_in_text", lambda: Q(question="caf\udce9 au lait"), js.InputError,
        r"input 'question' of Predict\(question -> answer\) is not valid Unicode text: it holds a lone surrogate "
        r"'\\udce9' at position 3"),
    Bad("lone_surrogate_via_stream", lambda: js.stream(Q, None, {"question": "x\ud800"}), js.InputError,
        r"input 'question' .* lone surrogate '\\ud800' at position 1"),
    Bad("lone_surrogate_via_streamify",
        lambda: _stream_all(js.streamify(Q, stream_listeners=[js.StreamListener("answer")],
                                         async_streaming=False)(question="\udcff")),
        js.InputError, r"input 'question' .* lone surrogate"),
    Bad("bytes_not_utf8", lambda: Q(question=b"\xff\xfeabc"), js.InputError,
        r"input 'question' .* is bytes that are not UTF-8 text \(byte 0xff at position 0\)"),
    Bad("surrogate_nested_in_a_list", lambda: js.Predict("items: list[str] -> answer")(items=["ok", "b\udc80d"]),
        js.InputError, r"input 'items' .* holds a value that is not valid Unicode text"),
    # the signature
    Bad("signature_without_arrow", lambda: js.Predict("question answer"), js.SignatureError, r"->"),
    Bad("signature_two_arrows", lambda: js.Predict("a -> b -> c"), js.SignatureError, r"exactly one '->'"),
    Bad("signature_duplicate_field", lambda: js.Predict("question -> answer, answer"), js.SignatureError,
        r"answer"),
    Bad("signature_bad_identifier", lambda: js.Predict("question -> the answer"), js.SignatureError,
        r"the answer"),
    Bad("signature_unknown_type", lambda: js.Predict("question -> answer: Flaot"), js.SignatureError, r"Flaot"),
    # the inputs
    Bad("input_missing", lambda: Q(), js.InputError, r"missing input\(s\) 'question'"),
    Bad("input_unknown", lambda: Q(question="q", qestion="typo"), js.InputError, r"unknown input\(s\) 'qestion'"),
    Bad("input_wrong_type", lambda: js.Predict("question, n: int -> answer")(question="q", n="many"),
        js.InputError, r"input 'n' .* must be of type int, got str 'many'"),
    Bad("stream_inputs_not_a_dict", lambda: js.stream(Q, None, ["q"]), js.UsageError, r"takes the inputs as a dict"),
    # listeners and options
    Bad("listener_for_a_missing_field",
        lambda: js.streamify(js.ChainOfThought("question -> answer"), stream_listeners=[js.StreamListener("nope")]),
        js.ListenerError, r"Signature field nope is not a field of any predictor"),
    Bad("stream_listen_missing_field", lambda: js.stream(Q, None, {"question": "q"}, listen=["nope"]),
        js.ListenerError, r"cannot listen to 'nope'"),
    Bad("unknown_timeout_profile", lambda: js.stream(Q, None, {"question": "q"}, timeout_profile="fast"),
        js.ConfigurationError, r"unknown timeout_profile 'fast'"),
    Bad("negative_timeout", lambda: js.stream(Q, None, {"question": "q"}, timeout=-1), js.ConfigurationError,
        r"timeout must be a positive number"),
    Bad("unknown_adapter", lambda: js.configure(adapter="yaml"), js.ConfigurationError, r"unknown adapter 'yaml'"),
    # the %%stream magic
    Bad("magic_unknown_variable", lambda: _magic("nosuchvar", "x"), _ipython_usage_error(),
        r"no variable named 'nosuchvar'"),
    Bad("magic_bad_option", lambda: _magic('"question -> answer" --temperature hot', "x"), _ipython_usage_error(),
        r"invalid float value"),
    Bad("magic_bad_signature", lambda: _magic('"question -> -> answer"', "x"), _ipython_usage_error(),
        r"exactly one '->'"),
]


def check_bad(case: Bad, server: Any) -> None:
    """The error, its message, no request; then a good call on the same LM still works."""
    before = len(server.requests)
    with pytest.raises(case.error) as info:
        case.run()
    assert re.search(case.message, str(info.value)), (case.id, str(info.value))
    assert "Traceback" not in str(info.value)
    assert len(server.requests) == before, f"{case.id}: a request was sent"
    server.script(GOOD)
    assert js.Predict("question -> answer")(question="and now?").answer == "still fine"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Bad, lm: js.LM, server: Any) -> None:
    check_bad(case, server)


def test_ten_megabyte_input_is_sent_whole(lm: js.LM, server: Any) -> None:
    big = ("Ünïcödé 😀 text, " * 700_000)[:10_000_000]
    server.script(GOOD)
    events = list(js.stream(Q, None, {"question": big}))
    assert events[-1].answer == "still fine"
    assert big in server.requests[-1]["messages"][-1]["content"]  # arrived intact


def test_a_typed_field_with_an_invalid_json_value(lm: js.LM, server: Any) -> None:
    """The model's side of bad input: a value that is not of the field's type names the field and type."""
    js.configure(adapter="json")
    server.script('{"n": [1, 2', '{"n": "many"}')
    for expected in (r"field 'n'|key 'n'", r"value for field 'n' is not a valid int: 'many'"):
        with pytest.raises(js.AdapterParseError) as info:
            js.Predict("question -> n: int")(question="q")
        assert re.search(expected, str(info.value)), str(info.value)
        assert info.value.field == "n"
    server.script('{"n": 3}')
    assert js.Predict("question -> n: int")(question="q").n == 3
