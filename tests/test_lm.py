"""LM against the real loopback server: what is sent, what is recorded, the cache, retries and failures.

Every request goes through the real ``openai`` client over HTTP + SSE to :class:`DemoServer`.
"""

from __future__ import annotations


import pytest
from _served import free_port

import jupyter_stream._lm as lm_mod

import jupyter_stream as js
from jupyter_stream import LMError
from jupyter_stream.demo import Fault, Reply, tokenize

KEY = "sk-test-SECRET-key-123"
CHAT_REPLY = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


def make_lm(server, model: str = "test-model", **kw) -> js.LM:
    opts = dict(base_url=server.url, api_key=KEY, cache=False, num_retries=0)
    opts.update(kw)
    return js.LM(model, **opts)



def assert_no_key(*objects) -> None:
    for obj in objects:
        assert KEY not in repr(obj)
        assert KEY not in str(obj)
        assert "SECRET" not in repr(obj)


# ------------------------------------------------------------------------------------ what is sent


async def test_messages_recorded_equal_messages_received(server, lm):
    server.script(CHAT_REPLY)
    pred = await js.Predict("question -> answer").acall(question="What is the capital of France?")
    assert pred.answer == "Paris"
    assert len(server.requests) == 1
    sent = server.requests[-1]["messages"]
    assert lm.history[-1].messages == sent
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "What is the capital of France?" in sent[-1]["content"]
    assert lm.history[-1].text == CHAT_REPLY


async def test_acall_with_prompt_sends_one_user_message(server, lm):
    server.script("Hello there")
    rec = await lm.acall("hi")
    assert server.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]
    assert rec.messages == [{"role": "user", "content": "hi"}]
    assert rec.text == "Hello there"
    assert rec.received == bytearray() and rec.parts == [], "the deltas are dropped once decoded: the text is kept once"
    assert rec.finish_reason == "stop"
    assert rec.cached is False
    assert lm.history[-1] is rec


async def test_request_always_streams_with_usage(server, lm):
    server.script("ok")
    await lm.acall("hi")
    body = server.requests[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_usage_recorded_from_usage_chunk(server, lm):
    server.script(Reply(content="Paris is lovely", usage={"prompt_tokens": 11, "completion_tokens": 7}))
    rec = await lm.acall("hi")
    assert rec.usage == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert lm.history[-1].usage == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


async def test_usage_reaches_the_prediction(server, lm):
    server.script(Reply(content=CHAT_REPLY, usage={"prompt_tokens": 30, "completion_tokens": 4}))
    pred = await js.Predict("question -> answer").acall(question="q")
    assert pred.get_lm_usage() == {"test-model": {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}}


async def test_ttft_and_duration(server, lm):
    server.script("some text to stream")
    rec = await lm.acall("hi")
    assert isinstance(rec.ttft, float)
    assert rec.ttft > 0
    assert rec.duration >= rec.ttft


async def test_reasoning_content_recorded_separately(server, lm):
    server.script(Reply(content="Paris", reasoning="France's capital is Paris."))
    rec = await lm.acall("hi")
    assert rec.text == "Paris"
    assert rec.reasoning == "France's capital is Paris."
    assert rec.reasoning_parts == tokenize("France's capital is Paris.")


async def test_model_prefix_stripped(server, lm):
    model = make_lm(server, model="openai/gpt-4o-mini")
    assert model.model == "gpt-4o-mini"
    server.script("ok")
    rec = await model.acall("hi")
    assert server.requests[-1]["model"] == "gpt-4o-mini"
    assert rec.model == "gpt-4o-mini"
    assert rec.params["model"] == "gpt-4o-mini"


async def test_temperature_max_tokens_and_extra_params_sent(server, lm):
    model = make_lm(server, temperature=0.3, max_tokens=77, seed=7, top_p=0.5)
    server.script("ok")
    rec = await model.acall("hi")
    body = server.requests[-1]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 77
    assert body["seed"] == 7
    assert body["top_p"] == 0.5
    assert rec.params == {"model": "test-model", "temperature": 0.3, "max_tokens": 77, "seed": 7, "top_p": 0.5}


async def test_unset_sampling_options_are_not_sent(server, lm):
    server.script("ok")
    await lm.acall("hi")
    body = server.requests[-1]
    assert "temperature" not in body
    assert "max_tokens" not in body


async def test_per_call_overrides(server, lm):
    model = make_lm(server, temperature=0.3)
    server.script("ok")
    await model.acall("hi", temperature=0.9)
    assert server.requests[-1]["temperature"] == 0.9


async def test_predict_config_reaches_the_request(server, lm):
    server.script(CHAT_REPLY)
    await js.Predict("question -> answer", temperature=0.25).acall(question="q")
    assert server.requests[-1]["temperature"] == 0.25


def test_sync_call_returns_list_of_text(server, lm):
    server.script("Hello from the sync path")
    assert lm("hi") == ["Hello from the sync path"]
    assert server.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]


