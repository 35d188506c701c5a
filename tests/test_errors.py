"""Errors: user mistakes raise before any request; runtime failures keep the text that had streamed.

Runtime failures are real: the loopback server drops, stalls or slows the SSE stream.
"""

from __future__ import annotations

import time

import pytest

import jupyter_stream as js
from jupyter_stream import (
    AdapterParseError,
    ConfigurationError,
    InputError,
    ListenerError,
    LMError,
    StreamTimeoutError,
    UsageError,
)
from jupyter_stream.demo import Fault, Reply, tokenize

from conftest import collect_fields, last_flags

PARTIAL_TEXT = "[[ ## answer ## ]]\nParis is the capital of"


class TwoAnswers(js.Module):
    """Two predictors that both have an ``answer`` output."""

    def __init__(self):
        self.draft = js.Predict("question -> answer")
        self.polish = js.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).answer
        return self.polish(question=question, draft=draft)


# ---------------------------------------------------------------------- user mistakes: before any request


def test_hierarchy():
    for cls in (js.SignatureError, InputError, ListenerError, ConfigurationError):
        assert issubclass(cls, UsageError) and issubclass(cls, ValueError)
    for cls in (LMError, AdapterParseError, StreamTimeoutError):
        assert issubclass(cls, js.StreamError) and issubclass(cls, RuntimeError)
    assert issubclass(StreamTimeoutError, TimeoutError)
    assert issubclass(UsageError, js.JupyterStreamError) and issubclass(js.StreamError, js.JupyterStreamError)


def test_predict_missing_input(server, lm):
    with pytest.raises(InputError) as info:
        js.Predict("question, context -> answer")(question="q")
    msg = str(info.value)
    assert "missing input(s) 'context'" in msg
    assert "call it with question=..., context=..." in msg
    assert server.requests == []


async def test_predict_missing_input_async(server, lm):
    with pytest.raises(InputError, match="missing input\\(s\\) 'question'"):
        await js.Predict("question -> answer").acall()
    assert server.requests == []


def test_predict_unknown_input(server, lm):
    with pytest.raises(InputError) as info:
        js.Predict("question -> answer")(question="q", qestion="typo")
    msg = str(info.value)
    assert "unknown input(s) 'qestion'" in msg
    assert "its inputs are 'question'" in msg
    assert server.requests == []


def test_predict_positional_input(server, lm):
    with pytest.raises(InputError, match="takes its inputs as keywords"):
        js.Predict("question -> answer")("q")
    assert server.requests == []


def test_predict_wrong_type_for_int_input(server, lm):
    with pytest.raises(InputError) as info:
        js.Predict("question, n: int -> answer")(question="q", n="many")
    msg = str(info.value)
    assert "input 'n'" in msg
    assert "int" in msg
    assert "got str 'many'" in msg
    assert server.requests == []


def test_int_input_accepts_an_int(server, lm):
    server.script("[[ ## answer ## ]]\nthree\n\n[[ ## completed ## ]]")
    assert js.Predict("question, n: int -> answer")(question="q", n=3).answer == "three"
    assert len(server.requests) == 1


def test_listener_for_unknown_field(server, lm):
    with pytest.raises(ListenerError) as info:
        js.streamify(js.ChainOfThought("question -> answer"), stream_listeners=[js.StreamListener("nope")])
    assert isinstance(info.value, ValueError)
    assert "Signature field nope is not a field of any predictor" in str(info.value)
    assert server.requests == []


def test_listener_for_ambiguous_field(server, lm):
    with pytest.raises(ListenerError) as info:
        js.streamify(TwoAnswers(), stream_listeners=[js.StreamListener("answer")])
    msg = str(info.value)
    assert "Signature field answer is not unique" in msg
    assert "draft" in msg and "polish" in msg
    assert server.requests == []


def test_listener_with_explicit_predict_resolves_ambiguity(server, lm):
    program = TwoAnswers()
    listener = js.StreamListener("answer", predict=program.polish)
    js.streamify(program, stream_listeners=[listener])
    assert listener.predict_name == "polish"


def test_listener_predict_without_the_field(server, lm):
    with pytest.raises(ListenerError, match="has no output field 'reasoning'"):
        js.streamify(js.Predict("q -> answer"), stream_listeners=[js.StreamListener("reasoning", predict=js.Predict("q -> answer"))])
    assert server.requests == []


