"""The ``jupyter-stream`` command, run as a real subprocess, and the terminal renderer."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _served import free_port
from hypothesis import given
from hypothesis import strategies as st

import jupyter_stream as js
from jupyter_stream.demo import Fault
from jupyter_stream.demo.default import NOTICE
from jupyter_stream._terminal import inert

SCRIPT = Path(sys.executable).parent / "jupyter-stream"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_stream", *args], capture_output=True, text=True, env=cli_env(),
        timeout=timeout,
    )



# ---------------------------------------------------------------------------------------------- run


def test_run_on_the_demo_lm():
    proc = run_cli("run", "question -> reasoning, answer", "--input", "question=Why is the sky blue?")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    r = out.index("── reasoning ──\n")
    a = out.index("── answer ──\n")
    p = out.index("── prediction ──\n")
    assert r < a < p
    assert out.count("── reasoning ──") == 1 and out.count("── answer ──") == 1
    reasoning = out[r + len("── reasoning ──\n"):a].strip()
    answer = out[a + len("── answer ──\n"):p].strip()
    assert "Why is the sky blue?" in reasoning
    assert "Why is the sky blue?" in answer
    prediction = out[p:].splitlines()[1:]
    assert prediction == [f"reasoning: {reasoning!r}", f"answer: {answer!r}"]
    assert NOTICE in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "\x1b[" not in out  # not a terminal: no colour


def test_run_with_cot_and_listen():
    proc = run_cli("run", "question -> answer", "--cot", "--listen", "answer", "-i", "question=2+2?")
    assert proc.returncode == 0, proc.stderr
    assert "── answer ──" not in proc.stdout  # ChainOfThought names its predictor "predict": its panes are predict.*
    assert "── predict.answer ──" in proc.stdout
    assert "── predict.reasoning ──" not in proc.stdout
    assert "\nreasoning: " in proc.stdout and "\nanswer: " in proc.stdout


def test_console_script_exists_and_runs():
    assert SCRIPT.exists()
    proc = subprocess.run([str(SCRIPT), "run", "question -> answer", "--input", "question=hi"],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "── answer ──" in proc.stdout


def test_input_without_equals_exits_2():
    proc = run_cli("run", "question -> answer", "--input", "question")
    assert proc.returncode == 2
    assert "--input 'question': write NAME=VALUE" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_input_with_empty_name_exits_2():
    proc = run_cli("run", "question -> answer", "--input", "=value")
    assert proc.returncode == 2
    assert "write NAME=VALUE" in proc.stderr


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("question answer", "must contain exactly one '->'"),
        ("question -> answer: Foo", "unknown type 'Foo'"),
        ("question -> answer: list[str", "unbalanced brackets"),
    ],
)
def test_malformed_signature_exits_2_with_one_line(signature, message):
    proc = run_cli("run", signature, "--input", "question=x")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jupyter-stream: ")
    assert message in lines[0]
    assert proc.stdout == ""


def test_missing_input_exits_2():
    proc = run_cli("run", "question, context -> answer", "--input", "question=x")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "missing input(s) 'context'" in proc.stderr


def test_unknown_adapter_exits_2():
    proc = run_cli("run", "question -> answer", "--adapter", "yaml", "--input", "question=x")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown adapter 'yaml'" in proc.stderr


def test_unknown_listen_field_exits_2():
    proc = run_cli("run", "question -> answer", "--listen", "nope", "--input", "question=x")
    assert proc.returncode == 2
    assert "cannot listen to 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_against_a_server_makes_model_text_inert(server, lm):
    server.script("[[ ## answer ## ]]\nParis\x1b[2J is \x1b[31mred\x07\n\n[[ ## completed ## ]]")
    proc = run_cli("run", "question -> answer", "--base-url", server.url, "--model", "openai/some-model",
                   "--no-cache", "--input", "question=Capital?")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "Paris␛[2J is ␛[31mred␇" in proc.stdout
    assert NOTICE not in proc.stderr
    assert len(server.requests) == 1
    assert server.requests[0]["model"] == "some-model"
    assert "Capital?" in server.requests[0]["messages"][-1]["content"]


def test_run_reports_a_server_error_and_exits_1(server, lm):
    server.script(Fault("status", status=500, times=5))
    proc = run_cli("run", "question -> answer", "--base-url", server.url, "--no-cache", "--input", "question=x")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error: LMError: " in proc.stdout
    assert "HTTP 500" in proc.stdout


def test_model_without_key_or_base_url_exits_2():
    proc = run_cli("run", "question -> answer", "--model", "openai/gpt-4o-mini", "--input", "question=x")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "jupyter-stream: no API key for model 'gpt-4o-mini': set OPENAI_API_KEY, pass LM(..., api_key=...), "
        "or point base_url at a local server"
    )


def _limits_of_run(monkeypatch, capsys, server, *extra: str):
    """Run ``main()`` in-process against the loopback server and return the Limits its stream used."""
    from jupyter_stream import _cli as cli

    made = []
    real_stream = js.stream

    def recording_stream(*args, **kwargs):
        s = real_stream(*args, **kwargs)
        made.append(s)
        return s

    monkeypatch.setattr(js, "stream", recording_stream)
    server.script("[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    code = cli.main(["run", "question -> answer", "--base-url", server.url, "--no-cache", "-i", "question=x", *extra])
    out = capsys.readouterr().out
    assert code == 0
    assert "── answer ──\nok\n" in out
    assert len(made) == 1
    return made[0].limits


def test_run_without_timeout_uses_the_streaming_profile(monkeypatch, capsys, server, lm):
    from jupyter_stream._runtime import TIMEOUT_PROFILES, Limits

    limits = _limits_of_run(monkeypatch, capsys, server)
    assert limits == Limits(timeout=TIMEOUT_PROFILES["streaming"].timeout, stream_timeout=60.0)
    assert limits.timeout == 1800.0


def test_run_with_timeout_and_stream_timeout(monkeypatch, capsys, server, lm):
    from jupyter_stream._runtime import Limits

    limits = _limits_of_run(monkeypatch, capsys, server, "--timeout", "5", "--stream-timeout", "2.5")
    assert limits == Limits(timeout=5.0, stream_timeout=2.5)


# -------------------------------------------------------------------------------------------- demo-lm


def test_demo_lm_serves_models():
    port = free_port()
    proc = subprocess.Popen([str(SCRIPT), "demo-lm", "--port", str(port), "--rate", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    assert resp.status == 200
                    body = json.loads(resp.read())
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body is not None, "the demo server never answered"
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["demo"]
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert f"demo LM listening on http://127.0.0.1:{port}/v1" in out


def test_demo_lm_on_a_taken_port_exits_1_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([str(SCRIPT), "demo-lm", "--port", str(port)], capture_output=True, text=True,
                              env=cli_env(), timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"jupyter-stream: cannot serve the demo LM on 127.0.0.1:{port}: ")
    assert "address already in use" in lines[0].lower()


# ------------------------------------------------------------------------------------------ renderer


def render(events, **kw) -> str:
    out = io.StringIO()
    r = js.TextRenderer(out, **kw)
    for ev in events:
        r.handle(ev)
    r.finish()
    return out.getvalue()


def test_renderer_makes_ansi_escapes_inert():
    events = [
        js.StreamResponse("self", "answer", "Par"),
        js.StreamResponse("self", "answer", "is\x1b[2J"),
        js.StreamResponse("self", "answer", " \x1b]0;title\x07done", True),
        js.Prediction(answer="Paris\x1b[2J"),
    ]
    for color in (False, True):
        text = render(events, color=color)
        assert "\x1b[2J" not in text
        assert "\x1b]0" not in text and "\x07" not in text
        assert "Paris␛[2J ␛]0;title␇done\n" in text
        assert "answer: 'Paris\\x1b[2J'" in text  # the prediction shows the repr


def test_renderer_plain_output_exactly():
    events = [
        js.StreamResponse("predict", "reasoning", "Because."),
        js.StreamResponse("predict", "reasoning", "", True),
        js.StatusMessage("Calling \x1b[31mtool\x1b[0m"),
        js.StreamResponse("predict", "answer", "Par"),
        js.StreamResponse("predict", "answer", "is", True),
        js.Prediction(reasoning="Because.", answer="Paris"),
    ]
    assert render(events, color=False) == (
        "── predict.reasoning ──\nBecause.\n· Calling ␛[31mtool␛[0m\n\n── predict.answer ──\nParis\n"
        "\n── prediction ──\nreasoning: 'Because.'\nanswer: 'Paris'\n"
    )


def test_renderer_color_styles_headers_only():
    text = render([js.StreamResponse("self", "answer", "hi", True)], color=True, show_prediction=False)
    assert text == "\x1b[1;36m── answer ──\x1b[0m\nhi\n"


def test_renderer_error_and_stopped():
    out = io.StringIO()
    r = js.TextRenderer(out, color=False)
    r.handle(js.StreamResponse("self", "answer", "Par"))
    r.finish(error=js.LMError("boom\x1b[2J"), stopped=True)
    assert out.getvalue() == "── answer ──\nPar\nstopped\nerror: LMError: boom␛[2J\n"


def test_inert_keeps_tabs_newlines_and_unicode():
    assert inert("a\tb\nc é 😀") == "a\tb\nc é 😀"
    assert inert("\x00\x1b\x7f\x9b\r") == "␀␛␡\ufffd␍"


@given(st.text(alphabet=st.sampled_from("ab é😀\t\n\r\x00\x07\x1b[\x7f\x85\x9b\x9f\xa0"), max_size=60))
def test_inert_replaces_exactly_the_control_characters(text):
    from jupyter_stream._terminal import _INERT

    assert inert(text) == text.translate(_INERT)


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"jupyter-stream {js.__version__}"


def test_with_a_key_and_no_model_says_what_to_pass_in_shell_terms():
    env = cli_env(OPENAI_API_KEY="sk-test-not-used")
    proc = subprocess.run([sys.executable, "-m", "jupyter_stream", "run", "question -> answer", "-i", "question=x"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "jupyter-stream: OPENAI_API_KEY is set, so the demo LM is not used: pass --model NAME (e.g. --model "
        "openai/gpt-4o-mini), or unset OPENAI_API_KEY to run on the demo LM"
    )
    assert "sk-test-not-used" not in proc.stderr + proc.stdout


def test_base_url_alone_uses_the_first_model_the_server_lists_and_says_so(server, lm):
    server.script("[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    proc = run_cli("run", "question -> answer", "--base-url", server.url, "--no-cache", "-i", "question=x")
    assert proc.returncode == 0, proc.stderr
    listed = server.requests[-1]["model"]
    assert listed and listed != "default"
    assert f"jupyter-stream: model {listed!r}, the first of the" in proc.stderr


def test_api_key_env_names_the_variable_and_a_missing_one_is_one_line(server, lm):
    missing = run_cli("run", "question -> answer", "--base-url", server.url, "--model", "m", "--api-key-env",
                      "MY_TEST_KEY_VAR", "-i", "question=x")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "jupyter-stream: --api-key-env MY_TEST_KEY_VAR: that environment variable is not set"
    server.script("[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    env = cli_env(MY_TEST_KEY_VAR="sk-from-my-var")
    ok = subprocess.run([sys.executable, "-m", "jupyter_stream", "run", "question -> answer", "--base-url", server.url,
                         "--model", "m", "--api-key-env", "MY_TEST_KEY_VAR", "--no-cache", "-i", "question=x"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "sk-from-my-var" not in ok.stdout + ok.stderr


def test_piping_into_head_ends_quietly_and_prints_a_stats_line_otherwise(tmp_path):
    err = tmp_path / "stderr.txt"
    cmd = (f"{sys.executable} -m jupyter_stream run 'question -> reasoning, answer' -i question=x --color never "
           f"2>{err} | head -n 1; exit ${{PIPESTATUS[0]}}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                          env=cli_env(JUPYTER_STREAM_DEMO_RATE="40"))
    assert proc.stdout == "── reasoning ──\n"
    assert proc.returncode == 141
    assert "Traceback" not in err.read_text() and "BrokenPipeError" not in err.read_text()
    full = run_cli("run", "question -> answer", "-i", "question=x")
    assert full.returncode == 0
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("· ") and " tokens in " in last and ", first after " in last
