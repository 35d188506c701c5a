"""Real DSPy programs (Predict, ChainOfThought, ReAct, custom modules) streamed by jupyter_stream."""

from __future__ import annotations

import asyncio
import json

import dspy
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jupyter_stream as js
from jupyter_stream.demo import Fault, Reply

from .conftest import fields_by_call, last_counts

CHAT = "[[ ## reasoning ## ]]\nIt is in France.\n\n[[ ## answer ## ]]\nParis, of course.\n\n[[ ## completed ## ]]"


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:]) if b > a]


def test_chain_of_thought_streams_every_field_exactly(dlm, server):
    server.script(CHAT)
    events = list(js.stream(dspy.ChainOfThought("question -> answer"), None, {"question": "Capital of France?"}))
    final = events[-1]
    assert isinstance(final, dspy.Prediction)
    assert fields_by_call(events) == {
        ("predict", 1, "reasoning"): final.reasoning,
        ("predict", 1, "answer"): final.answer,
    }
    assert final.answer == "Paris, of course."
    assert set(last_counts(events).values()) == {1}


@pytest.mark.parametrize("adapter", ["chat", "json", "xml"])
def test_each_adapter_streams_values_equal_to_dspys_parse(dlm, adapter):
    """The demo LM answers in the format DSPy's prompt asks for; the chunks join to DSPy's own parse."""
    dspy_adapter = {"chat": dspy.ChatAdapter, "json": dspy.JSONAdapter, "xml": getattr(dspy, "XMLAdapter", None)}[adapter]
    if dspy_adapter is None:  # pragma: no cover - every supported DSPy has it
        pytest.skip("this DSPy has no XMLAdapter")
    with dspy.context(adapter=dspy_adapter()):
        events = list(js.stream(dspy.ChainOfThought("question -> answer"), None, {"question": "Why is the sky blue?"}))
    final = events[-1]
    assert isinstance(final, dspy.Prediction)
    joined = fields_by_call(events)
    assert joined == {("predict", 1, name): final[name] for name in ("reasoning", "answer")}
    assert all('"' not in v[:1] for v in joined.values())  # no JSON quotes leak into the chunks


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    adapter=st.sampled_from(["chat", "json", "xml"]),
    answer=st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="[]<>"), min_size=1, max_size=40).map(str.strip).filter(bool),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
)
def test_any_split_of_the_reply_joins_to_dspys_prediction(dlm, server, adapter, answer, cuts):
    reasoning = "Step one.\nStep two: \"quoted\"."
    if adapter == "chat":
        reply = f"[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"
        dspy_adapter = dspy.ChatAdapter()
    elif adapter == "json":
        reply = json.dumps({"reasoning": reasoning, "answer": answer}, ensure_ascii=False)
        dspy_adapter = dspy.JSONAdapter()
    else:
        reply = f"<reasoning>{reasoning}</reasoning>\n<answer>{answer}</answer>"
        dspy_adapter = dspy.XMLAdapter()
    program = dspy.ChainOfThought("question -> answer")
    try:  # DSPy 3.0's JSONAdapter cannot parse some replies at all (a '{' inside a value): no value to match
        expected = dspy_adapter.parse(program.predict.signature, reply)
    except Exception:  # noqa: BLE001
        assume(False)
    server.script(Reply(content=reply, chunks=_split(reply, cuts)))
    with dspy.context(adapter=dspy_adapter):
        events = list(js.stream(program, None, {"question": "q"}))
    final = events[-1]
    assert {k: final[k] for k in expected} == expected
    assert isinstance(final, dspy.Prediction), final
    assert fields_by_call(events) == {("predict", 1, "reasoning"): final.reasoning, ("predict", 1, "answer"): final.answer}
    assert last_counts(events) == {("predict", 1, "reasoning"): 1, ("predict", 1, "answer"): 1}