def test_stream_unknown_predictor(server, lm):
    with pytest.raises(UsageError) as info:
        js.stream(TwoAnswers(), "nope", {"question": "q"})
    assert "no predictor 'nope'" in str(info.value)
    assert "['draft', 'polish']" in str(info.value)
    assert server.requests == []


def test_stream_listen_unknown_field(server, lm):
    with pytest.raises(ListenerError) as info:
        js.stream(js.Predict("question -> answer"), None, {"question": "q"}, listen=["nope"])
    assert "cannot listen to 'nope'" in str(info.value)
    assert "['answer']" in str(info.value)
    assert server.requests == []


def test_stream_missing_input_raises_at_once(server, lm):
    with pytest.raises(InputError, match="missing input\\(s\\) 'question'"):
        js.stream(js.Predict("question -> answer"), None, {})
    with pytest.raises(InputError, match="missing input\\(s\\) 'question'"):
        js.stream(TwoAnswers(), "draft", {})
    assert server.requests == []


def test_stream_inputs_must_be_a_dict(server, lm):
    with pytest.raises(UsageError, match="takes the inputs as a dict"):
        js.stream(js.Predict("question -> answer"), None, ["q"])
    assert server.requests == []


async def test_streamify_bad_input_raises_before_request(server, lm):
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    with pytest.raises(InputError, match="unknown input\\(s\\) 'foo'"):
        async for _ in program(question="q", foo=1):
            pass
    assert server.requests == []


def test_configure_unknown_adapter(server, lm):
    with pytest.raises(ConfigurationError) as info:
        js.configure(adapter="yaml")
    msg = str(info.value)
    assert "'yaml'" in msg
    assert "'chat'" in msg and "'json'" in msg and "'xml'" in msg
    with pytest.raises(ConfigurationError, match="unknown adapter 'yaml'"):
        with js.context(adapter="yaml"):
            pass
    assert server.requests == []


def test_configure_unknown_setting(server, lm):
    with pytest.raises(ConfigurationError) as info:
        js.configure(foo=1)
    assert str(info.value) == "unknown setting(s) ['foo']; the settings are ['adapter', 'callbacks', 'lm']"
    assert js.settings.current().lm is lm  # nothing changed


def test_configure_bad_lm_type(server, lm):
    with pytest.raises(ConfigurationError, match="lm must be a jupyter_stream.LM"):
        js.configure(lm=42)


@pytest.mark.parametrize("bad", ["not a list", [1], [js.Predict("q -> a")], 42])
def test_configure_bad_callbacks(server, lm, bad):
    with pytest.raises(ConfigurationError, match="callbacks must be a list of BaseCallback instances"):
        js.configure(callbacks=bad)
    with pytest.raises(ConfigurationError, match="callbacks must be a list of BaseCallback instances"):
        with js.context(callbacks=bad):
            pass
    assert js.settings.current().callbacks == ()


def test_configure_good_callbacks(server, lm):
    class Duck:  # DSPy-style duck typing: any object with the hooks
        def on_lm_start(self, call_id, instance, inputs):
            pass

    cbs = [js.BaseCallback(), Duck()]
    with js.context(callbacks=cbs) as s:
        assert s.callbacks == tuple(cbs)


def test_bad_timeout_profile(server, lm):
    with pytest.raises(ConfigurationError) as info:
        js.stream(js.Predict("question -> answer"), None, {"question": "q"}, timeout_profile="fast")
    msg = str(info.value)
    assert "unknown timeout_profile 'fast'" in msg
    assert "default, ml_inference, batch_job, streaming" in msg
    assert server.requests == []


@pytest.mark.parametrize(("kw", "name"), [({"timeout": -1}, "timeout"), ({"stream_timeout": 0}, "stream_timeout"),
                                          ({"timeout": "10"}, "timeout")])
def test_bad_timeout_values(server, lm, kw, name):
    with pytest.raises(ConfigurationError, match=f"{name} must be a positive number of seconds or None"):
        js.stream(js.Predict("question -> answer"), None, {"question": "q"}, **kw)
    assert server.requests == []


