"""%%stream through IPython's run_cell_magic: parsing, inputs, errors (one clear line), text output."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError as IPyUsageError

import jupyter_stream as js
from jupyter_stream.notebook.magic import parse_body


def test_signature_cell_streams_text_and_stores_the_prediction(ip, lm, server, capsys):
    server.script("[[ ## reasoning ## ]]\nBlue light scatters.\n\n[[ ## answer ## ]]\nRayleigh\n\n[[ ## completed ## ]]")
    ip.run_cell_magic("stream", '"question -> reasoning, answer" --out res --text', "Why is the sky blue?\n")
    out = capsys.readouterr().out
    assert "── reasoning ──\nBlue light scatters.\n" in out
    assert "── answer ──\nRayleigh\n" in out
    assert ip.user_ns["res"].answer == "Rayleigh"
    assert ip.user_ns["_"] is ip.user_ns["res"]
    user = server.requests[-1]["messages"][-1]["content"]
    assert "Why is the sky blue?" in user


def test_program_variable_multi_input_body_and_placeholders(ip, lm, server, capsys):
    ip.user_ns["qa"] = js.Predict("question, context -> answer")
    ip.user_ns["topic"] = "oceans"
    server.script("[[ ## answer ## ]]\nSalty.\n\n[[ ## completed ## ]]")
    ip.run_cell_magic("stream", "qa --text --listen answer", "question: Why are {topic} salty?\ncontext: line one\nline two {{x}}\n")
    user = server.requests[-1]["messages"][-1]["content"]
    assert "Why are oceans salty?" in user
    assert "line one\nline two {x}" in user
    assert ip.user_ns["_"].answer == "Salty."


def test_session_sends_earlier_turns_as_history(ip, lm, server, capsys):
    server.script("[[ ## answer ## ]]\nFirst.\n\n[[ ## completed ## ]]", "[[ ## answer ## ]]\nSecond.\n\n[[ ## completed ## ]]")
    ip.run_cell_magic("stream", '"question -> answer" --session chat1 --text', "hello\n")
    ip.run_cell_magic("stream", '"question -> answer" --session chat1 --text', "and again\n")
    messages = server.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "First." in messages[2]["content"] and "hello" in messages[1]["content"]


@pytest.mark.parametrize(
    ("line", "body", "needle"),
    [
        ('"question -> answer" --adapter yaml', "x", "invalid choice: 'yaml'"),
        ('"question -> answer" --bogus', "x", "unrecognized arguments: --bogus (see %%stream?)"),
        ('"question -> answer', "x", "cannot read the options: No closing quotation"),
        ('"question -> answer" --temperature hot', "x", "invalid float value"),
        ("", "x", "needs a signature"),
        ("nosuchvar", "x", "no variable named 'nosuchvar'"),
        ('"question -> -> answer"', "x", "exactly one '->'"),
        ('"question, context -> answer"', "just text", "must start with one of question:, context:"),
        ('"question -> answer" --listen nope', "x", "cannot listen to 'nope'"),
        ('"question -> answer"', "{undefined_name}", "no variable named 'undefined_name'"),
        ('"question -> answer" --profile fast', "x", "invalid choice: 'fast'"),
    ],
)
def test_bad_arguments_give_one_clear_line_and_no_request(ip, lm, server, line, body, needle):
    with pytest.raises(IPyUsageError) as info:
        ip.run_cell_magic("stream", line, body)
    assert needle in str(info.value)
    assert "\n" not in str(info.value).strip()
    assert server.requests == []


def test_runtime_error_is_reported_and_the_shell_stays_usable(ip, lm, server, capsys):
    from jupyter_stream.demo import Fault, Reply

    server.script(Reply(content="[[ ## answer ## ]]\nPartial answer text", fault=Fault("drop", after=9)))
    with pytest.raises(js.LMError, match="connection closed|connection failed"):
        ip.run_cell_magic("stream", '"question -> answer" --text', "q")
    out = capsys.readouterr().out
    assert "Partial" in out and out.count("error: LMError") == 1
    server.script("[[ ## answer ## ]]\nfine\n\n[[ ## completed ## ]]")
    ip.run_cell_magic("stream", '"question -> answer" --text', "q")
    assert ip.user_ns["_"].answer == "fine"


def test_parse_body_blocks():
    assert parse_body("one\ntwo\n", ["q"]) == {"q": "one\ntwo"}
    assert parse_body("a: 1\nb: two\nlines\n", ["a", "b"]) == {"a": "1", "b": "two\nlines"}
    with pytest.raises(js.UsageError, match="no value for b"):
        parse_body("a: 1\n", ["a", "b"])


def test_help_documents_every_option_the_parser_takes(ip):
    """The help is made from the options' declarations (IPython's magic_arguments): it cannot miss one."""
    from jupyter_stream.notebook.magic import _options

    doc = ip.find_cell_magic("stream").__doc__
    declared = {o for action in _options.parser._actions for o in action.option_strings}
    assert declared >= {"--listen", "--predictor", "--out", "--model", "--adapter", "--temperature", "--no-cache",
                        "--timeout", "--stream-timeout", "--profile", "--session", "--markdown", "--background",
                        "--text", "--no-snapshot"}
    for opt in declared - {"-h", "--help"}:
        assert opt in doc, opt
    assert doc.lstrip(": \n").startswith("%%stream [--listen a,b]")


def test_streamified_callable_keeps_its_status_provider(ip, lm, server, capsys):
    class Provider(js.StatusMessageProvider):
        def lm_start_status_message(self, instance, inputs):
            return "thinking hard"

    ip.user_ns["sp"] = js.streamify(
        js.Predict("question -> answer"), status_message_provider=Provider(), stream_listeners=[js.StreamListener("answer")]
    )
    server.script("[[ ## answer ## ]]\nYes.\n\n[[ ## completed ## ]]")
    ip.run_cell_magic("stream", "sp --text", "Is it?")
    out = capsys.readouterr().out
    assert "· thinking hard\n" in out and "── answer ──\nYes.\n" in out
    assert ip.user_ns["_"].answer == "Yes."


def test_an_empty_body_is_one_clear_line_and_no_request(ip, lm, server):
    before = len(server.requests)
    with pytest.raises(IPyUsageError, match=r"^%%stream: the cell body is empty: write the value of 'question' on the lines below the %%stream line$"):
        ip.run_cell_magic("stream", '"question -> answer" --text', "\n  \n")
    assert len(server.requests) == before


def test_temperature_and_no_cache_apply_to_every_program(ip, lm, server, capsys):
    ip.user_ns["cot"] = js.ChainOfThought("question -> answer")
    ip.run_cell_magic("stream", "cot --text --temperature 0.3 --no-cache", "Why?\n")
    assert server.requests[-1]["temperature"] == 0.3


def test_model_keeps_the_configured_server_and_key(ip, lm, server, capsys):
    """--model after configure(lm=LM(..., base_url=..., api_key=...)) asks the same server with the same key."""
    before = len(server.requests)
    ip.run_cell_magic("stream", '"question -> answer" --text --model openai/other-model', "Why?\n")
    assert len(server.requests) == before + 1 and server.requests[-1]["model"] == "other-model"


def test_a_server_failure_is_the_error_itself_shown_once(ip, lm, server, capsys):
    from jupyter_stream.demo import Fault

    server.script(Fault("status", status=500, times=5))
    with pytest.raises(js.LMError) as info:
        ip.run_cell_magic("stream", '"question -> answer" --text', "Why?\n")
    out = capsys.readouterr().out
    assert out.count("error: LMError") == 1  # the text output shows it, once
    assert info.value._render_traceback_() == ["LMError: the stream failed (shown above)"]


def test_record_writes_the_run_and_replay_plays_it_without_a_server(ip, lm, server, capsys, tmp_path):
    server.script("[[ ## answer ## ]]\nRecorded answer.\n\n[[ ## completed ## ]]")
    path = tmp_path / "cell.jsonl"
    ip.run_cell_magic("stream", f'"question -> answer" --text --record {path}', "What is recorded?\n")
    capsys.readouterr()
    (run,) = js.load_recording(path)
    assert run.inputs == {"question": "What is recorded?"} and run.prediction["answer"] == "Recorded answer."
    asked = len(server.requests)
    chunks = [e.chunk for e in js.replay(path, speed=0) if isinstance(e, js.StreamResponse)]
    assert "".join(chunks) == "Recorded answer."
    assert len(server.requests) == asked  # the replay asked no server


def test_record_to_a_path_that_cannot_be_written_is_one_line_and_no_request(ip, lm, server, tmp_path):
    with pytest.raises(IPyUsageError) as info:
        ip.run_cell_magic("stream", f'"question -> answer" --text --record {tmp_path}/no/such/dir/x.jsonl', "q\n")
    assert "cannot write the recording" in str(info.value) and "\n" not in str(info.value).strip()
    assert server.requests == []
