"""StreamWidget + WidgetSink: rate-limited deltas, snapshots, statuses, Stop, the prediction.

Real anywidget/ipywidgets objects (no kernel: the comm is a DummyComm). ``CapturingWidget`` records
the custom messages the sink sends and the trait updates in their synced form.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pydantic
import pytest

from jupyter_stream.notebook.packed import unpack
from jupyter_stream.notebook.sink import WidgetSink
from jupyter_stream.notebook.throttle import MessageBudget
from jupyter_stream.notebook.widget import StreamWidget
from jupyter_stream.notebook.wire import resolve_text
from jupyter_stream._prediction import Prediction
from jupyter_stream.streaming.events import LMRequest, LMResponse, StatusMessage, StreamResponse

STATIC = Path(__file__).resolve().parents[2] / "jupyter_stream" / "static"


class CapturingWidget(StreamWidget):
    def __init__(self, **kwargs):
        self.payloads: list[dict] = []
        self.updates: list[dict] = []
        super().__init__(**kwargs)

    def send(self, content, buffers=None):
        self.payloads.append(json.loads(json.dumps(content)))
        super().send(content, buffers)

    def _send(self, msg, buffers=None):
        if isinstance(msg, dict) and msg.get("method") == "update" and hasattr(self, "updates"):
            self.updates.append(json.loads(json.dumps(msg["state"])))  # as sent: the synced form
        super()._send(msg, buffers)

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

    def wire_stats(self) -> list[dict]:
        """The stats that rode in the batches, in order."""
        return [p["stats"] for p in self.deltas() if "stats" in p]


@pytest.fixture(autouse=True)
def _fresh_budget():
    """Each test starts with the process-wide message budget unspent (the sinks with the default clock share it)."""
    MessageBudget.shared().reset()
    yield
    MessageBudget.shared().reset()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chunk(field: str, text: str, last: bool = False, predict: str = "predict", call_id: int = 1) -> StreamResponse:
    """A chunk of LM call ``call_id`` (the ``call_id`` of its LMRequest, as a stream sets it)."""
    return StreamResponse(predict, field, text, last, call_id)


# ------------------------------------------------------------------------------ rate and content


async def test_burst_of_2000_tokens_is_batched_and_complete():
    w = CapturingWidget()
    sink = WidgetSink(w)
    sink.start(title="predict", model="gpt-4o-mini")
    updates_at_start = w.state_updates_sent
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
    await asyncio.sleep(0.4)  # the trailing flushes send the end of the burst, then its last stats
    elapsed = time.monotonic() - t0
    n = len(w.deltas())
    print(f"{n} delta messages in {elapsed:.2f} s")
    assert 0.3 < burst < 5.0
    assert n <= elapsed * 25 + 2, (n, elapsed)
    assert n >= 5  # it streamed during the burst, not all at the end
    assert w.joined() == {k: "".join(v) for k, v in expected.items()}
    seqs = [p["seq"] for p in w.deltas()]
    assert seqs == list(range(1, n + 1))
    done = {item[0] for p in w.deltas() for item in p["items"] if item[2]}
    assert done == {"predict.reasoning", "predict.answer"}
    assert w.messages_sent == n
    assert w.bytes_sent == sum(len(json.dumps(p, separators=(",", ":")).encode()) for p in w.payloads)
    # One message per flush: the stats ride in the batches (at most every stats_interval), no trait update.
    assert w.state_updates_sent == updates_at_start
    stats = w.wire_stats()
    assert 2 <= len(stats) <= elapsed / sink.stats_interval + 2, (len(stats), elapsed)
    assert [s["tokens"] for s in stats] == sorted(s["tokens"] for s in stats)
    assert stats[-1]["tokens"] == sink.stats["tokens"] == 2000  # the last stats went out after the burst
    assert w.stats["tokens"] == 0  # the trait: the snapshot of the start, until the end
    sink.finish()
    assert w.stats["tokens"] == 2000 and w.state_updates_sent == updates_at_start + 1


async def test_last_deltas_of_a_burst_arrive_by_the_trailing_flush():
    w = CapturingWidget()
    sink = WidgetSink(w, flush_interval=0.3)
    sink.start(title="predict")
    sink.handle(chunk("answer", "Hello"))  # first event: flushed at once
    assert w.joined() == {"predict.answer": "Hello"}
    sink.handle(chunk("answer", ", world"))  # inside the interval: held
    assert w.joined() == {"predict.answer": "Hello"}
    assert sink.throttle.armed == "loop"
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
    assert sink.throttle.armed == "thread"
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
    # The tail that no batch carried is in the final snapshot, at the last batch's seq.
    assert w.joined() == {"predict.answer": "a"} and w.last_seq == 1
    assert w.panes[0]["text"] == "ab" and w.panes[0]["done"] and w.snapshot_seq == 1


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
    # The batches hold each text up to the last flush; the final snapshot holds the rest too (what came
    # after the last flush: flush_interval 0.04 s, one chunk every 0.01 s).
    joined = w.joined()
    assert joined["predict.reasoning"] == w.panes[0]["text"]
    answer = w.panes[1]["text"]
    tail = answer[len(joined["predict.answer"]):]
    assert answer.startswith(joined["predict.answer"]) and tail.endswith("a29") and 0 < len(tail) <= len("a26a27a28a29")
    # reasoning got its done flag in a batch; answer never got its last chunk: a normal finish closes it.
    assert [(item[0], item[2]) for p in w.deltas() for item in p["items"] if item[2]] == [("predict.reasoning", True)]
    # One final update: snapshot, stats, status.
    assert set(w.updates[-1]) == {"panes", "snapshot_seq", "stats", "status"}


def test_no_snapshot_while_streaming_by_default():
    """The text goes over the wire once while streaming: in the batches (the trait holds the start's)."""
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="predict")
    for i in range(3000):  # 30 s
        sink.handle(chunk("answer", f"{i},"))
        clock.now += 0.01
    assert not [u for u in w.updates if "panes" in u or "stats" in u]
    assert w.panes == [] and sink.texts()["predict.answer"].startswith(w.joined()["predict.answer"])
    sink.finish()
    assert [set(u) for u in w.updates if "panes" in u] == [{"panes", "snapshot_seq", "stats", "status"}]
    assert w.panes[0]["text"] == "".join(f"{i}," for i in range(3000))