async def test_streamify_bad_timeout_profile(server, lm):
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    with pytest.raises(ConfigurationError, match="unknown timeout_profile 'fast'"):
        async for _ in program(question="q", timeout_profile="fast"):
            pass
    assert server.requests == []


def test_stream_runs_once(server, lm):
    server.script("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    s = js.stream(js.Predict("question -> answer"), None, {"question": "q"})
    assert list(s)[-1].answer == "Paris"
    with pytest.raises(UsageError, match="a Stream runs once"):
        list(s)
    assert len(server.requests) == 1


# -------------------------------------------------------------------- runtime failures keep partial text


def _drop_after() -> int:
    # Drop before the last delta (" of"), mid-reply.
    return len(tokenize(PARTIAL_TEXT)) - 1


def test_drop_mid_stream_keeps_partial_text_via_stream(server, lm):
    server.script(Reply(content=PARTIAL_TEXT, fault=Fault("drop", after=_drop_after())))
    events = []
    with pytest.raises(LMError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}):
            events.append(ev)
    err = info.value
    chunks = "".join(ev.chunk for ev in events if isinstance(ev, js.StreamResponse))
    assert chunks == "Paris is the capital", (str(err), err.partial, err.raw, events, server.requests)
    assert err.partial["answer"] == chunks
    assert err.partial == {"answer": "Paris is the capital"}
    assert err.raw.startswith("[[ ## answer ## ]]")
    assert err.raw == "[[ ## answer ## ]]\nParis is the capital"
    assert err.predict_name == "self"
    assert last_flags(events) == {"self.answer": 1}  # the failed field still closes once
    assert not any(isinstance(ev, js.Prediction) for ev in events)
    assert len(server.requests) == 1


async def test_drop_mid_stream_keeps_partial_text_via_async_stream(server, lm):
    server.script(Reply(content=PARTIAL_TEXT, fault=Fault("drop", after=_drop_after())))
    events = []
    with pytest.raises(LMError) as info:
        async for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}):
            events.append(ev)
    err = info.value
    assert collect_fields(events) == {"self.answer": "Paris is the capital"}, (str(err), err.partial, err.raw, events)
    assert err.partial == {"answer": "Paris is the capital"}


async def test_drop_mid_stream_keeps_partial_text_via_streamify(server, lm):
    server.script(Reply(content=PARTIAL_TEXT, fault=Fault("drop", after=_drop_after())))
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    chunks = []
    with pytest.raises(LMError) as info:
        async for ev in program(question="q"):
            if isinstance(ev, js.StreamResponse):
                assert ev.signature_field_name == "answer"
                chunks.append(ev.chunk)
    err = info.value
    assert "".join(chunks) == "Paris is the capital"
    assert err.partial["answer"] == "".join(chunks)
    assert err.raw.startswith("[[ ## answer ## ]]")
    assert err.raw == "[[ ## answer ## ]]\nParis is the capital"


def test_drop_via_sync_streamify(server, lm):
    server.script(Reply(content=PARTIAL_TEXT, fault=Fault("drop", after=_drop_after())))
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")],
                           async_streaming=False)
    chunks = []
    with pytest.raises(LMError) as info:
        for ev in program(question="q"):
            if isinstance(ev, js.StreamResponse):
                chunks.append(ev.chunk)
    assert "".join(chunks) == "Paris is the capital"
    assert info.value.partial == {"answer": "Paris is the capital"}


def test_drop_in_second_predictor_names_it(server, lm):
    server.script(
        "[[ ## answer ## ]]\nA draft.\n\n[[ ## completed ## ]]",
        Reply(content="[[ ## answer ## ]]\nThe polished one", fault=Fault("drop", after=9)),
    )
    events = []
    with pytest.raises(LMError) as info:
        for ev in js.stream(TwoAnswers(), None, {"question": "q"}):
            events.append(ev)
    assert collect_fields(events) == {"draft.answer": "A draft.", "polish.answer": "The polished"}
    assert info.value.predict_name == "polish"
    assert info.value.partial == {"answer": "The polished"}