def test_sync_call_with_messages(server, lm):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    server.script("ok")
    assert lm(messages=msgs) == ["ok"]
    assert server.requests[-1]["messages"] == msgs


def test_call_without_prompt_or_messages(server, lm):
    with pytest.raises(js.ConfigurationError, match="pass a prompt string or messages"):
        lm()
    assert server.requests == []


def test_model_name_required():
    with pytest.raises(js.ConfigurationError, match="needs a model name"):
        js.LM("  ")


# ------------------------------------------------------------------------------------------- cache


async def test_memory_cache_second_identical_call_makes_no_request(server, lm):
    model = make_lm(server, cache=True)
    server.script("cached reply", "a second reply that must not be used")
    first = await model.acall("same prompt")
    assert first.cached is False
    assert len(server.requests) == 1
    second = await model.acall("same prompt")
    assert len(server.requests) == 1
    assert second.cached is True
    assert second.text == "cached reply"
    assert model.history[-1] is second
    assert model.history[-1].cached is True


async def test_memory_cache_key_depends_on_messages_and_params(server, lm):
    model = make_lm(server, cache=True)
    server.script("one", "two", "three")
    assert (await model.acall("a")).text == "one"
    assert (await model.acall("b")).text == "two"
    assert (await model.acall("a", temperature=0.5)).text == "three"
    assert len(server.requests) == 3
    assert (await model.acall("a")).text == "one"
    assert len(server.requests) == 3


async def test_clear_cache_forgets(server, lm):
    model = make_lm(server, cache=True)
    server.script("one", "two")
    await model.acall("a")
    model.clear_cache()
    rec = await model.acall("a")
    assert rec.text == "two" and rec.cached is False
    assert len(server.requests) == 2


async def test_disk_cache_survives_a_new_instance(server, lm, tmp_path):
    server.script("from disk")
    first = make_lm(server, cache=True, cache_dir=tmp_path)
    rec = await first.acall("persist me")
    assert rec.text == "from disk"
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert KEY not in next(tmp_path.glob("*.json")).read_text("utf-8")
    second = make_lm(server, cache=True, cache_dir=tmp_path)
    rec2 = await second.acall("persist me")
    assert rec2.cached is True
    assert rec2.text == "from disk"
    assert len(server.requests) == 1


async def test_cache_false_always_requests(server, lm):
    server.script("one", "two", "three")
    texts = [(await lm.acall("same")).text for _ in range(3)]
    assert texts == ["one", "two", "three"]
    assert len(server.requests) == 3
    assert not any(r.cached for r in lm.history)


async def test_failed_call_is_not_cached(server, lm):
    model = make_lm(server, cache=True)
    server.script(Reply(content="cut short here", fault=Fault("drop", after=2)), "complete")
    with pytest.raises(LMError):
        await model.acall("x")
    rec = await model.acall("x")
    assert rec.text == "complete" and rec.cached is False
    assert len(server.requests) == 2


# ------------------------------------------------------------------------------------ retries, faults


async def test_429_then_success_with_one_retry(server, lm):
    model = make_lm(server, num_retries=1)
    server.script(Fault("status", status=429), "after the retry")
    rec = await model.acall("hi")
    assert rec.text == "after the retry"
    assert len(server.requests) == 2


async def test_429_without_retries_is_an_lm_error(server, lm):
    server.script(Fault("status", status=429))
    with pytest.raises(LMError) as info:
        await lm.acall("hi")
    assert info.value.status_code == 429
    assert "HTTP 429" in str(info.value)
    assert len(server.requests) == 1