def test_periodic_snapshots_when_asked_grow_geometrically_and_are_consistent():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, snapshot_interval=1.0, timer="none", clock=clock)
    sink.start(title="predict")
    seen = []
    w.observe(lambda ch: seen.append((w.snapshot_seq, [dict(p) for p in w.panes])), names="panes")
    for i in range(6000):  # 60 s of a steady stream
        sink.handle(chunk("answer", f"{i:05d},"))
        clock.now += 0.01
    sink.flush()
    full = sink.texts()["predict.answer"]
    sizes = [len(panes[0]["text"]) for _, panes in seen]
    assert 4 <= len(sizes) <= 7, sizes  # at 1 s, then each time the text doubled: not once a second
    assert all(b >= 2 * a for a, b in itertools.pairwise(sizes)), sizes
    assert sum(sizes) <= 2 * len(full)
    for seq, panes in seen:
        # The snapshot at seq holds the batches up to seq and the text none had carried yet; the batches
        # after it go on right where it ends.
        text = panes[0]["text"]
        assert text.startswith(w.joined(upto_seq=seq)["predict.answer"])
        assert text + "".join(it[1] for p in w.deltas() if p["seq"] > seq for it in p["items"]) == full


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
    # One update: the snapshot holds the pending text too, at the last batch's seq (no batch for "def").
    assert w.panes[0]["text"] == "abcdef"
    assert w.snapshot_seq == w.last_seq == 1
    assert set(w.updates[-1]) == {"panes", "snapshot_seq", "stats"}
    clock.now += 1.0
    sink.handle(chunk("answer", "ghi"))
    assert w.deltas()[-1]["seq"] == 2 and w.deltas()[-1]["items"] == [["predict.answer", "ghi", False]]


def _stream_to_a_view(clock: FakeClock, w: CapturingWidget, *, hello: bool) -> WidgetSink:
    sink = WidgetSink(w, timer="none", clock=clock)
    if hello:
        w._handle_custom_msg({"type": "hello"}, [])
    sink.start(title="p")
    for i in range(40):
        sink.handle(chunk("answer", f"a{i}😀 "))
        sink.handle(chunk("reasoning", f"r{i}", last=i == 39))
        clock.now += 0.01
    sink.flush()
    sink.handle(chunk("answer", "tail"))  # right after a flush: pending at the end, in no batch
    return sink