def test_reply_without_the_listened_field(server, lm):
    server.script("Sorry, I will just answer in plain text: Paris.")
    events = []
    with pytest.raises(AdapterParseError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, listen=["answer"]):
            events.append(ev)
    err = info.value
    assert err.field == "answer"
    assert "'answer'" in str(err)
    assert "[[ ## answer ## ]]" in str(err)
    assert err.raw == "Sorry, I will just answer in plain text: Paris."
    assert err.partial == {}
    assert not any(isinstance(ev, js.StreamResponse) for ev in events)


async def test_reply_without_the_listened_field_via_streamify(server, lm):
    server.script("Plain text, no headers.")
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    with pytest.raises(AdapterParseError) as info:
        async for _ in program(question="q"):
            pass
    assert info.value.field == "answer"
    assert info.value.raw == "Plain text, no headers."


def test_reply_that_opens_other_fields_but_not_the_listened_one(server, lm):
    reply = "[[ ## reasoning ## ]]\nBecause it is.\n\n[[ ## completed ## ]]"
    server.script(reply)
    events = []
    with pytest.raises(AdapterParseError) as info:
        for ev in js.stream(js.ChainOfThought("question -> answer"), None, {"question": "q"}, listen=["answer"]):
            events.append(ev)
    err = info.value
    assert err.field == "answer"
    assert "lacks the output field 'answer'" in str(err)
    assert err.raw == reply
    assert err.partial == {"reasoning": "Because it is."}
    assert err.predict_name == "predict"
    assert events == []  # only "answer" was listened to, and it never opened


def test_reply_with_a_bad_typed_value(server, lm):
    server.script("[[ ## n ## ]]\nmany\n\n[[ ## completed ## ]]")
    with pytest.raises(AdapterParseError) as info:
        js.Predict("question -> n: int")(question="q")
    assert info.value.field == "n"
    assert "'n'" in str(info.value) and "int" in str(info.value)
    assert info.value.raw == "[[ ## n ## ]]\nmany\n\n[[ ## completed ## ]]"


def test_stall_hits_stream_timeout_and_closes_the_connection(server, lm):
    server.script(Reply(content="[[ ## answer ## ]]\nParis is the capital of France.", fault=Fault("stall", after=3)))
    events = []
    started = time.monotonic()
    with pytest.raises(StreamTimeoutError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, stream_timeout=0.5):
            events.append(ev)
    elapsed = time.monotonic() - started
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.limit == "stream_timeout"
    assert err.seconds == 0.5
    assert "stream_timeout" in str(err)
    assert 0.5 <= elapsed < 5
    assert err.raw == "[[ ## answer"  # three deltas: "[[", " ##", " answer"
    assert err.partial == {}
    assert server.wait_idle(5)
    assert server.stream_closed_early >= 1


def test_stall_mid_field_keeps_partial(server, lm):
    server.script(Reply(content="[[ ## answer ## ]]\nParis is the capital of France.", fault=Fault("stall", after=9)))
    chunks = []
    with pytest.raises(StreamTimeoutError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, stream_timeout=0.5):
            if isinstance(ev, js.StreamResponse):
                chunks.append(ev.chunk)
    err = info.value
    assert err.limit == "stream_timeout"
    assert "".join(chunks) == "Paris is the"
    assert err.partial == {"answer": "Paris is the"}
    assert err.raw == "[[ ## answer ## ]]\nParis is the"
    assert err.predict_name == "self"
    assert server.wait_idle(5)
    assert server.stream_closed_early == 1
    assert server.connections_closed == server.connections_opened


async def test_stall_via_streamify_stream_timeout(server, lm):
    server.script(Reply(content="[[ ## answer ## ]]\nParis is the capital of France.", fault=Fault("stall", after=9)))
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    chunks = []
    with pytest.raises(StreamTimeoutError) as info:
        async for ev in program(question="q", stream_timeout=0.5):
            if isinstance(ev, js.StreamResponse):
                chunks.append(ev.chunk)
    assert info.value.limit == "stream_timeout"
    assert info.value.partial == {"answer": "".join(chunks)} == {"answer": "Paris is the"}
    assert server.wait_idle(5)
    assert server.stream_closed_early == 1