async def test_500_without_retries(server, lm):
    server.script(Fault("status", status=500))
    with pytest.raises(LMError) as info:
        await lm.acall("hi")
    err = info.value
    assert err.status_code == 500
    assert "HTTP 500" in str(err)
    assert "The server had an error while processing your request" in str(err)
    assert isinstance(err, js.StreamError) and isinstance(err, RuntimeError)
    assert len(server.requests) == 1
    assert_no_key(err, lm)


async def test_status_error_with_custom_message(server, lm):
    server.script(Fault("status", status=400, body={"error": {"message": "context length exceeded", "type": "x"}}))
    with pytest.raises(LMError) as info:
        await lm.acall("hi")
    assert info.value.status_code == 400
    assert str(info.value) == "test-model: the server answered HTTP 400: context length exceeded"


async def test_connection_refused(server, lm):
    port = free_port()
    model = js.LM("test-model", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, cache=False, num_retries=0)
    with pytest.raises(LMError) as info:
        await model.acall("hi")
    err = info.value
    assert f"cannot reach http://127.0.0.1:{port}/v1" in str(err)
    assert err.status_code is None
    assert server.requests == []
    assert_no_key(err, model)


async def test_server_closes_without_answering(server, lm):
    server.script(Fault("refuse"))
    with pytest.raises(LMError) as info:
        await lm.acall("hi")
    assert "cannot reach" in str(info.value)
    assert len(server.requests) == 1


async def test_dropped_connection(server, lm):
    server.script(Reply(content="one two three four five six seven eight", fault=Fault("drop", after=5)))
    parts = []
    with pytest.raises(LMError) as info:
        await lm.astream([{"role": "user", "content": "hi"}], on_content=parts.append)
    err = info.value
    assert "after 5 deltas" in str(err)
    assert "".join(parts) == "one two three four five"
    assert err.status_code is None
    assert_no_key(err)


async def test_malformed_sse_line(server, lm):
    server.script(Reply(content="one two three four five", fault=Fault("malformed", after=3)))
    parts = []
    with pytest.raises(LMError) as info:
        await lm.astream([{"role": "user", "content": "hi"}], on_content=parts.append)
    assert "malformed" in str(info.value)
    assert "after 3 deltas" in str(info.value)
    assert parts == ["one", " two", " three"]
    assert_no_key(info.value)


async def test_error_event_mid_stream(server, lm):
    server.script(Reply(content="one two three four", fault=Fault("error_event", after=2, message="overloaded, sorry")))
    parts = []
    with pytest.raises(LMError) as info:
        await lm.astream([{"role": "user", "content": "hi"}], on_content=parts.append)
    assert str(info.value) == "the server reported an error mid-stream after 2 deltas: overloaded, sorry"
    assert parts == ["one", " two"]
    assert_no_key(info.value)


async def test_errors_through_predict_carry_partial_text(server, lm):
    server.script(Reply(content="[[ ## answer ## ]]\nParis is the capital", fault=Fault("drop", after=8)))
    with pytest.raises(LMError) as info:
        await js.Predict("question -> answer").acall(question="q")
    err = info.value
    assert err.partial == {"answer": "Paris is"}
    assert err.raw == "[[ ## answer ## ]]\nParis is"
    assert err.predict_name == "predict"


# ----------------------------------------------------------------------------------- the key is secret


async def test_api_key_never_appears(server, lm):
    assert_no_key(lm)
    assert KEY not in repr(make_lm(server, temperature=0.1, max_tokens=3, cache=True))
    assert KEY not in repr(lm.copy(temperature=0.5))
    errors = []
    for item in [
        Fault("status", status=500),
        Fault("status", status=401, body={"error": {"message": "Incorrect API key provided", "type": "auth"}}),
        Reply(content="one two three four five six seven", fault=Fault("drop", after=5)),
        Reply(content="one two three four five six", fault=Fault("malformed", after=3)),
        Reply(content="one two three four", fault=Fault("error_event", after=2)),
        Fault("refuse"),
    ]:
        server.script(item)
        with pytest.raises(LMError) as info:
            await js.Predict("question -> answer").acall(question="q")
        errors.append(info.value)
    assert [e.status_code for e in errors] == [500, 401, None, None, None, None]
    refused = js.LM("test-model", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=KEY, num_retries=0)
    with pytest.raises(LMError) as info:
        await refused.acall("hi")
    errors.append(info.value)
    for err in errors:
        assert_no_key(err)
        assert KEY not in repr(err.partial) and KEY not in err.raw
    server.script(CHAT_REPLY, "plain")
    await js.Predict("question -> answer").acall(question="q")
    await lm.acall("hi")
    assert len(lm.history) == 2
    assert_no_key(list(lm.history), lm)