def test_final_snapshot_goes_by_reference_to_a_view_that_said_hello():
    """With a view, the text is not sent a second time at the end: each pane carries only what no batch
    carried, and the length the view checks before it fills the text in itself."""
    w = CapturingWidget()
    clock = FakeClock()
    sink = _stream_to_a_view(clock, w, hello=True)
    assert w.views_seen
    sink.finish()
    final = w.updates[-1]
    assert set(final) == {"panes", "snapshot_seq", "stats", "status"} and final["snapshot_seq"] == w.last_seq
    texts = sink.texts()
    joined = w.joined()
    assert [p["key"] for p in final["panes"]] == list(texts) == ["predict.answer", "predict.reasoning"]
    for wire in final["panes"]:
        text = texts[wire["key"]]
        assert "text" not in wire and wire["done"] is True
        assert joined[wire["key"]] + wire["tail"] == text
        assert wire["len"] == len(text.encode("utf-16-le")) // 2  # UTF-16 code units
    assert final["panes"][0]["tail"].endswith("tail") and final["panes"][1]["tail"] == ""
    assert final["panes"][0]["len"] == len(texts["predict.answer"]) + 40  # each emoji: 2 code units
    # Python keeps the text.
    assert [p["text"] for p in w.panes] == list(texts.values())
    # The final update is small: no pane text in it.
    assert "a39" not in json.dumps(final)


def test_a_view_that_cannot_fill_in_the_final_snapshot_gets_the_text_on_resync():
    w = CapturingWidget()
    clock = FakeClock()
    sink = _stream_to_a_view(clock, w, hello=True)
    sink.finish()
    n = len(w.updates)
    w._handle_custom_msg({"type": "resync", "seq": 0}, [])
    assert len(w.updates) == n + 1 and set(w.updates[-1]) == {"panes", "snapshot_seq"}
    assert w.updates[-1]["panes"] == w.panes and [p["text"] for p in w.panes] == list(sink.texts().values())
    assert w.updates[-1]["snapshot_seq"] == w.last_seq
    # A page reloaded later asks for the whole state: the text again, not the reference form.
    w.send_state()
    assert w.updates[-1]["panes"] == w.panes


def test_without_a_view_the_final_snapshot_carries_the_text():
    """A notebook executed headless (nbclient): no front end said hello, the saved widget state needs the text."""
    w = CapturingWidget()
    clock = FakeClock()
    sink = _stream_to_a_view(clock, w, hello=False)
    sink.finish()
    assert not w.views_seen
    assert w.updates[-1]["panes"] == w.panes
    assert [p["text"] for p in w.updates[-1]["panes"]] == list(sink.texts().values())


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
        "call_id": 1, "predict": "predict", "group": "predict", "model": "gpt-4o-mini", "messages": msgs, "raw": "",
        "reasoning": "",
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
    sink.handle(chunk("answer", "x", call_id=2))
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
    assert sink.stats["ttft"] == 0.25 and sink.stats["tokens"] == 2
    assert w.wire_stats()[-1] == sink.stats  # both batches carried the stats (0.25 s apart or more)
    sink.finish()
    assert w.stats["ttft"] == 0.25 and w.stats["tokens"] == 2
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


# ------------------------------------------------------------------ the wire: budget, text by reference


def test_a_batch_never_makes_more_than_max_messages_per_s_in_a_second():
    """Batches and trait updates count alike: a batch goes out only while the last second holds fewer than
    max_messages_per_s widget messages. Status updates are not held back, so batches give way to them."""
    w = CapturingWidget()
    clock = FakeClock()
    sent: list[tuple[float, str]] = []  # every widget message (custom ones too go through _send)
    w._send = lambda msg, buffers=None, _s=w._send: (sent.append((clock.now, msg["method"])), _s(msg, buffers))[1]
    sink = WidgetSink(w, flush_interval=0.0, max_messages_per_s=10, timer="none", clock=clock)
    sink.start(title="p")
    for i in range(3000):  # 3 s of 1-ms chunks, a status message every 0.25 s
        sink.handle(chunk("answer", "x"))
        if i % 250 == 0:
            sink.handle(StatusMessage(f"step {i}"))
        clock.now += 0.001
    batches = [t for t, method in sent if method == "custom"]
    for t in batches:
        assert sum(1 for u, _ in sent if t - 1.0 < u <= t) <= 10, t
    assert 15 <= len(batches) <= 3 * 10  # about 6 a second: the budget less the status updates
    assert sink.texts()["predict.answer"].startswith(w.joined()["predict.answer"])


