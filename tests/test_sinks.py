"""One Sink protocol: the terminal, the widget, the HTML snapshot and the SSE encoder all implement it, and
``pour`` feeds any of them the same way (start, every event, finish once)."""

from __future__ import annotations

import asyncio
import html
import inspect
import io
import json

import pytest

import jupyter_stream as js
from jupyter_stream.streaming.sink import Sink, Sinks, pour
from jupyter_stream.streaming.sse import SSEEncoder

pytest.importorskip("ipywidgets")
from jupyter_stream.notebook.display import WidgetDisplay  # noqa: E402
from jupyter_stream.notebook.snapshot import SnapshotSink  # noqa: E402
from jupyter_stream.notebook.sink import WidgetSink  # noqa: E402
from jupyter_stream.notebook.widget import StreamWidget  # noqa: E402

EVENTS = [
    js.StatusMessage("thinking <b>hard</b>"),
    js.StreamResponse("self", "answer", "Par", False, 1),
    js.StreamResponse("self", "answer", "is <i>!", True, 1),
    js.Prediction(answer="Paris <i>!"),
]


def _sinks():
    frames: list[str] = []
    out = io.StringIO()
    return {
        "terminal": (js.TextRenderer(out, color=False), lambda: out.getvalue()),
        "widget": (WidgetSink(StreamWidget(), timer="none"), None),
        "snapshot": (SnapshotSink(uid="abc"), None),
        "sse": (SSEEncoder(frames.append, model="m"), lambda: "".join(frames)),
        "display": (WidgetDisplay(display=False), None),
    }


@pytest.mark.parametrize("name", sorted(_sinks()))
def test_every_sink_implements_the_protocol_with_keyword_options(name):
    sink, _ = _sinks()[name]
    assert isinstance(sink, Sink)
    for method in ("start", "finish"):
        params = [p for p in inspect.signature(getattr(sink, method)).parameters.values()]
        assert params and all(p.kind is p.KEYWORD_ONLY for p in params), (name, method, params)


async def _events():
    for event in EVENTS:
        yield event


def test_pour_gives_every_sink_the_same_stream():
    sinks = _sinks()
    fan = Sinks(*(sink for sink, _ in sinks.values()))
    final = asyncio.run(pour(_events(), fan, title="qa", model="m"))
    assert final.answer == "Paris <i>!"
    assert "Paris <i>!" in sinks["terminal"][1]()
    sse = sinks["sse"][1]()
    chunks = [json.loads(line[6:]) for line in sse.split("\n\n") if line.startswith("data: {")]
    assert "".join(c["stream_response"]["chunk"] for c in chunks if "stream_response" in c) == "Paris <i>!"
    assert {"prediction": {"answer": "Paris <i>!"}, "model": "m"} in chunks and sse.endswith("data: [DONE]\n\n")
    assert sinks["widget"][0].texts() == {"answer": "Paris <i>!"}
    assert sinks["widget"][0].widget.status == "done"
    page = sinks["snapshot"][0].html
    assert html.escape("Paris <i>!") in page and "thinking &lt;b&gt;hard&lt;/b&gt;" in page and "<i>done</i>" in page
    assert sinks["display"][0].snapshot_sink.html.count(html.escape("Paris <i>!")) >= 1


def test_pour_finishes_with_the_error_and_raises_it():
    async def failing():
        yield EVENTS[1]
        raise js.LMError("boom", partial={"answer": "Par"})

    frames: list[str] = []
    snapshot = SnapshotSink()
    with pytest.raises(js.LMError):
        asyncio.run(pour(failing(), Sinks(SSEEncoder(frames.append), snapshot), title="qa", model="m"))
    assert json.loads(frames[-2][6:])["error"] == {"type": "LMError", "message": "boom", "partial": {"answer": "Par"}}
    assert "<i>error</i>" in snapshot.html and "LMError: boom" in snapshot.html and ">Par</pre>" in snapshot.html


def test_a_cancelled_pour_finishes_the_sink_as_stopped():
    async def endless():
        yield EVENTS[1]
        await asyncio.sleep(3600)
        yield EVENTS[2]

    widget_sink = WidgetSink(StreamWidget(), timer="none")

    async def main():
        task = asyncio.ensure_future(pour(endless(), widget_sink, title="qa", model="m"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert widget_sink.widget.status == "stopped" and widget_sink.texts() == {"answer": "Par"}
