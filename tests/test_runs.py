"""Run history (js.runs) and js.diff: every run kept with its inputs, messages and outcome, bounded, diffable."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import jupyter_stream as js
from jupyter_stream.demo import Fault, Reply

ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
LONG = "[[ ## answer ## ]]\n" + " ".join(f"w{i}" for i in range(400)) + "\n\n[[ ## completed ## ]]"


@pytest.fixture(autouse=True)
def history():
    js.runs.clear()
    before = (js.runs.max_runs, js.runs.max_bytes, js.runs.events)
    yield js.runs
    js.runs.limit(max_runs=before[0], max_bytes=before[1], events=before[2])
    js.runs.clear()


def test_a_run_is_kept_with_its_inputs_settings_messages_reply_and_prediction(lm, server):
    server.script(ANSWER)
    with js.context(lm=lm.copy(temperature=0.25), adapter="chat"):
        s = js.stream(js.Predict("question -> answer"), None, {"question": "Capital of France?"})
    final = list(s)[-1]
    assert len(js.runs) == 1
    run = js.runs[-1]
    assert run.inputs == {"question": "Capital of France?"}
    assert run.settings == {"model": "test-model", "base_url": server.url, "temperature": 0.25, "adapter": "chat"}
    assert run.status == "ok" and run.prediction is final and run.error is None
    (call,) = run.lm_calls
    assert call.messages == server.requests[-1]["messages"]
    assert call.raw == ANSWER and call.params == {"model": "test-model", "temperature": 0.25}
    assert call.usage["completion_tokens"] > 0
    assert call.ttft is not None and run.ttft is not None and 0 < call.duration <= run.duration
    assert run.events is None  # not recorded: nothing was kept per token
    assert repr(run).startswith("<Run #") and "ok: Predict(question -> answer)" in repr(run)
    assert "1 LM call to test-model" in repr(run) and "\n" not in repr(run)
    assert list(js.runs) == [run] and js.runs[0:5] == [run]
    assert s.run is run  # the stream knows its own run (the notebook's "diff with the previous run")


async def test_streamify_runs_are_kept_too(lm, server):
    server.script(ANSWER)
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    events = [e async for e in program(question="Capital?")]
    run = js.runs[-1]
    assert run.kind == "streamify" and run.inputs == {"question": "Capital?"}
    assert run.prediction is events[-1] and run.lm_calls[0].raw == ANSWER


def test_a_failed_run_keeps_its_error_and_the_partial_text(lm, server):
    server.script(Reply(content=LONG, fault=Fault("drop", after=12)))
    with pytest.raises(js.LMError) as info:
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    run = js.runs[-1]
    assert run.status == "error" and run.error is info.value and run.prediction is None
    assert run.outputs() == info.value.partial and run.outputs()["answer"].startswith("w0")
    assert run.lm_calls[0].error.startswith("LMError: ") and run.lm_calls[0].raw.startswith("[[ ## answer")
    assert "error LMError" in repr(run)


def test_a_stream_left_early_is_kept_as_stopped(lm, server):
    server.script(Reply(content=LONG, token_rate=100))
    with js.stream(js.Predict("question -> answer"), None, {"question": "q"}) as s:
        for event in s:
            if isinstance(event, js.StreamResponse):
                break
    assert js.runs[-1].status == "stopped"


def test_the_history_keeps_the_newest_runs_up_to_max_runs(lm, server):
    js.runs.limit(max_runs=3)
    for i in range(5):
        server.script(ANSWER)
        list(js.stream(js.Predict("question -> answer"), None, {"question": f"q{i}"}))
    assert len(js.runs) == 3
    assert [r.inputs["question"] for r in js.runs] == ["q2", "q3", "q4"]
    js.runs.limit(max_runs=1)
    assert [r.inputs["question"] for r in js.runs] == ["q4"]


def test_the_history_is_bounded_in_bytes_measured_over_what_a_run_holds(lm, server):
    big = "x" * 200_000
    server.script(ANSWER)
    list(js.stream(js.Predict("question -> answer"), None, {"question": big}))
    one = js.runs[-1]
    # The input is held twice (the inputs and the prompt sent): both counted, once each.
    assert 400_000 <= one.size < 450_000
    assert js.runs.bytes == one.size
    js.runs.limit(max_bytes=3 * one.size + 1000)
    for i in range(4):
        server.script(ANSWER)
        list(js.stream(js.Predict("question -> answer"), None, {"question": big + str(i)}))
    assert len(js.runs) == 3 and js.runs.bytes <= js.runs.max_bytes
    assert js.runs[-1].inputs["question"].endswith("3")
    js.runs.limit(max_bytes=1)  # the newest run is always kept, even alone over the limit
    assert len(js.runs) == 1 and js.runs[-1].inputs["question"].endswith("3")


def test_max_runs_0_turns_the_history_off_and_nothing_is_captured(lm, server):
    js.runs.limit(max_runs=0)
    server.script(ANSWER)
    s = js.stream(js.Predict("question -> answer"), None, {"question": "q"})
    list(s)
    assert s.capture is None and len(js.runs) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_limits_are_one_usage_error(bad):
    with pytest.raises(js.UsageError, match=r"js.runs.limit\(max_runs=...\) takes an int >= 0"):
        js.runs.limit(max_runs=bad)
    with pytest.raises(js.UsageError, match=r"js.runs.limit\(events=...\) takes True or False"):
        js.runs.limit(events=1)


def test_an_index_out_of_the_history_says_how_many_runs_it_holds():
    with pytest.raises(IndexError, match="the history holds 0 runs"):
        js.runs[-1]


def test_no_api_key_in_a_run(lm, server):
    server.script(ANSWER)
    with js.context(lm=lm.copy(extra_headers={"Authorization": "Bearer sk-test-SECRET-key-123", "X-Trace": "1"})):
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    run = js.runs[-1]
    seen = repr((run, run.settings, run.inputs, run.lm_calls, str(js.diff(run, run))))
    assert "SECRET" not in seen and "X-Trace" in seen


def _two_runs(lm, server, a_instructions, b_instructions, a_reply=ANSWER, b_reply=ANSWER):
    for instructions, reply in ((a_instructions, a_reply), (b_instructions, b_reply)):
        server.script(reply)
        list(js.stream(js.Predict("question -> answer", instructions), None, {"question": "Capital of France?"}))
    return js.runs[-2], js.runs[-1]


def test_diff_of_two_runs_whose_instructions_differ_names_the_change(lm, server):
    a, b = _two_runs(lm, server, "Answer in one word.", "Answer in <b>French</b>.",
                     b_reply="[[ ## answer ## ]]\nParis, la capitale\n\n[[ ## completed ## ]]")
    d = js.diff(a, b)
    assert d  # truthy: something changed
    text = str(d)
    assert text.startswith(f"diff {a.label} -> {b.label}: Predict(question -> answer)")
    assert "prompt, LM call 1 (self), message 1 (system):" in text
    assert "Answer in one word." in text and "Answer in <b>French</b>." in text
    lines = text.splitlines()
    assert any(line.strip().startswith("-") and "Answer in one word." in line for line in lines)
    assert any(line.strip().startswith("+") and "Answer in <b>French</b>." in line for line in lines)
    assert "output answer: Paris{+, la capitale+}" in text
    assert not d.settings and not d.inputs
    page = d._repr_html_()
    assert "&lt;b&gt;French&lt;/b&gt;" in page and "<b>French</b>" not in page and "<script" not in page
    assert "<ins" in page and "<del" in page
    assert js.diff().b is b  # default: the last two runs


def test_diff_names_settings_inputs_and_status_that_differ(lm, server):
    server.script(ANSWER, Reply(content=LONG, fault=Fault("drop", after=3)))
    list(js.stream(js.Predict("question -> answer"), None, {"question": "one"}))
    with js.context(lm=lm.copy(temperature=0.9)), pytest.raises(js.LMError):
        list(js.stream(js.Predict("question -> answer"), None, {"question": "two"}))
    d = js.diff(-2, -1)
    assert ("temperature", None, 0.9) in d.settings
    assert d.inputs == [("question", "one", "two")]
    assert d.status == ("ok", "error: LMError")
    text = str(d)
    assert "setting temperature: null -> 0.9" in text and "status: ok -> error: LMError" in text
    assert "input question: [-one-]{+two+}" in text


def test_diff_of_a_run_with_itself_is_empty_and_says_so(lm, server):
    server.script(ANSWER)
    list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    d = js.diff(-1, -1)
    assert not d and "no change" in str(d) and "no change" in repr(d)


@pytest.mark.parametrize("a, b, message", [(5, -1, r"js.diff\(a=5\): the history holds 1 run"),
                                           ("x", -1, r"takes runs or indices into js.runs, got a=str")])
def test_diff_of_what_is_not_a_run_is_one_usage_error(lm, server, a, b, message):
    server.script(ANSWER)
    list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    with pytest.raises(js.UsageError, match=message):
        js.diff(a, b)


async def test_serve_keeps_no_run_unless_asked(lm, server):
    program = js.Predict("question -> answer")
    for keep, expected in ((False, 0), (True, 1)):
        server.script(ANSWER)
        app = js.asgi_app(program, keep_runs=keep)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            r = await client.post("/predict", json={"question": "someone else's question"})
        assert r.status_code == 200 and r.json()["prediction"] == {"answer": "Paris"}
        assert len(js.runs) == expected
    assert js.runs[-1].inputs == {"question": "someone else's question"}


async def test_runs_running_at_once_each_end_in_the_history(lm, server):
    server.script(*[ANSWER] * 5)
    await asyncio.gather(*[_drain(js.stream(js.Predict("question -> answer"), None, {"question": f"q{i}"}))
                           for i in range(5)])
    assert sorted(r.inputs["question"] for r in js.runs) == [f"q{i}" for i in range(5)]
    assert len({r.label for r in js.runs}) == 5


async def _drain(s):
    return [e async for e in s]
