"""%%stream in a real ipykernel, driven through jupyter_client, against a loopback server in this process."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("jupyter_client")

from _kernel import LONG, execute, slow_server, start_kernel, stop_kernel, stream_text  # noqa: E402, F401


@pytest.fixture(scope="module")
def kernel(slow_server):
    km, kc = start_kernel(slow_server.url)
    yield km, kc
    stop_kernel(km, kc)


def test_text_output_arrives_while_the_cell_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.script(LONG)
    reply, msgs = execute(kc, '%%stream "question -> answer" --text --out r\nHello?')
    assert reply["content"]["status"] == "ok"
    text = stream_text(msgs)
    assert "word0 word1" in text and "word119" in text
    times = [t for t, m in msgs if m["msg_type"] == "stream"]
    # 120 tokens at 60 tokens/s: output must be spread over the run, not dumped at the end
    assert len(times) >= 4 and times[-1] - times[0] > 1.0
    reply, msgs = execute(kc, "print(r.answer.split()[-1])")
    assert stream_text(msgs).strip() == "word119"


def test_interrupt_cancels_the_stream_and_closes_the_request(kernel, slow_server):
    km, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)
    timer = threading.Timer(1.0, km.interrupt_kernel)
    timer.start()
    reply, msgs = execute(kc, '%%stream "question -> answer" --text\nHello?')
    timer.join()
    assert "word0" in stream_text(msgs), "the stream never started"
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "CancelledError"
    assert "word119" not in stream_text(msgs)
    assert slow_server.wait_idle(5.0)
    assert slow_server.stream_closed_early == 1
    reply, msgs = execute(
        kc, "import asyncio\nprint(len([t for t in asyncio.all_tasks() if 'drive' in repr(t) or '_consume' in repr(t)]))"
    )
    assert stream_text(msgs).strip() == "0"


def test_background_stream_goes_on_while_another_cell_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)
    reply, _ = execute(kc, '%%stream "question -> answer" --text --background --out bg\nHello?')
    assert reply["content"]["status"] == "ok"
    reply, msgs = execute(kc, "import asyncio\nawait asyncio.sleep(0.5)\nprint('bg' in globals())")
    assert stream_text(msgs).strip() == "False"  # still streaming while this cell ran
    deadline = time.monotonic() + 10
    while True:
        reply, msgs = execute(kc, "import asyncio\nawait asyncio.sleep(0.2)\nprint('bg' in globals() and bg.answer.split()[-1])")
        if stream_text(msgs).strip() == "word119" or time.monotonic() > deadline:
            break
    assert stream_text(msgs).strip() == "word119"


def _comm_opens(msgs):
    return [m["content"]["comm_id"] for _, m in msgs if m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"].get("_model_name") == "AnyModel"]


def _deltas(msgs):
    out = []
    for t, m in msgs:
        if m["msg_type"] == "comm_msg":
            data = m["content"]["data"]
            if data.get("method") == "custom" and data["content"].get("type") == "deltas":
                out.append((t, data["content"]))
    return out


def test_widget_deltas_arrive_batched_while_the_cell_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)
    reply, msgs = execute(kc, '%%stream "question -> answer" --out w\nHello?')
    assert reply["content"]["status"] == "ok"
    assert len(_comm_opens(msgs)) == 1
    deltas = _deltas(msgs)
    text = "".join(item[1] for _, d in deltas for item in d["items"] if item[0] == "self.answer")
    reply, out = execute(kc, "print(repr(w.answer))")
    assert repr(text) == stream_text(out).strip()
    times = [t for t, _ in deltas]
    span = times[-1] - times[0]
    assert span > 1.0  # spread over the run, not sent at the end
    assert len(deltas) <= 30 * span + 5  # batched: at most ~30 flushes a second
    assert [d["seq"] for _, d in deltas] == sorted({d["seq"] for _, d in deltas})


def test_stop_button_is_handled_while_the_cell_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)
    sent = []

    def click_stop(msg):
        if msg["msg_type"] == "comm_open" and not sent and _comm_opens([(0, msg)]):
            sent.append(msg["content"]["comm_id"])
        elif msg["msg_type"] == "comm_msg" and len(sent) == 1 and msg["content"]["data"].get("method") == "custom":
            stop = kc.session.msg("comm_msg", {"comm_id": sent[0], "data": {"method": "custom", "content": {"type": "stop"}}})
            kc.shell_channel.send(stop)
            sent.append(time.monotonic())

    reply, msgs = execute(kc, '%%stream "question -> answer" --out s\nHello?', on_iopub=click_stop)
    assert len(sent) == 2, "no delta arrived to click Stop after"
    assert reply["content"]["status"] == "ok"  # a stop is not an error
    idle_at = msgs[-1][0]
    assert idle_at - sent[1] < 2.0  # handled while the cell ran, not after the stream ended
    assert slow_server.wait_idle(5.0)
    assert slow_server.stream_closed_early == 1
    states = [m["content"]["data"]["state"] for _, m in msgs if m["msg_type"] == "comm_msg"
              and m["content"]["data"].get("method") == "update"]
    assert any(s.get("status") == "stopped" for s in states)
    reply, out = execute(kc, "print('s' in globals())")
    assert stream_text(out).strip() == "False"