def test_missing_completed_marker_still_closes_the_last_field(dlm, server):
    server.script("[[ ## answer ## ]]\nParis")
    events = list(js.stream(dspy.Predict("question -> answer"), None, {"question": "q"}))
    assert fields_by_call(events) == {("self", 1, "answer"): "Paris"}
    assert last_counts(events) == {("self", 1, "answer"): 1}
    assert events[-1].answer == "Paris"


def test_streamify_with_dspy_parameters_and_listeners(dlm, server):
    server.script(CHAT)
    program = dspy.ChainOfThought("question -> answer")
    streamer = js.streamify(
        program, stream_listeners=[js.StreamListener("answer")], include_final_prediction_in_output_stream=False,
        async_streaming=False,
    )
    events = list(streamer(question="q"))
    assert all(isinstance(e, js.StreamResponse) for e in events)  # the prediction was left out, as asked
    assert "".join(e.chunk for e in events) == "Paris, of course."
    assert {e.predict_name for e in events} == {"predict"}


def test_a_listener_needs_the_predictor_when_a_field_is_in_two(dlm):
    class Two(dspy.Module):
        def __init__(self):
            super().__init__()
            self.a = dspy.Predict("question -> answer")
            self.b = dspy.Predict("question -> answer")

        def forward(self, question):
            return self.b(question=self.a(question=question).answer)

    with pytest.raises(js.ListenerError, match="not unique"):
        js.streamify(Two(), stream_listeners=[js.StreamListener("answer")])
    two = Two()
    js.streamify(two, stream_listeners=[js.StreamListener("answer", predict=two.b)])  # no error


async def test_twenty_concurrent_calls_of_one_streamified_program_each_stream_their_own_text(dlm):
    program = js.streamify(dspy.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])

    async def one(i: int):
        return [x async for x in program(question=f"question {i}")]

    results = await asyncio.gather(*(one(i) for i in range(20)))
    for i, events in enumerate(results):
        final = events[-1]
        assert isinstance(final, dspy.Prediction)
        assert f"question {i}" in final.answer
        assert "".join(e.chunk for e in events if isinstance(e, js.StreamResponse)) == final.answer


class SyncPipeline(dspy.Module):
    """A user's module with ``forward`` only: it runs in a worker thread."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.polish = dspy.ChainOfThought("answer -> final")

    def forward(self, question):
        return self.polish(answer=self.draft(question=question).answer)


class AsyncLoop(dspy.Module):
    """A user's module with ``aforward`` calling one predictor in a loop."""

    def __init__(self):
        super().__init__()
        self.step = dspy.Predict("question -> answer")

    async def aforward(self, question, rounds: int = 3):
        answer = question
        for _ in range(rounds):
            answer = (await self.step.acall(question=answer)).answer
        return dspy.Prediction(answer=answer)


def test_custom_sync_module_streams_each_predictor(dlm):
    events = list(js.stream(SyncPipeline(), None, {"question": "q"}))
    final = events[-1]
    joined = fields_by_call(events)
    assert set(joined) == {("draft", 1, "answer"), ("polish.predict", 2, "reasoning"), ("polish.predict", 2, "final")}
    assert joined[("polish.predict", 2, "final")] == final.final


def test_predictor_called_in_a_loop_gives_one_call_id_per_call(dlm):
    events = list(js.stream(AsyncLoop(), None, {"question": "q", "rounds": 3}))
    joined = fields_by_call(events)
    assert sorted(joined) == [("step", 1, "answer"), ("step", 2, "answer"), ("step", 3, "answer")]
    assert joined[("step", 3, "answer")] == events[-1].answer