def test_whole_call_timeout_on_a_slow_stream(server, lm):
    content = "[[ ## answer ## ]]\n" + "word " * 200 + "\n\n[[ ## completed ## ]]"
    server.script(Reply(content=content, token_rate=40))
    chunks = []
    started = time.monotonic()
    with pytest.raises(StreamTimeoutError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, timeout=1.0):
            if isinstance(ev, js.StreamResponse):
                chunks.append(ev.chunk)
    elapsed = time.monotonic() - started
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.limit == "timeout"
    assert err.seconds == 1.0
    assert "(timeout)" in str(err)
    assert 1.0 <= elapsed < 6
    assert content.startswith(err.raw)
    assert len(err.raw) < len(content)
    assert err.partial.get("answer", "").startswith("".join(chunks).strip())
    assert server.wait_idle(5)
    assert server.stream_closed_early == 1


def test_whole_call_timeout_keeps_partial_text(server, lm):
    content = "[[ ## answer ## ]]\n" + "word " * 400 + "\n\n[[ ## completed ## ]]"
    server.script(Reply(content=content, token_rate=40))
    chunks = []
    with pytest.raises(StreamTimeoutError) as info:
        for ev in js.stream(js.Predict("question -> answer"), None, {"question": "q"}, timeout=1.5,
                            stream_timeout=None):
            if isinstance(ev, js.StreamResponse):
                chunks.append(ev.chunk)
    err = info.value
    assert err.limit == "timeout"
    assert err.raw.startswith("[[ ## answer ## ]]\nword word")
    assert content.startswith(err.raw)
    assert err.partial["answer"].startswith("word word")
    assert err.partial["answer"] == err.raw.removeprefix("[[ ## answer ## ]]\n").strip()
    # The deadline jumps the queue, so chunks still queued are not yielded; the partial text has them.
    assert chunks and err.partial["answer"].startswith("".join(chunks).strip())
    assert server.wait_idle(5)
    assert server.stream_closed_early == 1


def test_stream_checks_module_inputs_at_once(server, lm):
    class Qa(js.Module):
        def __init__(self):
            self.p = js.Predict("question -> answer")

        def forward(self, question):
            return self.p(question=question)

    with pytest.raises(js.InputError, match=r"cannot run on inputs \['bogus', 'question'\].*takes \['question'\]"):
        js.stream(Qa(), None, {"question": "q", "bogus": 1})
    with pytest.raises(js.InputError, match="missing a required argument: 'question'"):
        js.stream(Qa(), None, {})
    assert server.requests == []


def test_http_404_shows_the_servers_words_and_a_base_url_hint(server):
    """A wrong base URL: the server's own message, and where to look."""
    lm = js.LM("m", base_url=server.url.removesuffix("/v1") + "/api", api_key="k", cache=False, num_retries=0)
    with pytest.raises(js.LMError) as info:
        lm("hello")
    message = str(info.value)
    assert "HTTP 404" in message and "no route for POST /api/chat/completions" in message
    assert "is base_url right? OpenAI-compatible servers answer under .../v1" in message
    assert info.value.status_code == 404
    lm.close()


def test_http_error_body_in_fastapi_style_is_shown(lm, server):
    from jupyter_stream.demo import Fault

    server.script(Fault("status", status=404, body={"detail": "Not Found"}))
    with pytest.raises(js.LMError, match=r"HTTP 404: Not Found \(is base_url right\?"):
        lm("hello")


def test_each_retry_is_a_status_message_in_the_stream(server):
    """A 429 twice, then the reply: two status messages say so (what the widget's status line and the
    terminal show), then the fields stream; a 400 is not retried."""
    from jupyter_stream.demo import Fault

    lm = js.LM("retry-model", base_url=server.url, api_key="k", cache=False, num_retries=2)
    server.reset()
    server.script(Fault("status", status=429, times=2, retry_after=0.05), "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]")
    with js.context(lm=lm):
        events = list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    status = [e.message for e in events if isinstance(e, js.StatusMessage)]
    assert status == [
        "retry-model: HTTP 429, retrying in 0.1 s (1/2)",
        "retry-model: HTTP 429, retrying in 0.1 s (2/2)",
    ]
    assert events[-1].answer == "ok"
    server.script(Fault("status", status=400, times=3))
    before = len(server.requests)
    with js.context(lm=lm), pytest.raises(js.LMError, match="HTTP 400"):
        list(js.stream(js.Predict("question -> answer"), None, {"question": "q"}))
    assert len(server.requests) == before + 1
    lm.close()