def _sinks(n: int, clock, budget, **kw) -> list[tuple[CapturingWidget, WidgetSink, list[float], list[float]]]:
    """n started sinks (no timer) on one budget: (widget, sink, the clock's time of each of the widget's messages,
    of each delta batch)."""
    out = []
    for i in range(n):
        w = CapturingWidget()
        times: list[float] = []
        batches: list[float] = []
        w._send = lambda msg, buffers=None, _s=w._send, _t=times: (_t.append(clock.now), _s(msg, buffers))[1]
        w.send = lambda content, buffers=None, _s=w.send, _b=batches: (_b.append(clock.now), _s(content, buffers))[1]
        sink = WidgetSink(w, timer="none", clock=clock, budget=budget, **kw)
        sink.start(title=f"p{i}")
        out.append((w, sink, times, batches))
    return out


def test_twenty_widgets_share_one_budget_fairly():
    """20 widgets streaming 100 tokens/s each: the kernel sends them 30 messages a second in all (not 20 x 25),
    each widget gets its turn about every 20/30 s, with its stats, and all the text arrives."""
    clock = FakeClock()
    budget = MessageBudget(per_s=30)
    group = _sinks(20, clock, budget)
    t0 = clock.now
    for step in range(1000):  # 10 s, a token to every widget every 10 ms
        for i, (_, sink, _, _) in enumerate(group):
            sink.handle(chunk("answer", f"w{i}t{step} "))
        clock.now += 0.01
    streamed = [t for _, _, times, _ in group for t in times if t >= t0 + 1.0]  # past the start and its burst
    assert 9 * 30 - 2 <= len(streamed) <= 9 * 30 + 2, len(streamed)
    every = sorted(t for _, _, times, _ in group for t in times)
    for k, t in enumerate(every):  # no second holds more than the budget and its burst
        assert sum(1 for u in every[k:k + 60] if u < t + 1.0) <= 30 + budget.burst, t
    per_widget = []
    for w, sink, _, batches in group:
        assert batches[0] <= t0 + 1.05  # the 20 starts, then each widget's first batch in turn
        gaps = [b - a for a, b in zip(batches, batches[1:])]
        per_widget.append(len(batches))
        assert max(gaps) <= 20 / 30 + 0.03, max(gaps)  # each pane: a batch (and its stats) every ~0.67 s
        assert len(w.wire_stats()) >= len(batches) - 1
    assert max(per_widget) - min(per_widget) <= 1, per_widget  # fair: 14-15 batches each in 10 s
    for i, (w, sink, _, _) in enumerate(group):
        sink.finish()
        assert w.panes[0]["text"] == "".join(f"w{i}t{s} " for s in range(1000))


def test_a_busy_widget_cannot_starve_the_others():
    """One widget fed a token every millisecond, five fed one every 0.3 s: the quiet ones' tokens still go out
    within a turn of the budget (they book the next free slot, after at most the busy one's booking)."""
    clock = FakeClock()
    budget = MessageBudget(per_s=30)
    (busy, busy_sink, _, _), *quiet = _sinks(6, clock, budget)
    asked: list[float] = []
    for ms in range(6000):
        busy_sink.handle(chunk("answer", "b"))
        if ms % 300 == 150:
            asked.append(clock.now)
            for _, sink, _, _ in quiet:
                sink.handle(chunk("answer", "q"))
        for _, sink, _, _ in quiet:
            sink._on_trailing()  # what the trailing timer does when it fires (polled every millisecond here)
        clock.now += 0.001
    for _, _, _, batches in quiet:
        assert len(batches) == len(asked)  # one batch per token
        waited = [b - a for a, b in zip(asked, batches)]
        assert max(waited) <= 6 / 30 + 0.01, waited
    busy_rate = len(busy.deltas()) / 6.0
    assert 30 - 5 / 0.3 - 1 <= busy_rate <= 25, busy_rate  # the busy one has the rest, within its own 25/s


def test_a_lone_widget_keeps_its_own_rate_under_the_budget():
    clock = FakeClock()
    [(w, sink, _, _)] = _sinks(1, clock, MessageBudget(per_s=30))
    for _ in range(3000):
        sink.handle(chunk("answer", "x"))
        clock.now += 0.001
    assert 24 * 3 <= len(w.deltas()) <= 25 * 3 + 1  # every flush_interval (1/25 s), as without a budget


