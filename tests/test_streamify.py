"""streamify: DSPy's semantics kept, and where it does better, proven on a real loopback server."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import collect_fields, last_flags, load_fixture

import jupyter_stream as js
from jupyter_stream.demo import Reply

QA_REPLY = (
    "[[ ## reasoning ## ]]\nFrance is in Europe;  its capital\nis Paris.\n\n"
    "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
)


async def run(program, **inputs):
    return [x async for x in program(**inputs)]


def sized_splits(text: str):
    """The same reply cut into deltas of several shapes."""
    yield "one char", list(text)
    yield "whole", [text]
    for n in (2, 3, 7, 40, 80):
        yield f"{n} chars", [text[i : i + n] for i in range(0, len(text), n)]


# ------------------------------------------------------------------------------------- semantics

async def test_listeners_stream_fields_then_prediction(lm, server):
    server.script(QA_REPLY)
    program = js.streamify(
        js.ChainOfThought("question -> answer"),
        stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")],
    )
    out = await run(program, question="Capital of France?")
    final = out[-1]
    assert isinstance(final, js.Prediction)
    assert final.answer == "Paris"
    assert final.reasoning == "France is in Europe;  its capital\nis Paris."
    assert collect_fields(out) == {"predict.reasoning": final.reasoning, "predict.answer": "Paris"}
    assert all(isinstance(x, js.StreamResponse) for x in out[:-1])
    assert last_flags(out) == {"predict.reasoning": 1, "predict.answer": 1}
    # the last chunk of each field comes right before the next field starts
    fields = [x.signature_field_name for x in out[:-1]]
    assert fields == sorted(fields, key=["reasoning", "answer"].index)


@pytest.mark.parametrize("fixture", ["gpt4o_mini_chat_qa.json", "gemini_chat_qa.json", "chat_no_completed.json"])
async def test_provider_shaped_streams_join_to_the_prediction(lm, server, fixture):
    rec = load_fixture(fixture)
    server.script(rec["chunks"])
    program = js.streamify(
        js.ChainOfThought("question -> answer"),
        stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")],
    )
    out = await run(program, question=rec["question"])
    final = out[-1]
    assert collect_fields(out) == {"predict.reasoning": final.reasoning, "predict.answer": final.answer}
    assert final.reasoning == rec["fields"]["reasoning"]
    assert final.answer == rec["fields"]["answer"]
    assert last_flags(out) == {"predict.reasoning": 1, "predict.answer": 1}
    for ev in out[:-1]:
        assert "[[" not in ev.chunk and "##" not in ev.chunk


async def test_json_recorded_stream_decodes_escapes(lm, server):
    rec = load_fixture("gpt4o_mini_json_qa.json")
    server.script(rec["chunks"])
    js.configure(adapter="json")
    program = js.streamify(
        js.ChainOfThought("question -> answer"),
        stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")],
    )
    out = await run(program, question=rec["question"])
    final = out[-1]
    got = collect_fields(out)
    assert got["predict.reasoning"] == final.reasoning == rec["fields"]["reasoning"]
    assert got["predict.answer"] == final.answer
    assert "\n" in final.reasoning and '"' in final.reasoning and "é" in final.reasoning
    for ev in out[:-1]:
        assert "\\" not in ev.chunk and '{"' not in ev.chunk


@pytest.mark.parametrize("adapter", ["chat", "json", "xml"])
async def test_any_split_joins_to_the_final_value(lm, server, adapter):
    """The split invariant through the whole stack: HTTP, SSE, the adapter's parser, the router."""
    from jupyter_stream.adapters import get_adapter

    ad = get_adapter(adapter)
    sig = js.Signature("question -> reasoning, answer")
    values = {"reasoning": 'Step 1: "quote" <b>tag</b>\n  indented {brace} [[ not a header', "answer": "Paris, France"}
    reply = ad.format_reply(sig, values)
    js.configure(adapter=adapter)
    program = js.streamify(
        js.Predict(sig), stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")]
    )
    for label, chunks in sized_splits(reply):
        server.script(Reply(content=reply, chunks=chunks))
        out = await run(program, question="q")
        final = out[-1]
        assert final.to_dict() == values, label
        assert collect_fields(out) == {"self.reasoning": values["reasoning"], "self.answer": values["answer"]}, label
        assert last_flags(out) == {"self.reasoning": 1, "self.answer": 1}, label


