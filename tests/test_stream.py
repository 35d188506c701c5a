"""stream(): lazy per-predictor streams with captured settings, timeouts and clean cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import collect_fields, last_flags

import jupyter_stream as js
from jupyter_stream.demo import Fault, Reply

LONG = "[[ ## answer ## ]]\n" + " ".join(f"w{i}" for i in range(300)) + "\n\n[[ ## completed ## ]]"


class Pipeline(js.Module):
    def __init__(self):
        self.draft = js.ChainOfThought("question -> answer")
        self.polish = js.Predict("answer -> final")

    async def aforward(self, question):
        first = await self.draft.acall(question=question)
        return await self.polish.acall(answer=first.answer)


def test_nothing_runs_until_iteration_and_settings_are_captured(lm, server):
    other = js.LM("captured-model", base_url=server.url, api_key="k", cache=False)
    with js.context(lm=other, adapter="json"):
        s = js.stream(js.Predict("question -> answer"), None, {"question": "q"})
    assert server.requests == []
    server.script('{"answer": "Paris"}')
    events = list(s)
    assert events[-1].answer == "Paris"
    assert server.requests[-1]["model"] == "captured-model"
    assert "JSON" in server.requests[-1]["messages"][0]["content"]
    assert s.prediction is events[-1]


def test_an_lm_without_a_key_is_refused_when_the_stream_is_made(lm, server, monkeypatch):
    """The LM in force, or a predictor's own, that has no key (none given, no OPENAI_API_KEY, no local
    base_url): one ConfigurationError when stream() is called, not a failure after the stream started."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with js.context(lm=js.LM("gpt-4o-mini")):
        with pytest.raises(js.ConfigurationError, match=r"^no API key for model 'gpt-4o-mini'"):
            js.stream(js.Predict("question -> answer"), None, {"question": "q"})

    class Two(js.Module):
        def __init__(self):
            self.first = js.Predict("question -> answer")
            self.second = js.Predict("answer -> summary", lm=js.LM("gpt-4.1-mini"))

        def forward(self, question):
            return self.second(answer=self.first(question=question).answer)

    with pytest.raises(js.ConfigurationError, match=r"^no API key for model 'gpt-4.1-mini'"):
        js.stream(Two(), None, {"question": "q"})  # the configured LM has a key; the second predictor's has none
    assert server.requests == []


def test_one_named_predictor_runs_alone(lm, server):
    server.script("[[ ## final ## ]]\nPolished.\n\n[[ ## completed ## ]]")
    events = list(js.stream(Pipeline(), "polish", {"answer": "rough"}))
    assert len(server.requests) == 1
    assert collect_fields(events) == {"polish.final": "Polished."}
    assert events[-1].final == "Polished."


async def test_async_for_whole_program_default_listens_to_everything(lm, server):
    server.script(
        "[[ ## reasoning ## ]]\nThink.\n\n[[ ## answer ## ]]\nDraft.\n\n[[ ## completed ## ]]",
        "[[ ## final ## ]]\nDone.\n\n[[ ## completed ## ]]",
    )
    events = [e async for e in js.stream(Pipeline(), None, {"question": "q"})]
    assert collect_fields(events) == {
        "draft.predict.reasoning": "Think.",
        "draft.predict.answer": "Draft.",
        "polish.final": "Done.",
    }
    assert last_flags(events) == {"draft.predict.reasoning": 1, "draft.predict.answer": 1, "polish.final": 1}
    assert events[-1].final == "Done."


def test_listen_picks_fields(lm, server):
    server.script("[[ ## reasoning ## ]]\nThink.\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    events = list(js.stream(Pipeline(), "draft", {"question": "q"}, listen=["answer"]))
    assert collect_fields(events) == {"draft.predict.answer": "Paris"}


def test_break_cancels_and_closes_the_http_request(lm, server):
    server.script(Reply(content=LONG, token_rate=300))
    s = js.stream(js.Predict("question -> answer"), None, {"question": "q"})
    for i, _ev in enumerate(s):
        if i == 3:
            break
    s.close()
    assert server.wait_idle(5.0)
    assert server.stream_closed_early == 1
    assert not [t for t in threading.enumerate() if t.name == "jupyter_stream-program"]


async def test_aclose_cancels_and_leaves_no_task(lm, server):
    server.script(Reply(content=LONG, token_rate=300))
    before = asyncio.all_tasks()
    s = js.stream(js.Predict("question -> answer"), None, {"question": "q"})
    it = s.__aiter__()
    for _ in range(3):
        await it.__anext__()
    await s.aclose()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
    await asyncio.to_thread(server.wait_idle, 5.0)
    assert server.stream_closed_early == 1


async def test_task_cancel_closes_the_request(lm, server):
    server.script(Reply(content=LONG, token_rate=300))
    got = []

    async def consume():
        async for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}):
            got.append(ev)

    task = asyncio.create_task(consume())
    while len(got) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(server.wait_idle, 5.0)
    assert server.stream_closed_early == 1