def test_trait_updates_are_charged_to_the_budget():
    """Messages sent without a slot (status updates, the start) push the next slots back, for every widget."""
    clock = FakeClock()
    budget = MessageBudget(per_s=10, burst=1)
    (a, sink_a, _, _), (b, sink_b, _, _) = _sinks(2, clock, budget)  # two starts: 0.2 s of the budget
    for k in range(5):
        sink_a.handle(StatusMessage(f"step {k}"))  # five more
    sink_b.handle(chunk("answer", "x"))
    assert b.deltas() == []
    clock.now += 0.69
    sink_b.handle(chunk("answer", "y"))
    assert b.deltas() == []
    clock.now += 0.02
    sink_b.handle(chunk("answer", "z"))
    assert [p["items"][0][1] for p in b.deltas()] == ["xyz"]


def test_a_sink_with_its_own_budget_leaves_the_shared_one_alone():
    shared = MessageBudget.shared()
    assert WidgetSink(CapturingWidget()).throttle.budget is shared
    assert WidgetSink(CapturingWidget(), clock=FakeClock()).throttle.budget is not shared
    own = MessageBudget(per_s=1000)
    sink = WidgetSink(CapturingWidget(), timer="none", budget=own)
    sink.start(title="p")
    for _ in range(100):
        sink.handle(chunk("answer", "x"))
    assert shared.reserve(time.monotonic()) <= time.monotonic()  # nothing was booked on it


async def test_trailing_flushes_send_every_widget_its_end_under_the_budget():
    """Real timers on the loop: 20 widgets get a burst of tokens, then nothing; each widget's trailing call waits
    for its slot and sends the rest, all within a turn of the budget (20 slots at 30 a second)."""
    budget = MessageBudget(per_s=30)
    widgets = [CapturingWidget() for _ in range(20)]
    sinks = [WidgetSink(w, budget=budget) for w in widgets]
    for i, s in enumerate(sinks):
        s.start(title=f"p{i}")
    t0 = time.monotonic()
    for rnd in range(3):
        for i, s in enumerate(sinks):
            s.handle(chunk("answer", f"{i}.{rnd} "))
        await asyncio.sleep(0.01)
    for _ in range(60):  # wait for the trailing flushes
        if all(w.joined().get("predict.answer", "").count(" ") == 3 for w in widgets):
            break
        await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    assert [w.joined().get("predict.answer") for w in widgets] == [
        "".join(f"{i}.{r} " for r in range(3)) for i in range(20)]
    sent = sum(len(w.deltas()) for w in widgets)
    assert took <= (20 + sent) / 30 + 0.5, (took, sent)  # the starts, then the batches, in turn
    assert sent <= 2 * 20 + 1, sent  # the first token each, then the rest in one trailing batch each


def test_prediction_and_raw_reply_are_sent_by_reference_to_the_panes():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="predict", model="m")
    reasoning = "Light from the sun scatters off the molecules of the air. " * 3
    answer = "Blue light scatters the most, so the sky looks blue 😀 (mostly)."
    raw = f"[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"
    msgs = [{"role": "user", "content": "Why is the sky blue?"}]
    sink.handle(LMRequest("predict", "m", msgs, call_id=1))
    for field, text in (("reasoning", reasoning), ("answer", answer)):
        for i in range(0, len(text), 7):
            sink.handle(chunk(field, text[i:i + 7], last=i + 7 >= len(text)))
            clock.now += 0.01
    sink.handle(LMResponse("predict", "m", raw, usage={"completion_tokens": 30}, ttft=0.1, duration=1.0, call_id=1))
    pred = Prediction(reasoning=reasoning, answer=answer, short="Blue.")
    sink.handle(pred)
    assert w.prediction == {}  # shown by finish, with the final snapshot
    sink.finish(prediction=pred)

    # Python keeps the full values.
    assert w.prediction["fields"] == {"reasoning": reasoning, "answer": answer, "short": "Blue."}
    assert w.lm_calls[0]["raw"] == raw
    # The end is one update: the final snapshot, the prediction by reference, the reply by reference.
    final = w.updates[-1]
    assert set(final) == {"panes", "snapshot_seq", "stats", "status", "prediction", "lm_calls"}
    assert final["prediction"]["fields"] == {
        "reasoning": {"$pane": "predict.reasoning"}, "answer": {"$pane": "predict.answer"}, "short": "Blue.",
    }
    wire_raw = final["lm_calls"][0]["raw"]
    assert wire_raw == [
        "[[ ## reasoning ## ]]\n", {"$pane": "predict.reasoning", "end": len(reasoning)},
        "\n\n[[ ## answer ## ]]\n", {"$pane": "predict.answer", "end": len(answer) + 1},  # 😀: 2 UTF-16 units
        "\n\n[[ ## completed ## ]]",
    ]
    assert final["lm_calls"][0]["messages"] == msgs
    assert resolve_text(wire_raw, final["panes"]) == raw
    assert {k: resolve_text(v, final["panes"]) for k, v in final["prediction"]["fields"].items()} == w.prediction["fields"]
    assert resolve_text({"$pane": "predict.answer", "end": 5}, final["panes"]) == "Blue "
    # Nothing sent the reply in full.
    assert all(reasoning not in json.dumps(u, ensure_ascii=False) for u in w.updates[:-1])


