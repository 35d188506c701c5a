"""The API key never shows: not in reprs, history, LM events, errors, the terminal, the widget, the snapshot
or any log record (DEBUG, every logger: jupyter_stream, openai, httpx2/httpcore2, asyncio).

One session of realistic use runs with the key ``sk-test-SECRET-...``: a streamed call with the prompt
inspector's events, a 401 whose body echoes the key (as OpenAI's does), an SSE error event echoing it, a
dropped stream; everything a user or a log could see is collected and searched for the key.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import traceback
from typing import Any

import pytest
from _reliability import close_pools  # noqa: F401

import jupyter_stream as js
from jupyter_stream.demo import Fault, Reply
from jupyter_stream.notebook.display import WidgetDisplay
from jupyter_stream.notebook.widget import StreamWidget

pytestmark = pytest.mark.usefixtures("close_pools")

KEY = "sk-test-SECRET-key-123"  # the fixture LM's key (tests/conftest.py)
LOGGERS = ["", "jupyter_stream", "openai", "httpx2", "httpcore2", "httpx", "httpcore", "asyncio"]
REPLY = "[[ ## reasoning ## ]]\nThe key facts.\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


class RecordingWidget(StreamWidget):
    """Records every custom message and every state update the widget sends to the front end."""

    def __init__(self, **kwargs: Any) -> None:
        self.wire: list[str] = []
        super().__init__(**kwargs)

    def send(self, content: Any, buffers: Any = None) -> None:
        self.wire.append(json.dumps(content, default=str))
        super().send(content, buffers)

    def _send(self, msg: Any, buffers: Any = None) -> None:
        self.wire.append(json.dumps(msg, default=str))
        super()._send(msg, buffers)


def _texts(obj: Any) -> list[str]:
    return [repr(obj), str(obj)]


def _chain(err: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _error_texts(err: BaseException) -> list[str]:
    """What can be seen of an error: message, repr, the printed traceback, its attributes, and every
    exception chained to it (hidden or not) with the HTTP request and response it may hold."""
    out = ["".join(traceback.format_exception(err))]
    out += [repr(getattr(err, a, None)) for a in ("partial", "raw", "predict_name", "status_code")]
    for e in _chain(err):
        out += _texts(e) + [repr(vars(e))]
        for attr in ("request", "response"):
            try:
                obj = getattr(e, attr, None)
            except Exception:  # noqa: BLE001
                obj = None
            if obj is not None:
                out += [repr(obj), repr(dict(obj.headers)), repr(getattr(obj, "content", b""))]
    return out


def _shown(events: list[Any], error: BaseException | None = None) -> list[str]:
    """Feed the events to the terminal renderer and to a widget; return everything they produced."""
    term = io.StringIO()
    renderer = js.TextRenderer(term, color=False)
    display = WidgetDisplay(display=False)
    widget = RecordingWidget()
    display.widget = widget
    display.sink.widget = widget
    display.start(title="predict", model="test-model")
    for ev in events:
        renderer.handle(ev)
        display.handle(ev)
    final = events[-1] if events and isinstance(events[-1], js.Prediction) else None
    renderer.finish(error=error)
    display.finish(prediction=final, error=error)
    state = widget.get_state()
    return [term.getvalue(), json.dumps(state, default=str), display.snapshot_sink.html, *widget.wire]


def test_the_api_key_appears_nowhere(lm: js.LM, server: Any, caplog: pytest.LogCaptureFixture) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    seen: list[str] = []

    # 1. a streamed call with the prompt inspector's events (LMRequest / LMResponse)
    server.script(REPLY)
    events = list(js.stream(js.ChainOfThought("question -> answer"), None, {"question": "Capital?"}, lm_events=True))
    assert events[-1].answer == "Paris"
    assert any(isinstance(e, js.LMRequest) for e in events) and any(isinstance(e, js.LMResponse) for e in events)
    seen += [repr(e) for e in events] + _shown(events)

    # 2. HTTP 401 whose body echoes the key; 3. an SSE error event echoing it; 4. a dropped stream
    failures = [
        Fault("status", status=401, body={"error": {"message": f"Incorrect API key provided: {KEY}.",
                                                    "type": "invalid_request_error", "code": "invalid_api_key"}}),
        Reply(content=REPLY, fault=Fault("error_event", after=6, message=f"bad key {KEY}")),
        Reply(content=REPLY, fault=Fault("drop", after=8)),
    ]
    errors: list[BaseException] = []
    for item in failures:
        server.script(item)
        got: list[Any] = []
        with pytest.raises(js.LMError) as info:
            for ev in js.stream(js.ChainOfThought("question -> answer"), None, {"question": "q"}, lm_events=True):
                got.append(ev)
        errors.append(info.value)
        seen += [repr(e) for e in got] + _error_texts(info.value) + _shown(got, info.value)
    assert errors[0].status_code == 401 and "Incorrect API key provided: sk-***" in str(errors[0])
    assert "bad key sk-***" in str(errors[1])

    # 5. the sync predict path and the async LM call, then everything the LM keeps
    server.script(REPLY)
    assert js.ChainOfThought("question -> answer")(question="q").answer == "Paris"
    records = list(lm.history)
    assert len(records) == 2  # the two calls that succeeded (failed calls are not kept in the history)
    seen += [repr(r) for r in records] + [json.dumps(dataclasses.asdict(r), default=str) for r in records]
    seen += _texts(lm) + _texts(lm.copy(temperature=0.5)) + _texts(js.settings.current())
    seen += [json.dumps(lm.request_params(), default=str)]

    # 6. every log record, formatted and raw (message arguments included)
    assert caplog.records, "DEBUG logging captured nothing: the check would be empty"
    seen += [caplog.text] + [repr(r.args) + r.getMessage() for r in caplog.records]

    leaks = [s for s in seen if KEY in s or "SECRET" in s]
    assert leaks == [], leaks[:3]
    # The check is not vacuous: the key did reach the server, and the server echoed it back.
    assert any(KEY in json.dumps(f.body) for f in failures if isinstance(f, Fault))
    assert len(server.requests) == 5


@pytest.mark.parametrize("item", [Fault("status", status=500), Fault("status", status=429),
                                  Reply(content=REPLY, fault=Fault("drop", after=3)), Fault("refuse")],
                         ids=["http_500", "http_429", "dropped", "refused"])
async def test_errors_do_not_keep_the_request_that_carries_the_key(lm: js.LM, server: Any, item: Any) -> None:
    """Regression: ``raise LMError(...) from None`` hid the transport's exception from tracebacks but kept it
    as ``__context__``, with the request and its ``Authorization: Bearer <key>`` header."""
    server.script(item)
    with pytest.raises(js.LMError) as info:
        await js.Predict("question -> answer").acall(question="q")
    assert _chain(info.value) == [info.value]
    assert not [t for t in _error_texts(info.value) if KEY in t]
