"""StreamWidget + WidgetSink: rate-limited deltas, snapshots, statuses, Stop, the prediction.

Real anywidget/ipywidgets objects (no kernel: the comm is a DummyComm). ``CapturingWidget`` records
the custom messages the sink sends.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydantic
import pytest

from jupyter_stream.notebook.widget import StreamWidget, WidgetSink
from jupyter_stream.prediction import Prediction
from jupyter_stream.streaming.events import LMRequest, LMResponse, StatusMessage, StreamResponse

STATIC = Path(__file__).resolve().parents[2] / "jupyter_stream" / "static"


class CapturingWidget(StreamWidget):
    def __init__(self, **kwargs):
        self.payloads: list[dict] = []
        super().__init__(**kwargs)

    def send(self, content, buffers=None):
        self.payloads.append(json.loads(json.dumps(content)))
        super().send(content, buffers)

    def deltas(self) -> list[dict]:
        return [p for p in self.payloads if p.get("type") == "deltas"]

    def joined(self, upto_seq: int | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in self.deltas():
            if upto_seq is not None and p["seq"] > upto_seq:
                continue
            for key, text, _done in p["items"]:
                out[key] = out.get(key, "") + text
        return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chunk(field: str, text: str, last: bool = False, predict: str = "predict") -> StreamResponse:
    return StreamResponse(predict, field, text, last)


# ------------------------------------------------------------------------------ rate and content


async def test_burst_of_2000_tokens_is_batched_and_complete():
    w = CapturingWidget()
    sink = WidgetSink(w, flush_interval=1 / 30)
    sink.start(title="predict", model="gpt-4o-mini")
    expected = {"predict.reasoning": [], "predict.answer": []}
    t0 = time.monotonic()
    for i in range(2000):
        field = "reasoning" if i < 1200 else "answer"
        tok = f"t{i} "
        expected[f"predict.{field}"].append(tok)
        sink.handle(chunk(field, tok, last=i in (1199, 1999)))
        if i % 40 == 39:
            await asyncio.sleep(0.01)
    burst = time.monotonic() - t0
    await asyncio.sleep(0.15)  # the trailing flush sends the end of the burst
    elapsed = time.monotonic() - t0
    n = len(w.deltas())
    print(f"{n} delta messages in {elapsed:.2f} s")
    assert 0.3 < burst < 5.0
    assert n <= elapsed * 30 + 2, (n, elapsed)
    assert n >= 5  # it streamed during the burst, not all at the end
    assert w.joined() == {k: "".join(v) for k, v in expected.items()}
    seqs = [p["seq"] for p in w.deltas()]
    assert seqs == list(range(1, n + 1))
    done = {item[0] for p in w.deltas() for item in p["items"] if item[2]}
    assert done == {"predict.reasoning", "predict.answer"}
    assert w.messages_sent == n
    assert w.bytes_sent == sum(len(json.dumps(p, separators=(",", ":")).encode()) for p in w.payloads)
    assert w.stats["tokens"] == 2000
    sink.finish()


async def test_last_deltas_of_a_burst_arrive_by_the_trailing_flush():
    w = CapturingWidget()
    sink = WidgetSink(w, flush_interval=0.3)
    sink.start(title="predict")
    sink.handle(chunk("answer", "Hello"))  # first event: flushed at once
    assert w.joined() == {"predict.answer": "Hello"}
    sink.handle(chunk("answer", ", world"))  # inside the interval: held
    assert w.joined() == {"predict.answer": "Hello"}
    assert isinstance(sink._trailing, asyncio.TimerHandle)
    await asyncio.sleep(0.1)
    assert w.joined() == {"predict.answer": "Hello"}  # not before the interval is over
    await asyncio.sleep(0.5)
    assert w.joined() == {"predict.answer": "Hello, world"}
    assert len(w.deltas()) == 2
    assert not sink.finished


def test_trailing_flush_without_a_loop_uses_a_thread():
    w = CapturingWidget()
    sink = WidgetSink(w, flush_interval=0.3)
    sink.start(title="predict")
    sink.handle(chunk("answer", "a"))
    sink.handle(chunk("answer", "b"))
    assert w.joined() == {"predict.answer": "a"}
    assert isinstance(sink._trailing, threading.Timer)
    time.sleep(0.7)
    assert w.joined() == {"predict.answer": "ab"}


def test_no_trailing_flush_when_disabled_then_finish_sends_everything():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="predict")
    sink.handle(chunk("answer", "a"))
    sink.handle(chunk("answer", "b"))
    assert w.joined() == {"predict.answer": "a"}
    sink.finish()
    assert w.joined() == {"predict.answer": "ab"}


def test_flush_rate_with_a_fake_clock():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, flush_interval=0.1, timer="none", clock=clock)
    sink.start(title="p")
    for _ in range(1000):  # 1,000 events over 1 s
        sink.handle(chunk("answer", "x"))
        clock.now += 0.001
    assert len(w.deltas()) == 10
    assert w.joined()["predict.answer"] == "x" * len(w.joined()["predict.answer"])


# ------------------------------------------------------------------------------------ snapshots


def test_finish_sets_full_snapshot_done_flags_and_seq():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="predict", model="m")
    for i in range(50):
        sink.handle(chunk("reasoning", f"r{i}", last=i == 49))
        clock.now += 0.01
    for i in range(30):
        sink.handle(chunk("answer", f"a{i}"))
        clock.now += 0.01
    sink.finish()
    assert w.status == "done"
    assert w.panes == [
        {"key": "predict.reasoning", "predict": "predict", "field": "reasoning",
         "text": "".join(f"r{i}" for i in range(50)), "done": True},
        {"key": "predict.answer", "predict": "predict", "field": "answer",
         "text": "".join(f"a{i}" for i in range(30)), "done": True},
    ]
    assert w.snapshot_seq == w.deltas()[-1]["seq"] == w.last_seq
    assert w.joined() == {p["key"]: p["text"] for p in w.panes}
    # A field that never got its last chunk is closed by a normal finish.
    key, text, done = w.deltas()[-1]["items"][-1]
    assert (key, text.endswith("a29"), done) == ("predict.answer", True, True)


def test_snapshots_while_streaming_are_rate_limited_and_consistent():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, flush_interval=1 / 30, snapshot_interval=1.0, timer="none", clock=clock)
    sink.start(title="predict")
    seen = []
    w.observe(lambda ch: seen.append((w.snapshot_seq, [dict(p) for p in w.panes])), names="panes")
    for i in range(300):  # 3 s
        sink.handle(chunk("answer", f"{i},"))
        clock.now += 0.01
    assert 2 <= len(seen) <= 3
    for seq, panes in seen:
        # Everything up to the snapshot's seq is exactly the snapshot's text.
        assert w.joined(upto_seq=seq) == {p["key"]: p["text"] for p in panes}


def test_big_texts_get_rarer_snapshots():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, snapshot_interval=0.5, snapshot_bytes_per_s=10_000, timer="none", clock=clock)
    sink.start(title="p")
    count = [0]
    w.observe(lambda ch: count.__setitem__(0, count[0] + 1), names="panes")
    for _ in range(400):  # 4 s, 40 kB: at most one snapshot per 4 s once the text is 40 kB
        sink.handle(chunk("answer", "x" * 100))
        clock.now += 0.01
    assert count[0] <= 3


def test_resync_request_sends_a_snapshot_at_once():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="p")
    sink.handle(chunk("answer", "abc"))
    clock.now += 0.001
    sink.handle(chunk("answer", "def"))  # pending
    assert w.panes == []
    w._handle_custom_msg({"type": "resync", "seq": 0}, [])
    assert w.panes[0]["text"] == "abcdef"
    assert w.snapshot_seq == w.last_seq == 2


def test_reusing_a_widget_clears_panes_and_keeps_seq_increasing():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="one")
    sink.handle(chunk("answer", "first"))
    sink.finish()
    seq = w.last_seq
    sink2 = WidgetSink(w, timer="none")
    sink2.start(title="two")
    assert w.panes == [] and w.snapshot_seq == seq and w.status == "running" and w.title == "two"
    sink2.handle(chunk("answer", "second"))
    assert w.deltas()[-1]["seq"] == seq + 1
    sink2.finish()
    assert w.panes[0]["text"] == "second"


# --------------------------------------------------------------------- statuses, stop, prediction


class Answer(pydantic.BaseModel):
    city: str
    population: int


def test_prediction_fields_are_pretty_printed_with_usage():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="predict", model="m")
    sink.handle(chunk("answer", "Paris", last=True))
    usage = {"m": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}}
    pred = Prediction.from_dict(
        {"answer": "Paris", "n": 42, "items": [1, "é", None], "info": Answer(city="Paris", population=2)},
        usage=usage,
    )
    sink.handle(pred)
    sink.finish(prediction=pred)
    fields = w.prediction["fields"]
    assert fields["answer"] == "Paris"
    assert fields["n"] == "42"
    assert fields["items"] == '[\n  1,\n  "é",\n  null\n]'
    assert json.loads(fields["info"]) == {"city": "Paris", "population": 2}
    assert fields["info"].startswith("{\n  ")
    assert w.prediction["usage"] == usage
    assert w.stats["tokens"] == 7  # usage replaces the chunk count


def test_error_keeps_partial_text():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="predict")
    sink.handle(chunk("answer", "partial ans"))
    sink.finish(error=ValueError("the LM said no"))
    assert w.status == "error"
    assert w.error == "ValueError: the LM said no"
    assert w.panes[0]["text"] == "partial ans"
    assert w.panes[0]["done"] is False


@pytest.mark.parametrize("how", ["stopped", "cancelled"])
def test_stopped_status(how):
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="predict")
    sink.handle(chunk("answer", "half"))
    if how == "stopped":
        sink.finish(stopped=True)
    else:
        sink.finish(error=asyncio.CancelledError())
    assert w.status == "stopped"
    assert w.error == ""
    assert w.panes[0] == {"key": "predict.answer", "predict": "predict", "field": "answer", "text": "half", "done": False}


def test_stop_message_from_the_front_end_calls_on_stop():
    w = StreamWidget()
    calls = []

    def bad():
        raise RuntimeError("a broken callback")

    w.on_stop(bad)
    w.on_stop(lambda: calls.append("stop"))
    w._handle_custom_msg({"type": "stop"}, [])
    assert calls == ["stop"]
    assert w.stop_requested
    w._handle_custom_msg({"type": "something else"}, [])
    assert calls == ["stop"]
    w.on_stop(bad, remove=True)
    w._handle_custom_msg({"type": "stop"}, [])
    assert calls == ["stop", "stop"]


def test_script_text_is_stored_as_is():
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title=evil, model=evil)
    sink.handle(StatusMessage(evil))
    sink.handle(chunk("answer", evil, last=True))
    sink.finish(prediction=Prediction(answer=evil))
    assert w.title == evil and w.status_message == evil and w.status_log == [evil]
    assert w.panes[0]["text"] == evil
    assert w.deltas()[0]["items"][0][1] == evil
    assert w.prediction["fields"]["answer"] == evil


def test_status_messages_and_lm_calls():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="predict", model="")
    sink.handle(StatusMessage("Calling the LM"))
    sink.handle(StatusMessage("Thinking"))
    assert w.status_message == "Thinking"
    assert w.status_log == ["Calling the LM", "Thinking"]
    msgs = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "Q?"}]
    sink.handle(LMRequest("predict", "gpt-4o-mini", msgs, call_id=1))
    assert w.model_name == "gpt-4o-mini"
    assert w.lm_calls == [{
        "call_id": 1, "predict": "predict", "model": "gpt-4o-mini", "messages": msgs, "raw": "", "reasoning": "",
        "usage": {}, "ttft": None, "duration": None, "cached": False, "done": False,
    }]
    clock.now += 0.5
    for tok in ["Par", "is", ""]:
        sink.handle(chunk("answer", tok, last=not tok))
        clock.now += 0.1
    assert sink.tokens == 2  # chunks with text
    raw = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    sink.handle(LMResponse("predict", "gpt-4o-mini", raw, usage={"completion_tokens": 9}, ttft=0.42, duration=1.0,
                           call_id=1))
    assert len(w.lm_calls) == 1
    call = w.lm_calls[0]
    assert call["raw"] == raw and call["messages"] == msgs and call["done"] and call["ttft"] == 0.42
    sink.handle(LMRequest("predict", "gpt-4o-mini", msgs, call_id=2))
    sink.handle(chunk("answer", "x"))
    assert sink.tokens == 10  # 9 from usage + 1 chunk of the running call
    sink.finish()
    assert w.stats["tokens"] == 10
    assert w.stats["ttft"] == 0.42
    assert w.stats["elapsed"] == pytest.approx(0.8)
    assert w.stats["tokens_per_s"] == pytest.approx(10 / (0.8 - 0.42), rel=0.01)
    assert [c["call_id"] for c in w.lm_calls] == [1, 2]


def test_ttft_from_first_chunk_without_lm_events():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="p")
    clock.now += 0.25
    sink.handle(chunk("answer", "a"))
    clock.now += 1.0
    sink.handle(chunk("answer", "b"))
    assert w.stats["ttft"] == 0.25
    assert w.stats["tokens"] == 2
    sink.finish()
    assert w.stats["tokens_per_s"] == pytest.approx(2.0)


def test_unknown_events_are_ignored_and_handle_autostarts():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.handle(object())
    sink.handle({"not": "an event"})
    assert not sink.started
    sink.handle(chunk("answer", "x", predict="step.gen"))
    assert sink.started and w.status == "running" and w.title == "step.gen"
    assert w.deltas()[0]["items"] == [["step.gen.answer", "x", False]]


def test_per_event_cost_does_not_grow_with_the_text():
    def run(prefill: int) -> float:
        sink = WidgetSink(StreamWidget(), timer="none", flush_interval=1.0, snapshot_interval=1e9)
        sink.start(title="p")
        sink.handle(chunk("answer", "x" * prefill))
        ev = chunk("answer", "tok")
        t0 = time.perf_counter()
        for _ in range(20_000):
            sink.handle(ev)
        return time.perf_counter() - t0

    small = min(run(10) for _ in range(3))
    big = min(run(5_000_000) for _ in range(3))
    assert big < small * 3 + 0.05, (small, big)


# ------------------------------------------------------------------------------ the bundle, layering


def test_static_bundle_is_built_and_never_uses_innerhtml():
    js = (STATIC / "widget.js").read_text()
    css = (STATIC / "widget.css").read_text()
    assert "jps-widget" in js and "msg:custom" in js and "appendData" in js
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "outerHTML" not in js
    assert ".jps-pane" in css and "--jp-" in css
    w = StreamWidget()
    assert w._esm == js


def test_the_engine_does_not_import_the_widget():
    code = (
        "import sys, jupyter_stream, jupyter_stream.streaming, jupyter_stream.notebook\n"
        "bad = [m for m in ('jupyter_stream.notebook.widget', 'anywidget') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