async def test_without_listeners_raw_chunks_pass_through(lm, server):
    server.script("[[ ## answer ## ]]\nHi there\n\n[[ ## completed ## ]]")
    out = await run(js.streamify(js.Predict("question -> answer")), question="q")
    from openai.types.chat import ChatCompletionChunk

    chunks = [x for x in out if isinstance(x, ChatCompletionChunk)]
    assert len(chunks) == len(out) - 1 and len(chunks) > 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[[ ## answer ## ]]\nHi there\n\n[[ ## completed ## ]]"
    assert out[-1].answer == "Hi there"


async def test_include_final_prediction_false(lm, server):
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    program = js.streamify(
        js.Predict("question -> answer"),
        stream_listeners=[js.StreamListener("answer")],
        include_final_prediction_in_output_stream=False,
    )
    out = await run(program, question="q")
    assert out and all(isinstance(x, js.StreamResponse) for x in out)
    assert "".join(x.chunk for x in out) == "Paris"


async def test_cache_hit_streams_nothing_and_yields_the_prediction(server):
    server.reset()
    cached_lm = js.LM("test-model", base_url=server.url, api_key="k", cache=True)
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    program = js.streamify(
        js.Predict("question -> answer", lm=cached_lm),
        stream_listeners=[js.StreamListener("answer")],
        include_final_prediction_in_output_stream=False,
    )
    first = await run(program, question="cache me")
    assert "".join(x.chunk for x in first) == "Paris"
    second = await run(program, question="cache me")
    assert len(server.requests) == 1
    assert second == [js.Prediction(answer="Paris")]


async def test_status_messages_from_tools_and_custom_provider(lm, server):
    server.script("[[ ## answer ## ]]\n42\n\n[[ ## completed ## ]]")

    class Provider(js.StatusMessageProvider):
        def lm_start_status_message(self, instance, inputs):
            return f"asking {instance.model}"

    class Agent(js.Module):
        def __init__(self):
            self.lookup = js.Tool(lambda query: f"facts about {query}", name="lookup")
            self.answer = js.Predict("question, facts -> answer")

        async def aforward(self, question):
            facts = await self.lookup.acall(query=question)
            return await self.answer.acall(question=question, facts=facts)

    program = js.streamify(Agent(), status_message_provider=Provider(), stream_listeners=[js.StreamListener("answer")])
    out = await run(program, question="life")
    messages = [x.message for x in out if isinstance(x, js.StatusMessage)]
    assert messages == [
        "Calling tool lookup...",
        "Tool calling finished! Querying the LLM with tool calling results...",
        "asking test-model",
    ]
    assert collect_fields(out) == {"answer.answer": "42"}
    assert server.requests[-1]["messages"][-1]["content"].count("facts about life") == 1


async def test_sync_program_streams_through_a_worker_thread(lm, server):
    server.script("[[ ## answer ## ]]\ndraft\n\n[[ ## completed ## ]]", "[[ ## final ## ]]\npolished\n\n[[ ## completed ## ]]")

    class TwoStep(js.Module):
        def __init__(self):
            self.draft = js.Predict("question -> answer")
            self.polish = js.Predict("answer -> final")

        def forward(self, question):  # a plain sync forward
            return self.polish(answer=self.draft(question=question).answer)

    program = js.streamify(
        TwoStep(), stream_listeners=[js.StreamListener("answer"), js.StreamListener("final")]
    )
    out = await run(program, question="q")
    assert collect_fields(out) == {"draft.answer": "draft", "polish.final": "polished"}
    assert out[-1].final == "polished"


async def test_sync_streaming_generator_from_a_thread(lm, server):
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    program = js.streamify(
        js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")], async_streaming=False
    )
    # called from a running loop (as in a notebook cell): the sync API must still work
    out = await asyncio.to_thread(lambda: list(program(question="q")))
    assert collect_fields(out) == {"self.answer": "Paris"}
    assert out[-1].answer == "Paris"


def test_sync_streaming_inside_a_running_loop(lm, server):
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    program = js.streamify(
        js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")], async_streaming=False
    )

    async def cell():  # a notebook cell: sync code while the kernel's loop runs
        return list(program(question="q"))

    out = asyncio.run(cell())
    assert collect_fields(out) == {"self.answer": "Paris"}


def test_apply_sync_streaming_early_break_closes_the_request(lm, server):
    long = "[[ ## answer ## ]]\n" + " ".join(f"word{i}" for i in range(400)) + "\n\n[[ ## completed ## ]]"
    server.script(Reply(content=long, token_rate=400))
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    gen = js.apply_sync_streaming(program(question="q"))
    got = []
    for ev in gen:
        got.append(ev)
        if len(got) == 5:
            break
    gen.close()
    assert server.wait_idle(5.0)
    assert server.stream_closed_early == 1


# ------------------------------------------------------------------------- where we beat DSPy

async def test_reused_program_streams_every_call(lm, server):
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    for i in range(3):
        server.script(f"[[ ## answer ## ]]\nreply {i}\n\n[[ ## completed ## ]]")
        out = await run(program, question=f"q{i}")
        assert collect_fields(out) == {"self.answer": f"reply {i}"}
        assert last_flags(out) == {"self.answer": 1}


async def test_twenty_concurrent_calls_each_get_their_own_chunks(lm, server):
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    # the automatic responder answers each question with text that names it
    results = await asyncio.gather(*(run(program, question=f"question number {i}") for i in range(20)))
    for i, out in enumerate(results):
        final = out[-1]
        assert f"question number {i}" in final.answer
        assert collect_fields(out) == {"self.answer": final.answer}
        assert last_flags(out) == {"self.answer": 1}


async def test_nested_modules_and_a_loop_with_allow_reuse(lm, server):
    class Step(js.Module):
        def __init__(self):
            self.generate = js.ChainOfThought("topic -> idea")

        async def aforward(self, topic):
            return await self.generate.acall(topic=topic)

    class Brainstorm(js.Module):
        def __init__(self):
            self.step = Step()

        async def aforward(self, topics):
            return [await self.step.acall(topic=t) for t in topics.split(",")]

    prog = Brainstorm()
    assert [n for n, _ in prog.named_predictors()] == ["step.generate.predict"]
    for i in range(3):
        server.script(f"[[ ## reasoning ## ]]\nthink {i}\n\n[[ ## idea ## ]]\nidea {i}\n\n[[ ## completed ## ]]")
    reuse = js.streamify(prog, stream_listeners=[js.StreamListener("idea", allow_reuse=True)])
    out = await run(reuse, topics="a,b,c")
    assert "".join(x.chunk for x in out if isinstance(x, js.StreamResponse)) == "idea 0idea 1idea 2"
    assert sum(x.is_last_chunk for x in out if isinstance(x, js.StreamResponse)) == 3
    assert {x.predict_name for x in out if isinstance(x, js.StreamResponse)} == {"step.generate.predict"}

    for i in range(3):
        server.script(f"[[ ## reasoning ## ]]\nthink {i}\n\n[[ ## idea ## ]]\nidea {i}\n\n[[ ## completed ## ]]")
    once = js.streamify(prog, stream_listeners=[js.StreamListener("idea")])
    out = await run(once, topics="a,b,c")
    assert "".join(x.chunk for x in out if isinstance(x, js.StreamResponse)) == "idea 0"


async def test_listener_with_explicit_chain_of_thought_predict(lm, server):
    class Two(js.Module):
        def __init__(self):
            self.a = js.ChainOfThought("question -> answer")
            self.b = js.ChainOfThought("answer -> answer_check")

        async def aforward(self, question):
            first = await self.a.acall(question=question)
            return await self.b.acall(answer=first.answer)

    prog = Two()
    server.script(
        "[[ ## reasoning ## ]]\nr1\n\n[[ ## answer ## ]]\nA\n\n[[ ## completed ## ]]",
        "[[ ## reasoning ## ]]\nr2\n\n[[ ## answer_check ## ]]\nok\n\n[[ ## completed ## ]]",
    )
    with pytest.raises(js.ListenerError, match="is not unique"):
        js.streamify(prog, stream_listeners=[js.StreamListener("reasoning")])
    program = js.streamify(prog, stream_listeners=[js.StreamListener("reasoning", predict=prog.b)])
    out = await run(program, question="q")
    assert collect_fields(out) == {"b.predict.reasoning": "r2"}


async def test_native_reasoning_streams_as_the_reasoning_field(lm, server):
    rec = load_fixture("vllm_reasoning_qa.json")
    server.script(Reply(content="[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]", reasoning=rec["reasoning"]))
    program = js.streamify(
        js.ChainOfThought("question -> answer"),
        stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")],
    )
    out = await run(program, question="Capital of France?")
    final = out[-1]
    assert collect_fields(out) == {"predict.reasoning": rec["reasoning"], "predict.answer": "Paris"}
    assert final.reasoning == rec["reasoning"] and final.answer == "Paris"
    assert last_flags(out) == {"predict.reasoning": 1, "predict.answer": 1}


async def test_streaming_response_frames_every_event(lm, server):
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")

    async def with_status():
        yield js.StatusMessage("working")
        async for x in js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])(question="q"):
            yield x
        yield {"custom": 1}

    lines = [line async for line in js.streaming_response(with_status())]
    assert lines[0] == 'data: {"status_message": {"message": "working"}}\n\n'
    assert lines[-1] == "data: [DONE]\n\n"
    assert lines[-2] == 'data: {"chunk": {"custom": 1}}\n\n'
    assert lines[-3] == 'data: {"prediction": {"answer": "Paris"}}\n\n'
    chunks = [json.loads(line[6:])["stream_response"] for line in lines if "stream_response" in line]
    assert "".join(c["chunk"] for c in chunks) == "Paris"
    assert chunks[-1]["is_last_chunk"] is True