def test_each_call_of_a_predictor_has_its_own_panes_and_its_reply_refers_to_them():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="p")
    long = "a long answer that the next call of the same predictor continues. "
    sink.handle(LMRequest("loop", "m", [], call_id=1))
    sink.handle(chunk("answer", long, predict="loop"))
    sink.handle(LMResponse("loop", "m", f"[[ ## answer ## ]]\n{long}", call_id=1))
    sink.flush()
    first = w.updates[-1]["lm_calls"][0]["raw"]
    assert first == ["[[ ## answer ## ]]\n", {"$pane": "loop.answer", "end": len(long)}]
    # A second call of the same predictor (a loop) has panes of its own ("loop[2]"), and its reply refers to
    # them, never to the first call's.
    sink.handle(LMRequest("loop", "m", [], call_id=2))
    sink.handle(chunk("answer", long.upper(), predict="loop", call_id=2))
    sink.handle(LMResponse("loop", "m", f"[[ ## answer ## ]]\n{long.upper()}", call_id=2))
    sink.finish()
    calls = w.updates[-1]["lm_calls"]
    assert [p["key"] for p in w.panes] == ["loop.answer", "loop[2].answer"]
    assert [resolve_text(c["raw"], w.panes) for c in calls] == [c["raw"] for c in w.lm_calls]
    assert calls[1]["raw"] == ["[[ ## answer ## ]]\n", {"$pane": "loop[2].answer", "end": len(long)}]


def test_an_lm_reply_goes_out_with_the_next_flush_after_the_text_it_refers_to():
    w = CapturingWidget()
    clock = FakeClock()
    sink = WidgetSink(w, timer="none", clock=clock)
    sink.start(title="p")
    sink.handle(LMRequest("p", "m", [], call_id=1))
    clock.now += 1.0
    sink.handle(chunk("answer", "x" * 40, last=True, predict="p"))  # flushed at once
    sink.handle(LMResponse("p", "m", "[[ ## answer ## ]]\n" + "x" * 40, call_id=1))  # within the interval
    assert w.lm_calls[0]["done"] is False  # held for the next flush
    updates = len(w.updates)
    clock.now += 0.05
    sink.handle(StatusMessage("after"))  # an unrelated update does not carry it...
    sink.handle(chunk("other", "y", predict="p"))  # ...the next flush does, after its batch
    assert w.lm_calls[0]["done"] is True and w.lm_calls[0]["raw"].endswith("x" * 40)
    assert [set(u) for u in w.updates[updates:]] == [{"status_message", "status_log"}, {"lm_calls"}]
    assert w.updates[-1]["lm_calls"][0]["raw"] == ["[[ ## answer ## ]]\n", {"$pane": "p.answer", "end": 40}]


# ------------------------------------------------------------------------------ the bundle, layering


def test_static_bundle_is_built_and_never_uses_innerhtml():
    js = (STATIC / "widget.js").read_text()
    css = (STATIC / "widget.css").read_text()
    assert "jps-widget" in js and "msg:custom" in js and "appendData" in js
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "outerHTML" not in js
    assert ".jps-pane" in css and "--jp-" in css
    w = StreamWidget()
    # The widget sends them packed, in a small loader: unpacked, they are the files, byte for byte.
    assert unpack(w._esm) == (js, css)
    assert len(w._esm) < 0.5 * (len(js) + len(css)) and "import(url)" in w._esm
    assert "innerHTML" not in w._esm


