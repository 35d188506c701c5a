"""%%stream in a real ipykernel, driven through jupyter_client, against a loopback server in this process."""

from __future__ import annotations

import queue
import threading
import time

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

from jupyter_stream.demo import DemoServer, Reply  # noqa: E402

LONG = "[[ ## answer ## ]]\n" + " ".join(f"word{i}" for i in range(120)) + "\n\n[[ ## completed ## ]]"


@pytest.fixture(scope="module")
def slow_server():
    srv = DemoServer(token_rate=60).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def kernel(slow_server):
    km = jupyter_client.KernelManager(kernel_name="python3")
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    setup = (
        "%load_ext jupyter_stream\n"
        "import jupyter_stream as js\n"
        f"js.configure(lm=js.LM('kernel-test', base_url={slow_server.url!r}, api_key='k', cache=False))\n"
    )
    reply, _ = execute(kc, setup)
    assert reply["content"]["status"] == "ok", reply
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def execute(kc, code, *, timeout=60.0, on_iopub=None):
    """Run ``code``; return (execute_reply, [(receive time, iopub msg)]) for this cell."""
    msg_id = kc.execute(code)
    msgs = []
    deadline = time.monotonic() + timeout
    idle = False
    while not idle:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"cell did not finish in {timeout}s: {code[:60]!r}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append((time.monotonic(), msg))
        if on_iopub is not None:
            on_iopub(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply, msgs


def stream_text(msgs):
    return "".join(m["content"]["text"] for _, m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


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