async def test_program_exception_is_raised_from_iteration(lm, server):
    class Broken(js.Module):
        def __init__(self):
            self.p = js.Predict("question -> answer")

        async def aforward(self, question):
            await self.p.acall(question=question)
            raise KeyError("boom in forward")

    server.script("[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    events = []
    with pytest.raises(KeyError, match="boom in forward"):
        async for ev in js.stream(Broken(), None, {"question": "q"}):
            events.append(ev)
    assert collect_fields(events) == {"p.answer": "ok"}
    # the consumer survives: another stream works
    server.script("[[ ## answer ## ]]\nagain\n\n[[ ## completed ## ]]")
    assert [e async for e in js.stream(js.Predict("question -> answer"), None, {"question": "q"})][-1].answer == "again"


def test_stream_timeout_between_events(lm, server):
    server.script(Reply(content="[[ ## answer ## ]]\nPartial text here and more", fault=Fault("stall", after=9)))
    events = []
    with pytest.raises(js.StreamTimeoutError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, stream_timeout=0.3):
            events.append(ev)
    err = info.value
    assert isinstance(err, TimeoutError) and err.limit == "stream_timeout"
    assert "stream_timeout" in str(err)
    assert err.partial["answer"] == collect_fields(events)["self.answer"] != ""
    assert server.wait_idle(5.0) and server.stream_closed_early == 1


def test_whole_call_timeout(lm, server):
    server.script(Reply(content=LONG, token_rate=100))
    with pytest.raises(js.StreamTimeoutError) as info:
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}, timeout=1.0))
    assert info.value.limit == "timeout"
    assert info.value.partial["answer"].startswith("w0 w1")
    assert server.wait_idle(5.0) and server.stream_closed_early == 1


def test_timeout_profiles(lm):
    from jupyter_stream._runtime import TIMEOUT_PROFILES, resolve_limits

    assert resolve_limits() == TIMEOUT_PROFILES["default"]
    assert TIMEOUT_PROFILES["default"].timeout == 120
    assert TIMEOUT_PROFILES["ml_inference"].timeout == 600
    assert TIMEOUT_PROFILES["batch_job"].timeout is None
    assert TIMEOUT_PROFILES["streaming"] == js._runtime.Limits(timeout=1800, stream_timeout=120)
    assert resolve_limits(timeout_profile="streaming", stream_timeout=5).stream_timeout == 5
    s = js.stream(js.Predict("question -> answer"), None, {"question": "q"}, timeout_profile="batch_job", stream_timeout=None)
    assert s.limits.timeout is None and s.limits.stream_timeout is None


def test_a_stream_runs_once(lm, server):
    server.script("[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    s = js.stream(js.Predict("question -> answer"), None, {"question": "q"})
    list(s)
    with pytest.raises(js.UsageError, match="runs once"):
        list(s)


def test_sync_predict_call_inside_a_running_loop(lm, server):
    server.script("[[ ## answer ## ]]\nfrom a cell\n\n[[ ## completed ## ]]")

    async def cell():
        return js.Predict("question -> answer")(question="q")

    assert asyncio.run(cell()).answer == "from a cell"


def test_lm_events_carry_the_prompt_and_raw_reply(lm, server):
    reply = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    server.script(reply)
    events = list(js.stream(js.Predict("question -> answer"), None, {"question": "Capital?"}, lm_events=True))
    req = next(e for e in events if isinstance(e, js.LMRequest))
    resp = next(e for e in events if isinstance(e, js.LMResponse))
    assert req.messages == server.requests[-1]["messages"]
    assert resp.raw == reply and resp.usage["completion_tokens"] > 0 and resp.ttft > 0
    assert events.index(req) < events.index(resp) < len(events) - 1