def test_the_engine_does_not_import_the_widget():
    code = (
        "import sys, jupyter_stream, jupyter_stream.streaming, jupyter_stream.notebook\n"
        "bad = [m for m in ('jupyter_stream.notebook.widget', 'anywidget') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plain_text_of_the_widget_names_the_stream_not_an_address():
    from jupyter_stream.notebook.widget import StreamWidget

    w = StreamWidget(title="question -> answer")
    assert repr(w) == "<jupyter_stream question -> answer: idle>"
    assert w._repr_mimebundle_()[0]["text/plain"] == "<jupyter_stream question -> answer: idle>"


def test_big_prompt_messages_stay_in_the_kernel_until_the_inspector_asks():
    """A 2 MB input: the synced ``lm_calls`` (a saved notebook's widget state) holds a preview; the whole
    messages stay in the kernel and go to the front end as a custom message when its inspector asks."""
    from jupyter_stream.notebook.wire import HELD_MESSAGES

    w = CapturingWidget()
    sink = WidgetSink(w, timer="none", clock=FakeClock())
    sink.start(title="predict", model="m")
    big = "word " * 400_000
    msgs = [{"role": "system", "content": "Answer."}, {"role": "user", "content": big}]
    sink.handle(LMRequest("predict", "m", msgs, call_id=7))
    sink.handle(LMResponse("predict", "m", "[[ ## answer ## ]]\nok", call_id=7))
    sink.finish()
    assert w.lm_calls[0]["messages"] == msgs  # the Python value holds it all
    synced = [u["lm_calls"] for u in w.updates if "lm_calls" in u]
    assert synced and all(len(json.dumps(calls)) < 10_000 for calls in synced)
    preview = synced[-1][0]
    assert preview["held"] == len(big) + len("Answer.") > HELD_MESSAGES
    assert preview["messages"] == [{"role": "system", "content": "Answer."},
                                   {"role": "user", "content": big[:2000], "cut": len(big) - 2000}]
    w._on_frontend_msg(w, {"type": "messages", "call_id": 7}, [])
    assert w.payloads[-1] == {"type": "messages", "call_id": 7, "messages": msgs}


def test_small_prompt_messages_sync_whole():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none", clock=FakeClock())
    sink.start(title="predict", model="m")
    msgs = [{"role": "user", "content": "q" * 60_000}]
    sink.handle(LMRequest("predict", "m", msgs, call_id=1))
    sink.finish()
    synced = [u["lm_calls"] for u in w.updates if "lm_calls" in u][-1][0]
    assert synced["messages"] == msgs and "held" not in synced


# ------------------------------------------------------------------------------ a comparison


def _variant(label: str, ev):
    from jupyter_stream import VariantEvent

    return VariantEvent(label, ev)


def test_a_comparison_keeps_one_message_budget_for_all_its_variants():
    """Four variants streaming at once through one widget: every message (batches, stats, trait updates) counts
    against one budget, so the widget stays within max_messages_per_s in total, not per variant."""
    w = CapturingWidget()
    clock = FakeClock()
    sent: list[float] = []
    sent_custom: list[float] = []

    def record(msg, buffers=None, _s=w._send):
        sent.append(clock.now)
        if msg.get("method") == "custom":
            sent_custom.append(clock.now)
        return _s(msg, buffers)

    w._send = record
    sink = WidgetSink(w, flush_interval=1 / 25, max_messages_per_s=25, timer="none", clock=clock)
    labels = ["model=a", "model=b", "model=c", "model=d"]
    sink.start(title="compare", model="4 variants", variants=[(label, label[6:]) for label in labels])
    for i in range(4000):  # 2 s: each variant a chunk every 2 ms, a status message now and then
        label = labels[i % 4]
        sink.handle(_variant(label, chunk("answer", f"{i} ", call_id=10 + i % 4)))
        if i % 500 < 4:
            sink.handle(_variant(label, StatusMessage(f"{label} at {i}")))
        clock.now += 0.0005
    for t in sent:  # the variants' statuses ride with the batches: every message counts against one budget
        assert sum(1 for u in sent if t - 1.0 < u <= t) <= 25, t
    assert len(sent_custom) >= 30  # batches all along (about 20 a second)
    texts = w.joined()
    assert set(texts) == {f"{label}\x1fpredict.answer" for label in labels}
    for j, label in enumerate(labels):  # each column holds its own variant's text, in order
        expected = "".join(f"{i} " for i in range(j, 4000, 4))
        key = f"{label}\x1fpredict.answer"
        assert sink.texts()[key] == expected and expected.startswith(texts[key])
    vstats = [p["vstats"] for p in w.deltas() if "vstats" in p]
    assert vstats and all(set(v) == set(labels) for v in vstats)
    assert all(v[label]["tokens"] <= 1000 for v in vstats for label in labels)
    assert [v["message"] for v in w.variants] == [f"{label} at {3500 + j}" for j, label in enumerate(labels)]
    assert w.status_log[-4:] == [f"{label}: {label} at {3500 + j}" for j, label in enumerate(labels)]
    assert sink.variant_stats()["model=a"]["tokens"] == 1000 and sink.stats["tokens"] == 4000


def test_a_comparison_ends_each_variant_in_its_column_and_the_diff_at_the_end():
    from jupyter_stream import Prediction as P
    from jupyter_stream._compare import CompareResult, VariantDone, VariantStats

    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="compare", model="2 variants", variants=[("model=a", "a"), ("model=b", "b")])
    assert [v["status"] for v in w.variants] == ["running", "running"] and w.diff == []
    sink.handle(_variant("model=a", LMRequest("predict", "a", [{"role": "user", "content": "Q?"}], call_id=7)))
    sink.handle(_variant("model=a", chunk("answer", "<b>Paris</b> is the capital.", True, call_id=7)))
    sink.handle(_variant("model=b", chunk("answer", "Lyon", call_id=8)))
    pred_a = P(answer="<b>Paris</b> is the capital.")
    sink.handle(VariantDone("model=a", pred_a, None, VariantStats(started=0.0)))
    assert [v["status"] for v in w.variants] == ["running", "running"]  # held for the next batch (the budget)
    sink.flush()
    assert [v["status"] for v in w.variants] == ["done", "running"]
    assert w.joined()["model=a\x1fpredict.answer"] == "<b>Paris</b> is the capital."  # its text went out before its end
    sink.handle(VariantDone("model=b", None, RuntimeError("HTTP 400"), VariantStats(started=0.0)))
    result = CompareResult({"model=a": pred_a, "model=b": RuntimeError("HTTP 400")}, {})
    sink.handle(result)
    assert w.diff == []  # set by finish, with the final snapshot
    sink.finish()
    a, b = w.variants
    assert (a["status"], a["prediction"]["fields"], a["model"]) == ("done", {"answer": "<b>Paris</b> is the capital."}, "a")
    assert (b["status"], b["error"]) == ("error", "RuntimeError: HTTP 400")
    assert w.status == "done" and w.prediction == {}
    assert [c["variant"] for c in w.lm_calls] == ["model=a"] and w.lm_calls[0]["group"] == "model=a\x1fpredict"
    assert {p["key"]: p["predict"] for p in w.panes} == {"model=a\x1fpredict.answer": "model=a\x1fpredict",
                                                          "model=b\x1fpredict.answer": "model=b\x1fpredict"}