async def test_key_echoed_by_the_server_is_masked(server, lm):
    server.script(
        Fault("status", status=401, body={"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "auth"}}),
        Reply(content="one two three", fault=Fault("error_event", after=1, message=f"bad key {KEY}")),
    )
    with pytest.raises(LMError) as info:
        await lm.acall("hi")
    assert info.value.status_code == 401
    assert str(info.value) == "test-model: the server answered HTTP 401: Incorrect API key provided: sk-***."
    assert_no_key(info.value)
    with pytest.raises(LMError) as info:
        await js.Predict("question -> answer").acall(question="q")
    assert str(info.value) == "the server reported an error mid-stream after 1 deltas: bad key sk-***"
    assert_no_key(info.value)


def test_copy_keeps_options_and_shares_no_cache(server, lm):
    model = js.LM("openai/m", base_url=server.url, api_key=KEY, temperature=0.2, max_tokens=9, cache=True,
                  num_retries=3, request_timeout=12.0, history_size=7, seed=1)
    other = model.copy(temperature=0.9)
    assert (other.model, other.base_url, other.temperature, other.max_tokens) == ("m", server.url, 0.9, 9)
    assert (other.cache, other.num_retries, other.request_timeout, other.kwargs) == (True, 3, 12.0, {"seed": 1})
    assert other.history.maxlen == 7
    assert other._memory is not model._memory
    assert model.copy(model="openai/n").model == "n"
    assert KEY not in repr(other)


async def test_a_program_prediction_sums_the_usage_of_all_its_lm_calls(server, lm):
    class Two(js.Module):
        def __init__(self):
            self.a = js.Predict("question -> answer")
            self.b = js.Predict("answer -> final")

        async def aforward(self, question):
            return await self.b.acall(answer=(await self.a.acall(question=question)).answer)

    server.script(
        Reply(content="[[ ## answer ## ]]\nA\n\n[[ ## completed ## ]]", usage={"prompt_tokens": 10, "completion_tokens": 3}),
        Reply(content="[[ ## final ## ]]\nB\n\n[[ ## completed ## ]]", usage={"prompt_tokens": 20, "completion_tokens": 5}),
    )
    out = await Two().acall(question="q")
    usage = out.get_lm_usage()["test-model"]
    assert usage["prompt_tokens"] == 30 and usage["completion_tokens"] == 8


async def test_a_long_reply_is_held_in_one_growing_buffer_not_one_string_per_delta(server, lm, monkeypatch):
    monkeypatch.setattr(lm_mod, "_PACK_MASK", 3)  # into the buffer every 4 deltas instead of every 1,024
    text = " ".join(f"w{i}é😀" for i in range(30))  # non-ASCII: the buffer holds UTF-8
    server.script(text)
    rec = lm_mod.LMRecord(lm.model, [], {})
    got: list[str] = []
    buffers: set[int] = set()
    loose: list[int] = []

    def on_content(delta: str) -> None:
        got.append(delta)
        assert rec.content_so_far() == "".join(got)
        done = len(got) - len(got) % 4  # the deltas moved into the buffer so far
        assert bytes(rec.received) == "".join(got[:done]).encode("utf-8") and rec.parts == got[done:]
        buffers.add(id(rec.received))
        loose.append(len(rec.parts))

    await lm.astream([{"role": "user", "content": "go"}], on_content=on_content, record=rec)
    assert rec.text == text == "".join(got) == rec.content_so_far()
    assert len(got) > 20 and len(buffers) == 1 and max(loose) <= 3  # one buffer, grown in place
    assert rec.received == bytearray() and rec.parts == []