async def test_streaming_response_names_the_model_in_the_prediction_frame_when_told(lm, server):
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    stream = js.streamify(js.Predict("question -> answer"))(question="q")
    lines = [line async for line in js.streaming_response(stream, model="test-model")]
    assert lines[-2] == 'data: {"prediction": {"answer": "Paris"}, "model": "test-model"}\n\n'


async def test_settings_are_captured_when_the_streamified_program_is_called(server):
    """A stream created inside ``context(lm=...)`` and read after the block (as an ASGI server reads a
    response body) runs on that LM, also when read in another task."""
    server.reset()
    inside = js.LM("inside-model", base_url=server.url, api_key="k", cache=False)
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    with js.context(lm=inside, adapter="json"):
        first = program(question="q1")
        second = program(question="q2")
    assert [x async for x in first][-1].answer
    await asyncio.create_task(_drain(second))
    models = [r["model"] for r in server.requests[-2:]]
    assert models == ["inside-model", "inside-model"]
    assert all("JSON" in r["messages"][0]["content"] for r in server.requests[-2:])
    inside.close()


async def _drain(stream):
    return [x async for x in stream]


async def test_streaming_response_ends_a_failed_call_with_an_error_event_and_done(lm, server, caplog):
    """A server failure mid-stream: the SSE body ends with an error event (type, message, what streamed)
    and [DONE], instead of a cut body that makes EventSource reconnect and pay for the call again."""
    from jupyter_stream.demo import Fault, Reply

    reply = "[[ ## answer ## ]]\nParis is the capital of France.\n\n[[ ## completed ## ]]"
    server.script(Reply(content=reply, chunks=[reply[i:i + 3] for i in range(0, len(reply), 3)], fault=Fault("drop", after=10)))
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    with caplog.at_level("WARNING", logger="jupyter_stream"):
        lines = [line async for line in js.streaming_response(program(question="q"))]
    assert lines[-1] == "data: [DONE]\n\n"
    error = json.loads(lines[-2][len("data: "):])["error"]
    assert error["type"] == "LMError"
    streamed = "".join(json.loads(x[6:])["stream_response"]["chunk"] for x in lines if '"stream_response"' in x)
    assert streamed and error["partial"]["answer"].startswith(streamed)
    assert len([r for r in caplog.records if "the stream failed" in r.getMessage()]) == 1