def test_a_stopped_comparison_marks_its_running_variants_stopped():
    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="compare", variants=[("x", "m1"), ("y", "m2")])
    sink.handle(_variant("x", chunk("answer", "part", call_id=1)))
    sink.finish(stopped=True)
    assert w.status == "stopped" and [v["status"] for v in w.variants] == ["stopped", "stopped"]


def test_a_variants_prediction_goes_by_reference_to_its_own_panes():
    from jupyter_stream import Prediction as P
    from jupyter_stream._compare import VariantDone, VariantStats

    w = CapturingWidget()
    sink = WidgetSink(w, timer="none")
    sink.start(title="compare", variants=[("x", "m1"), ("y", "m2")])
    same = "The same long answer, word for word, in both variants."
    for label, call in (("x", 1), ("y", 2)):
        sink.handle(_variant(label, chunk("answer", same, True, call_id=call)))
        sink.handle(VariantDone(label, P(answer=same, short="ok"), None, VariantStats(started=0.0)))
    sink.finish()
    final = [u["variants"] for u in w.updates if "variants" in u][-1]
    assert [v["prediction"]["fields"] for v in final] == [  # each refers to its own column's pane
        {"answer": {"$pane": "x\x1fpredict.answer"}, "short": "ok"},
        {"answer": {"$pane": "y\x1fpredict.answer"}, "short": "ok"}]
    assert [v["prediction"]["fields"]["answer"] for v in w.variants] == [same, same]  # Python holds the text
    assert [resolve_text(v["prediction"]["fields"]["answer"], w.panes) for v in final] == [same, same]