async def test_concurrent_calls_of_one_predictor_never_interleave(dlm):
    predict = dspy.Predict("question -> answer")

    class Gather(dspy.Module):
        def __init__(self):
            super().__init__()
            self.predict = predict

        async def aforward(self, questions):
            outs = await asyncio.gather(*(self.predict.acall(question=q) for q in questions))
            return dspy.Prediction(answers=[o.answer for o in outs])

    questions = [f"question number {i}" for i in range(4)]
    events = [e async for e in js.stream(Gather(), None, {"questions": questions})]
    joined = fields_by_call(events)
    assert len(joined) == 4 and {k[1] for k in joined} == {1, 2, 3, 4}
    assert sorted(joined.values()) == sorted(events[-1].answers)


def test_dspy_parallel_streams_each_call(dlm):
    predict = dspy.Predict("question -> answer")

    class Fan(dspy.Module):
        def __init__(self):
            super().__init__()
            self.predict = predict

        def forward(self, questions):
            par = dspy.Parallel(num_threads=3, disable_progress_bar=True)
            outs = par([(self.predict, {"question": q}) for q in questions])
            return dspy.Prediction(answers=[o.answer for o in outs])

    questions = [f"parallel question {i}" for i in range(3)]
    events = list(js.stream(Fan(), None, {"questions": questions}))
    joined = fields_by_call(events)
    assert sorted(joined.values()) == sorted(events[-1].answers)
    assert len({k[1] for k in joined}) == 3


def test_react_steps_are_separate_calls_with_tool_status(dlm, server):
    calls = []

    def search(query: str) -> str:
        """Search the web."""
        calls.append(("search", query))
        return f"results for {query}"

    def lookup(term: str) -> str:
        """Look a term up."""
        calls.append(("lookup", term))
        return f"{term}: a city"

    def step(thought: str, tool: str, args: str) -> str:
        return (f"[[ ## next_thought ## ]]\n{thought}\n\n[[ ## next_tool_name ## ]]\n{tool}\n\n"
                f"[[ ## next_tool_args ## ]]\n{args}\n\n[[ ## completed ## ]]")

    server.script(
        step("Search for it first.", "search", '{"query": "Paris"}'),
        step("Now look the term up.", "lookup", '{"term": "Paris"}'),
        step("I know enough.", "finish", "{}"),
        "[[ ## reasoning ## ]]\nBoth tools agree.\n\n[[ ## answer ## ]]\nIn France.\n\n[[ ## completed ## ]]",
    )
    agent = dspy.ReAct("question -> answer", tools=[search, lookup], max_iters=4)
    events = list(js.stream(agent, None, {"question": "Where is Paris?"}))
    final = events[-1]
    assert isinstance(final, dspy.Prediction)
    joined = fields_by_call(events)
    assert calls == [("search", "Paris"), ("lookup", "Paris")]
    assert final.answer == "In France."
    # One LM call per step, each its own pane: ids 1-3 for the react steps, 4 for the extraction.
    assert joined[("react", 1, "next_thought")] == "Search for it first."
    assert joined[("react", 2, "next_tool_name")] == "lookup"
    assert joined[("react", 3, "next_thought")] == "I know enough."
    assert joined[("extract.predict", 4, "answer")] == "In France."
    status = [e.message for e in events if isinstance(e, js.StatusMessage)]
    assert "Calling tool search..." in status and "Calling tool lookup..." in status
    assert set(last_counts(events).values()) == {1}


def test_compiled_program_saved_and_loaded_streams_with_its_demos(dlm, tmp_path):
    program = dspy.ChainOfThought("question -> answer")
    program.predict.demos = [dspy.Example(question="2+2?", reasoning="Add.", answer="4").with_inputs("question")]
    path = tmp_path / "compiled.json"
    program.save(str(path))
    loaded = dspy.ChainOfThought("question -> answer")
    loaded.load(str(path))
    events = list(js.stream(loaded, None, {"question": "3+3?"}, lm_events=True))
    request = next(e for e in events if isinstance(e, js.LMRequest))
    assert any("2+2?" in m["content"] for m in request.messages)  # the demo went into the prompt
    assert fields_by_call(events)[("predict", 1, "answer")] == events[-1].answer


