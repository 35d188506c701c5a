"""Every network fault of issue 5, injected by the real loopback server, through the async and the sync API.

For each fault: the exact error type, a message naming the cause, ``error.partial`` equal to the chunks the
consumer received, the HTTP connection closed (or, after a complete HTTP response, parked idle in the
keep-alive pool - never half-open), no asyncio task and no thread left behind.

The faulted call runs on its own ``LM`` (a fresh client, so a fresh connection pool) after a warm-up stream
on the fixture's LM, so the socket picture before/after isolates exactly the connections of the fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from _served import free_port
from _reliability import (
    baseline,
    close_pools,  # noqa: F401
    engine_tasks,
    field_texts,
    new_threads,
    pooled_idle,
    server_open,
    settle_connections,
    settled_tasks,
    threads,
)

import jupyter_stream as js
from jupyter_stream import AdapterParseError, LMError, StreamTimeoutError
from jupyter_stream.demo import Fault, Reply
from jupyter_stream.notebook.sink import WidgetSink
from jupyter_stream.notebook.widget import StreamWidget

pytestmark = pytest.mark.usefixtures("close_pools")

ANSWER = "Paris is the capital of France and a lovely city."
CHAT = f"[[ ## answer ## ]]\n{ANSWER}\n\n[[ ## completed ## ]]"
K = 9  # deltas before the fault: "[[", " ##", " answer", " ##", " ]]", "\n", "Paris", " is", " the"
AT_K = "Paris is the"



@dataclass
class Case:
    id: str
    script: list[Any]
    error: type[BaseException] | None  # None: the stream succeeds
    message: str = ""  # a regex the message must match (re.search)
    partial: dict[str, str] = field(default_factory=dict)  # what error.partial (= the chunks received) holds
    answer: str | None = None  # the final value on success
    adapter: str | None = None
    signature: str = "question -> answer"
    listen: str = "answer"
    retries: int = 0
    requests: int = 1
    pooled: int = 0  # idle keep-alive connections the faulted LM may keep (a complete HTTP response)
    early: int | None = 0  # streamed responses the client left before their end (None: racy, not checked)
    stream_timeout: float = 10.0
    refused: bool = False  # point the LM at a port nothing listens on
    check: Callable[[BaseException], None] | None = None


def _timeout(err: BaseException) -> None:
    assert isinstance(err, TimeoutError) and err.limit == "stream_timeout" and err.seconds == 0.3


CASES = [
    Case("drop_after_k", [Reply(content=CHAT, fault=Fault("drop", after=K))], LMError,
         message=rf"^test-model: the connection (failed|closed) after {K} deltas",
         partial={"answer": AT_K}),
    Case("stall_hits_stream_timeout", [Reply(content=CHAT, fault=Fault("stall", after=K))], StreamTimeoutError,
         message=r"^no event for 0\.3 s \(stream_timeout\): the model or the program stalled",
         partial={"answer": AT_K}, early=1, stream_timeout=0.3, check=_timeout),
    Case("http_429_retried_then_error", [Fault("status", status=429, times=3)], LMError,
         message=r"^test-model: the server answered HTTP 429: Rate limit reached", retries=2, requests=3,
         pooled=1, check=lambda e: _status(e, 429)),
    Case("http_429_retried_then_ok", [Fault("status", status=429, times=2), CHAT], None, answer=ANSWER,
         retries=2, requests=3, pooled=1),
    Case("http_500_retried_then_error", [Fault("status", status=500, times=2)], LMError,
         message=r"^test-model: the server answered HTTP 500: The server had an error while processing",
         retries=1, requests=2, pooled=1, check=lambda e: _status(e, 500)),
    Case("malformed_sse_line", [Reply(content=CHAT, fault=Fault("malformed", after=K))], LMError,
         message=rf"^malformed SSE line from the server after {K} deltas: ", partial={"answer": AT_K}, early=None),
    Case("sse_error_event", [Reply(content=CHAT, fault=Fault("error_event", after=K, message="overloaded, later"))],
         LMError, message=rf"^the server reported an error mid-stream after {K} deltas: overloaded, later$",
         partial={"answer": AT_K}, early=None),
    Case("truncated_without_completed_marker", ["[[ ## answer ## ]]\nParis is the capital"], None,
         answer="Paris is the capital", pooled=1),
    Case("json_truncated_without_closing_brace", ['{"answer": "Paris is the capital"'], None,
         answer="Paris is the capital", adapter="json", pooled=1),
    Case("xml_truncated_without_closing_tag", ["<answer>\nParis is the capital"], None,
         answer="Paris is the capital", adapter="xml", pooled=1),
    Case("json_cut_inside_the_value", ['{"answer": "Paris is the capi'], AdapterParseError,
         message=r"not a valid JSON object \(invalid or cut-off value for key 'answer'", adapter="json",
         partial={"answer": "Paris is the capi"}, pooled=1, check=lambda e: _field(e, "answer")),
    Case("reply_never_opens_the_field", ["I will not use your format. Paris."], AdapterParseError,
         message=r"lacks the output field 'answer' \(expected `\[\[ ## answer ## \]\]`\)", pooled=1,
         check=lambda e: _field(e, "answer")),
    Case("json_reply_never_opens_the_field", ['{"city": "Paris"}'], AdapterParseError,
         message=r"lacks the output field 'answer'", adapter="json", pooled=1, check=lambda e: _field(e, "answer")),
    Case("json_invalid_value_for_typed_field", ['{"n": "many"}'], AdapterParseError,
         message=r"value for field 'n' is not a valid int: 'many'", adapter="json", signature="question -> n: int",
         listen="n", partial={"n": "many"}, pooled=1, check=lambda e: _field(e, "n")),
    Case("server_closes_without_answering", [Fault("refuse")], LMError,
         message=r"^test-model: cannot reach http://127\.0\.0\.1:\d+/v1"),
    Case("connection_refused", [], LMError, message=r"^test-model: cannot reach http://127\.0\.0\.1:\d+/v1",
         refused=True, requests=0),
]


def _status(err: BaseException, status: int) -> None:
    assert err.status_code == status


def _field(err: BaseException, name: str) -> None:
    assert err.field == name


def _program(case: Case) -> js.Predict:
    return js.Predict(case.signature)


def _setup(case: Case, lm: js.LM, server: Any) -> js.LM:
    if case.refused:
        return lm.copy(base_url=f"http://127.0.0.1:{free_port()}/v1", num_retries=case.retries)
    return lm.copy(num_retries=case.retries)


def _lost(case: Case, events: list[Any], error: BaseException | None) -> int:
    """Characters the consumer should have received (or error.partial should hold) but did not."""
    got = field_texts(events)
    want = {case.listen: case.answer} if case.error is None else case.partial
    lost = sum(max(0, len(v) - len(got.get(k, ""))) for k, v in want.items())
    if error is not None:
        partial = getattr(error, "partial", {})
        lost += sum(max(0, len(v) - len(partial.get(k, ""))) for k, v in got.items())
    return lost


def _check_outcome(case: Case, events: list[Any], error: BaseException | None, server: Any) -> None:
    got = field_texts(events)
    if case.error is None:
        assert error is None, f"{case.id}: unexpected {type(error).__name__}: {error}"
        final = events[-1]
        assert isinstance(final, js.Prediction)
        assert getattr(final, case.listen) == case.answer
        assert got == {case.listen: case.answer}  # every chunk arrived, nothing else
    else:
        assert type(error) is case.error, f"{case.id}: got {type(error).__name__}: {error}"
        assert re.search(case.message, str(error)), f"{case.id}: message {str(error)!r} !~ {case.message!r}"
        assert "sk-test-SECRET" not in str(error) and "sk-test-SECRET" not in repr(error)
        assert error.partial == case.partial, (error.partial, error.raw)
        assert got == case.partial  # error.partial is exactly what the consumer received
        assert not any(isinstance(ev, js.Prediction) for ev in events)
        if case.check is not None:
            case.check(error)
    assert len(server.requests) == case.requests


def _check_connections(case: Case, before: Any, offset: int, faulted: js.LM, server: Any) -> int:
    """Check the connections after the fault; returns how many sockets were left that should not be."""
    after = settle_connections(server, offset)
    fresh = set(after.client) - set(before.client)
    leaked = max(0, len(fresh) - case.pooled) + abs(after.other - before.other)
    if case.early is not None:
        assert server.stream_closed_early == case.early
    assert set(before.client) <= set(after.client), "a connection the fault did not use was closed"
    assert len(fresh) == case.pooled, f"{case.id}: {len(fresh)} connections left open, {case.pooled} allowed"
    assert pooled_idle(faulted) == case.pooled  # ... and those are idle in the pool, not in flight
    assert after.client_states() == ["ESTABLISHED"] * len(after.client)  # nothing half-closed
    assert server_open(server) - offset == len(after.client) == after.server  # every close seen by both ends
    assert after.other == before.other  # no other socket (event-loop self-pipe...) appeared or leaked
    return leaked


async def fault_scenario_async(case: Case, lm: js.LM, server: Any) -> dict[str, int]:
    """One fault through ``async for`` over ``js.stream``; checks everything, returns the figures.

    Also run by ``benchmarks/soak.py``. Raises AssertionError at the first broken promise.
    """
    server.script("[[ ## answer ## ]]\nwarm\n\n[[ ## completed ## ]]")
    assert [e async for e in js.stream(js.Predict("question -> answer"), None, {"question": "w"})][-1].answer == "warm"
    server.reset()
    faulted = _setup(case, lm, server)
    server.script(*case.script)
    tasks, thr, (socks, offset) = await settled_tasks(), threads(), baseline(server)

    events: list[Any] = []
    error: BaseException | None = None
    sink = WidgetSink(StreamWidget(), timer="none")  # what the notebook shows: the widget's panes
    sink.start(title="self", model="test-model")
    with js.context(lm=faulted, adapter=case.adapter):
        s = js.stream(_program(case), None, {"question": "q"}, listen=[case.listen],
                      stream_timeout=case.stream_timeout)
    try:
        async for ev in s:
            events.append(ev)
            sink.handle(ev)
    except Exception as e:  # noqa: BLE001
        error = e
    sink.finish(error=error)

    figures = {"lost": _lost(case, events, error), "tasks": len(await settled_tasks() - tasks),
               "threads": len(new_threads(thr))}
    _check_outcome(case, events, error, server)
    # The widget keeps the same text as error.partial, in its saved state too, and shows the error.
    panes = {k.rsplit(".", 1)[-1]: v for k, v in sink.texts().items() if v}
    assert panes == field_texts(events) == {p["field"]: p["text"] for p in sink.widget.panes if p["text"]}
    if error is None:
        assert sink.widget.status == "done" and sink.widget.error == ""
    else:
        assert sink.widget.status == "error" and sink.widget.error == f"{type(error).__name__}: {error}"
    assert figures["tasks"] == 0, "a task was left"
    assert figures["threads"] == 0, new_threads(thr)
    figures["sockets"] = _check_connections(case, socks, offset, faulted, server)
    await faulted.aclose()
    return figures


def fault_scenario_sync(case: Case, lm: js.LM, server: Any) -> dict[str, int]:
    """One fault through the sync wrapper of ``streamify``; checks everything, returns the figures."""
    program = js.Predict(case.signature)
    server.script("[[ ## answer ## ]]\nwarm\n\n[[ ## completed ## ]]")
    warm = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")],
                        async_streaming=False)
    assert list(warm(question="w"))[-1].answer == "warm"
    server.reset()
    faulted = _setup(case, lm, server)
    server.script(*case.script)
    streamed = js.streamify(program, stream_listeners=[js.StreamListener(case.listen)], async_streaming=False)
    tasks, thr, (socks, offset) = engine_tasks(), threads(), baseline(server)

    events: list[Any] = []
    error: BaseException | None = None
    with js.context(lm=faulted, adapter=case.adapter):
        try:
            for ev in streamed(question="q", stream_timeout=case.stream_timeout):
                events.append(ev)
        except Exception as e:  # noqa: BLE001
            error = e

    figures = {"lost": _lost(case, events, error), "tasks": len(engine_tasks() - tasks),
               "threads": len(new_threads(thr))}
    _check_outcome(case, events, error, server)
    assert figures["tasks"] == 0, "a task was left on the engine loop"
    assert figures["threads"] == 0, new_threads(thr)
    figures["sockets"] = _check_connections(case, socks, offset, faulted, server)
    faulted.close()
    return figures


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_fault_async_stream(case: Case, lm: js.LM, server: Any) -> None:
    assert await fault_scenario_async(case, lm, server) == {"lost": 0, "tasks": 0, "threads": 0, "sockets": 0}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_sync_streamify(case: Case, lm: js.LM, server: Any) -> None:
    assert fault_scenario_sync(case, lm, server) == {"lost": 0, "tasks": 0, "threads": 0, "sockets": 0}