def test_cache_hit_shows_the_reply_at_once_marked_cached(server):
    server.reset()
    lm = dspy.LM("openai/cached-model", api_base=server.url, api_key="k", cache=True, num_retries=0)
    program = dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        first = list(js.stream(program, None, {"question": "cache me please"}, lm_events=True))
        second = list(js.stream(program, None, {"question": "cache me please"}, lm_events=True))
    responses = [e for e in second if isinstance(e, js.LMResponse)]
    assert [r.cached for r in responses] == [True]
    assert fields_by_call(second) == fields_by_call(first)
    assert last_counts(second) == {("self", 1, "answer"): 1}


def test_lm_request_and_response_match_lm_history(dlm):
    events = list(js.stream(dspy.Predict("question -> answer"), None, {"question": "inspect me"}, lm_events=True))
    request = next(e for e in events if isinstance(e, js.LMRequest))
    response = next(e for e in events if isinstance(e, js.LMResponse))
    entry = dlm.history[-1]
    assert request.messages == entry["messages"]
    assert request.call_id == response.call_id == 1
    assert response.raw.startswith("[[ ## answer ## ]]")
    assert events[-1].answer in response.raw


def test_settings_are_captured_when_the_stream_is_created(server):
    server.reset()
    lm = dspy.LM("openai/captured-model", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        s = js.stream(dspy.Predict("question -> answer"), None, {"question": "q"}, lm_events=True)
    events = list(s)  # read outside the context
    assert next(e for e in events if isinstance(e, js.LMRequest)).model == "openai/captured-model"


def test_lm_failure_mid_stream_raises_lm_error_with_the_partial_text(dlm, server):
    reply = "[[ ## answer ## ]]\nParis is the capital of France.\n\n[[ ## completed ## ]]"
    # DSPy 3.0's ChatAdapter calls the LM again (its JSON fallback) after a failure: that call fails too.
    server.script(Reply(content=reply, chunks=_split(reply, list(range(0, len(reply), 3))), fault=Fault("drop", after=12)),
                  Fault("status", status=500, times=3))
    events = []
    with pytest.raises(js.LMError) as info:
        for e in js.stream(dspy.Predict("question -> answer"), None, {"question": "q"}):
            events.append(e)
    streamed = fields_by_call(events).get(("self", 1, "answer"), "")
    assert streamed and info.value.partial.get("answer", "").startswith(streamed)
    assert last_counts(events)[("self", 1, "answer")] == 1  # the open field was closed


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_break_closes_the_request(server, kind):
    server.reset()
    lm = dspy.LM("openai/slow", api_base=server.url, api_key="k", cache=False, num_retries=0)
    program = dspy.Predict("question -> answer") if kind == "async" else SyncPipeline()
    server.script(Reply(content="[[ ## answer ## ]]\n" + "word " * 2000, token_rate=200))
    with dspy.context(lm=lm):
        s = js.stream(program, None, {"question": "q"})
        for event in s:
            if isinstance(event, js.StreamResponse) and event.chunk.strip():
                break
        s.close()
    assert server.wait_idle(1.0)
    assert server.stream_closed_early == 1


def test_show_and_magic_input_names_come_from_the_program():
    from jupyter_stream import _programs as programs

    assert programs.input_names(dspy.ChainOfThought("question, context -> answer")) == ["question", "context"]
    assert programs.input_names(SyncPipeline()) == ["question"]
    assert programs.input_names(AsyncLoop()) == ["question", "rounds"]
    with pytest.raises(js.InputError, match="missing input"):
        js.stream(dspy.Predict("question -> answer"), None, {})


def test_cli_runs_a_program_named_module_colon_attr(tmp_path, server):
    import os
    import subprocess
    import sys

    (tmp_path / "my_app.py").write_text(
        "import dspy\n"
        f"dspy.configure(lm=dspy.LM('openai/cli-model', api_base={server.url!r}, api_key='k', cache=False))\n"
        "program = dspy.ChainOfThought('question -> answer')\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = [sys.executable, "-m", "jupyter_stream", "run"]
    ok = subprocess.run([*run, "my_app:program", "--input", "question=Why?", "--color", "never"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "── predict.reasoning ──" in ok.stdout and "── predict.answer ──" in ok.stdout
    assert "── prediction ──" in ok.stdout
    bad = subprocess.run([*run, "my_app:nope", "--input", "question=Why?"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "jupyter-stream: 'my_app' has no attribute 'nope' (from 'my_app:nope')"


async def test_streamify_without_listeners_passes_the_raw_chunks_through(dlm, server):
    reply = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    server.script(Reply(content=reply, chunks=["[[ ## answer ## ]]\n", "Par", "is\n\n", "[[ ## completed ## ]]"]))
    events = [e async for e in js.streamify(dspy.Predict("question -> answer"))(question="q")]
    *chunks, final = events
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert isinstance(final, dspy.Prediction) and final.answer == "Paris"


@pytest.mark.parametrize("module", ["predict", "cot"])
def test_native_reasoning_deltas_stream_in_a_pane_of_their_own(dlm, server, module):
    """reasoning_content streams live as `reasoning` for a Predict, and as `reasoning_content` beside
    ChainOfThought's own `reasoning` field: two panes, neither swallowing the other."""
    content = ("[[ ## reasoning ## ]]\nThe signature's reasoning.\n\n" if module == "cot" else "") + (
        "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    server.script(Reply(content=content, reasoning="The model's own thinking, token by token."))
    program = dspy.ChainOfThought("question -> answer") if module == "cot" else dspy.Predict("question -> answer")
    events = list(js.stream(program, None, {"question": "q"}))
    name = "predict" if module == "cot" else "self"
    joined = fields_by_call(events)
    native = "reasoning_content" if module == "cot" else "reasoning"
    assert joined[(name, 1, native)] == "The model's own thinking, token by token."
    assert joined[(name, 1, "answer")] == "Paris" == events[-1].answer
    if module == "cot":
        assert joined[(name, 1, "reasoning")] == "The signature's reasoning." == events[-1].reasoning
    assert set(last_counts(events).values()) == {1}


_MESSY = st.sampled_from([
    "[[ ## reasoning ## ]]", "[[ ## answer ## ]]", "[[ ## completed ## ]]", "[[ ## other ## ]]", "\n", "\r\n", "\r",
    "\u2028", " ", "  ", "\t", "text", "[[", " ## ", "]]", "x [[ ## answer ## ]] y", "\n\n", "  [[ ## answer ## ]]",
    "[[ ## answ", "é", "😀",
])


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(_MESSY, max_size=6), middle=st.lists(_MESSY, max_size=6), after=st.lists(_MESSY, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
)
def test_dspy_dialect_chunks_join_to_dspys_own_chat_parse_of_messy_replies(before, middle, after, cuts):
    """DSPy reads its chat format line by line (headers only at a line's start, CRLF and U+2028 as breaks,
    the first section of a field wins, values stripped): for any messy reply DSPy can parse, and any split
    of it, the bridge's chunks join to DSPy's value for each field, with one last chunk each."""
    from jupyter_stream.adapters.dspy_chat import DSPyChatAdapter
    from jupyter_stream._dspy_bridge import _our_signature

    reply = "".join(before) + "\n[[ ## reasoning ## ]]" + "".join(middle) + "\n[[ ## answer ## ]]" + "".join(after)
    signature = dspy.ChainOfThought("question -> answer").predict.signature
    expected = dspy.ChatAdapter().parse(signature, reply)
    ours = _our_signature(signature)
    assert DSPyChatAdapter().parse(ours, reply) == expected
    parser = DSPyChatAdapter().field_parser(ours)
    deltas = [d for piece in _split(reply, cuts) for d in parser.feed(piece)] + parser.finish()
    joined = {name: "".join(d.text for d in deltas if d.field == name) for name in expected}
    assert joined == expected
    assert sorted(d.field for d in deltas if d.last) == ["answer", "reasoning"]


def test_an_adapter_without_a_parser_of_ours_shows_its_fields_whole_with_a_status_line(dlm, server):
    """A user's adapter that parses differently (here: upper case) cannot be streamed by our parsers: its
    fields arrive whole, equal to what it parsed, once it parsed the reply; a status line says so."""

    class Shouting(dspy.ChatAdapter):
        def parse(self, signature, completion):
            return {k: v.upper() for k, v in super().parse(signature, completion).items()}

    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    with dspy.context(adapter=Shouting()):
        events = list(js.stream(dspy.Predict("question -> answer"), None, {"question": "q"}))
    assert events[-1].answer == "PARIS"
    assert fields_by_call(events) == {("self", 1, "answer"): "PARIS"}
    assert last_counts(events) == {("self", 1, "answer"): 1}
    assert any("Shouting: the fields show when the reply is parsed" in e.message
               for e in events if isinstance(e, js.StatusMessage))


def test_a_parse_failure_raises_adapter_parse_error_with_what_streamed(dlm, server):
    """The reply lacks a field DSPy needs: our AdapterParseError, carrying the text that had streamed, which
    the events kept too (DSPy 3.0's ChatAdapter retries with its JSON fallback, which fails as well)."""
    server.script("[[ ## reasoning ## ]]\nHalf a thought.\n\n[[ ## completed ## ]]", '{"reasoning": "Half a thought."}')
    events = []
    with pytest.raises(js.AdapterParseError) as info:
        for event in js.stream(dspy.ChainOfThought("question -> answer"), None, {"question": "q"}):
            events.append(event)
    assert fields_by_call(events)[("predict", 1, "reasoning")] == "Half a thought."
    assert info.value.partial.get("reasoning") == "Half a thought."
    assert "Half a thought." in info.value.raw


def test_stream_timeout_bounds_the_wait_for_a_stalled_dspy_reply(dlm, server):
    server.script(Reply(content="[[ ## answer ## ]]\nParis is the capital", fault=Fault("stall", after=12)))
    events = []
    with pytest.raises(js.StreamTimeoutError) as info:
        for event in js.stream(dspy.Predict("question -> answer"), None, {"question": "q"}, stream_timeout=0.5):
            events.append(event)
    assert info.value.limit == "stream_timeout"
    streamed = fields_by_call(events).get(("self", 1, "answer"), "")
    assert streamed and info.value.partial.get("answer", "").startswith(streamed)
    assert server.wait_idle(2.0) and server.stream_closed_early == 1


def test_serve_streams_a_dspy_program_named_module_colon_attr(tmp_path, server):
    """``jupyter-stream serve my_app:program`` with a DSPy program: the model options go to DSPy."""
    import os
    import socket
    import subprocess
    import sys
    import time

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    (tmp_path / "my_app.py").write_text("import dspy\nprogram = dspy.ChainOfThought('question -> answer')\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "SERVE_KEY": "sk-test"}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_stream", "serve", "my_app:program", "--port", str(port),
                             "--model", "openai/served-dspy", "--base-url", server.url, "--api-key-env", "SERVE_KEY"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        server.reset()
        server.script(CHAT)
        response = httpx.post(url + "/stream", json={"question": "Capital of France?"}, timeout=60)
        lines = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        events = [json.loads(x) for x in lines[:-1]]
        chunks = "".join(e["stream_response"]["chunk"] for e in events if "stream_response" in e
                         and e["stream_response"]["signature_field_name"] == "answer")
        assert chunks == events[-1]["prediction"]["answer"] == "Paris, of course."
        assert server.requests[-1]["model"] == "served-dspy"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
