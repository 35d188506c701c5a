"""%%stream in a real ipykernel, driven through jupyter_client, against a loopback server in this process."""

from __future__ import annotations

import ast
import json
import threading
import time

import pytest

pytest.importorskip("jupyter_client")

from _kernel import (  # noqa: E402, F401
    LONG, execute, slow_server, start_kernel, stop_clicker, stop_kernel, stream_text, widget_comm_ids, widget_deltas,
)


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


def test_widget_deltas_arrive_batched_while_the_cell_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)
    reply, msgs = execute(kc, '%%stream "question -> answer" --out w\nHello?')
    assert reply["content"]["status"] == "ok"
    assert len(widget_comm_ids(msgs)) == 1
    comm_id = widget_comm_ids(msgs)[0]
    deltas = widget_deltas(msgs)
    text = "".join(item[1] for _, d in deltas for item in d["items"] if item[0] == "answer")
    reply, out = execute(kc, "print(repr(w.answer))")
    answer = ast.literal_eval(stream_text(out).strip())
    times = [t for t, _ in deltas]
    span = times[-1] - times[0]
    assert span > 1.0  # spread over the run, not sent at the end
    assert [d["seq"] for _, d in deltas] == list(range(1, len(deltas) + 1))
    # The wire: while streaming the text goes once, in the batches (they carry the stats too); the end is
    # one update holding the final snapshot (with any text no batch carried yet) at the last batch's seq.
    widget = [(t, m["content"]["data"]) for t, m in msgs if m["msg_type"] == "comm_msg"
              and m["content"]["comm_id"] == comm_id]
    updates = [data["state"] for _, data in widget if data["method"] == "update"]
    assert [set(u) for u in updates if "panes" in u or "stats" in u] == [
        {"panes", "snapshot_seq", "stats", "status", "prediction", "lm_calls"}
    ]
    final = updates[-1]
    assert final["status"] == "done" and final["snapshot_seq"] == deltas[-1][1]["seq"]
    assert final["panes"][0]["text"] == answer and answer.startswith(text) and len(text) > len(answer) / 2
    assert final["prediction"]["fields"] == {"answer": {"$pane": "answer"}}
    assert any("stats" in d for _, d in deltas)
    # At most 30 widget messages in any second (25 a second at most for the batches and updates in flight).
    wt = [t for t, _ in widget]
    assert max(sum(1 for u in wt if t <= u < t + 1.0) for t in wt) <= 30
    assert len(deltas) <= 25 * span + 3


@pytest.mark.parametrize("snapshot", [True, False])
def test_a_front_end_that_said_hello_gets_the_final_snapshot_by_reference(kernel, slow_server, snapshot):
    """Standing in for JupyterLab, this client says hello when the widget opens: the end then carries no
    pane text (the view fills it in from the batches); ``--no-snapshot`` also leaves out the HTML copy,
    so the text goes over the wire once."""
    _, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)

    def hello(msg):
        if msg["msg_type"] == "comm_open" and widget_comm_ids([(0, msg)]):
            content = {"comm_id": msg["content"]["comm_id"], "data": {"method": "custom", "content": {"type": "hello"}}}
            kc.shell_channel.send(kc.session.msg("comm_msg", content))

    option = "" if snapshot else " --no-snapshot"
    reply, msgs = execute(kc, f'%%stream "question -> answer" --out w{option}\nHello?', on_iopub=hello)
    assert reply["content"]["status"] == "ok"
    reply, out = execute(kc, "print(repr(w.answer))")
    answer = ast.literal_eval(stream_text(out).strip())
    comm_id = widget_comm_ids(msgs)[0]
    deltas = widget_deltas(msgs)
    joined = "".join(item[1] for _, d in deltas for item in d["items"] if item[0] == "answer")
    updates = [m["content"]["data"]["state"] for _, m in msgs if m["msg_type"] == "comm_msg"
               and m["content"]["comm_id"] == comm_id and m["content"]["data"]["method"] == "update"]
    final = updates[-1]
    assert final["status"] == "done" and final["snapshot_seq"] == deltas[-1][1]["seq"]
    [pane] = final["panes"]
    assert "text" not in pane and pane["done"] is True
    assert joined + pane["tail"] == answer and pane["len"] == len(answer)
    # Only the batches carry the middle of the text, plus the HTML snapshot unless --no-snapshot.
    middle = answer[len(answer) // 2:][:12]
    holders = [m["msg_type"] for _, m in msgs if middle in json.dumps(m["content"], ensure_ascii=False)
               and not (m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "custom")]
    displays = [m["content"]["data"] for _, m in msgs if m["msg_type"] == "update_display_data"]
    # The widget's own output is never updated (JupyterLab would build a new view of it: see display.py).
    assert not [d for d in displays if "application/vnd.jupyter.widget-view+json" in d]
    [shown] = [m["content"]["data"] for _, m in msgs if m["msg_type"] == "display_data"
               and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    assert shown["text/plain"] == "<jupyter_stream question -> answer>" and "text/html" not in shown
    snapshots = [d["text/html"] for d in displays if "text/html" in d]  # the snapshot's own output
    if snapshot:
        assert holders == ["update_display_data"] and len(snapshots) == 1 and middle in snapshots[0]
    else:
        assert holders == [] and snapshots == []
        assert not [m for _, m in msgs if m["msg_type"] == "display_data" and "text/html" in m["content"]["data"]]


@pytest.mark.parametrize("snapshot", [True, False])
def test_show_from_code_ends_with_or_without_the_html_snapshot(kernel, slow_server, snapshot):
    """``js.show(..., snapshot=False)`` leaves the static HTML copy out."""
    _, kc = kernel
    slow_server.reset()
    slow_server.script("[[ ## answer ## ]]\nshown from code\n\n[[ ## completed ## ]]")
    code = f"view = js.show(js.Predict('question -> answer'), question='q', snapshot={snapshot})\nawait view"
    reply, msgs = execute(kc, code)
    assert reply["content"]["status"] == "ok"
    displays = [m["content"]["data"] for _, m in msgs if m["msg_type"] == "update_display_data"]
    assert not any("application/vnd.jupyter.widget-view+json" in d for d in displays)  # only the snapshot's
    snapshots = [d["text/html"] for d in displays if "text/html" in d]
    assert bool(snapshots) is snapshot
    if snapshot:
        assert "shown from code" in snapshots[-1]
    reply, out = execute(kc, "print(view.prediction.answer)")
    assert stream_text(out).strip() == "shown from code"


def test_stop_button_is_handled_while_the_cell_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(LONG)
    sent = []
    reply, msgs = execute(kc, '%%stream "question -> answer" --out s\nHello?', on_iopub=stop_clicker(kc, sent))
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


@pytest.mark.parametrize("mode", ["cell", "background"])
def test_restart_during_a_stream_closes_the_request_and_the_new_kernel_streams(slow_server, mode):
    """Restart (what JupyterLab's restart does: interrupt, shutdown_request, then SIGTERM/SIGKILL only if the
    kernel does not exit) while a widget stream is mid-reply: the old kernel exits by itself, the server sees
    its request closed early (no orphaned request streams on), and the new kernel runs cells and streams.

    ``cell``: the stream is the running cell (the interrupt cancels it first). ``background``: a
    ``--background`` stream, which an interrupt does not touch: only the kernel's exit ends its request."""
    slow_server.reset()
    slow_server.script(LONG)
    km, kc = start_kernel(slow_server.url)
    try:
        # SIGTERM goes out at shutdown_wait_time / 2: a kernel that cannot exit during a stream shows as a slow restart.
        km.shutdown_wait_time = 20.0
        flag = " --background" if mode == "background" else ""
        msg_id = kc.execute(f'%%stream "question -> answer" --out r{flag}\nHello?')
        received = ""
        deadline = time.monotonic() + 30
        while "word3" not in received:  # a few delta batches of the answer have arrived
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "comm_msg":
                received += "".join(item[1] for _, d in widget_deltas([(0, msg)]) for item in d["items"])
        assert "word119" not in received
        assert slow_server.stream_closed_early == 0

        started = time.monotonic()
        km.restart_kernel()
        took = time.monotonic() - started
        assert took < km.shutdown_wait_time / 2, f"the kernel did not exit on shutdown_request ({took:.1f}s)"

        # The old kernel's request is closed, not streaming on to the end of the reply (about 4 s).
        assert slow_server.wait_idle(10.0), "the server still streams to the old kernel"
        assert slow_server.stream_closed_early == 1
        assert len(slow_server.requests) == 1
        assert slow_server.connections_opened == slow_server.connections_closed == 1

        kc.wait_for_ready(timeout=60)
        reply, msgs = execute(kc, "import sys\nprint(6 * 7, 'r' in globals(), 'jupyter_stream' in sys.modules)")
        assert reply["content"]["status"] == "ok", reply
        assert stream_text(msgs).strip() == "42 False False"  # a new process, and it runs cells

        setup = (
            "%load_ext jupyter_stream\nimport jupyter_stream as js\n"
            f"js.configure(lm=js.LM('kernel-test', base_url={slow_server.url!r}, api_key='k', cache=False))\n"
        )
        reply, _ = execute(kc, setup)
        assert reply["content"]["status"] == "ok", reply
        slow_server.script("[[ ## answer ## ]]\nback after the restart\n\n[[ ## completed ## ]]")
        reply, msgs = execute(kc, '%%stream "question -> answer" --out again\nStill there?', timeout=30)
        assert reply["content"]["status"] == "ok", reply
        assert len(widget_comm_ids(msgs)) == 1 and widget_deltas(msgs)
        reply, msgs = execute(kc, "print(repr(again.answer))")
        assert stream_text(msgs).strip() == repr("back after the restart")
        assert slow_server.wait_idle(5.0)
        assert slow_server.stream_closed_early == 1 and len(slow_server.requests) == 2
    finally:
        stop_kernel(km, kc)


def test_a_server_failure_fails_the_cell_with_the_error_in_one_line(kernel, slow_server):
    from jupyter_stream.demo import Fault

    _, kc = kernel
    slow_server.reset()
    slow_server.script(Fault("status", status=400, body={"error": {"message": "bad request", "type": "invalid_request_error"}}))
    reply, msgs = execute(kc, '%%stream "question -> answer" --text\nHello?')
    content = reply["content"]
    assert content["status"] == "error" and content["ename"] == "LMError"
    assert content["traceback"] == ["LMError: the stream failed (shown above)"]
    assert stream_text(msgs).count("error: LMError") == 1


def test_a_recorded_show_replays_in_a_fresh_kernel_with_no_lm_and_no_network(kernel, slow_server, tmp_path):
    """``with js.record(FILE)`` around ``js.show(...)``, then ``js.show(js.replay(FILE, speed=0))`` in a new kernel
    that has no LM configured and cannot open a connection: the widget shows the recorded run again."""
    _, kc = kernel
    slow_server.reset()
    slow_server.script("[[ ## answer ## ]]\nrecorded in one kernel\n\n[[ ## completed ## ]]")
    path = tmp_path / "shown.jsonl"
    code = f"with js.record({str(path)!r}):\n    view = js.show(js.Predict('question -> answer'), question='q')\n"
    reply, _ = execute(kc, code + "    await view")
    assert reply["content"]["status"] == "ok", reply["content"]
    requests = len(slow_server.requests)

    km2, kc2 = start_kernel(slow_server.url, magic=False)
    try:
        code = (
            "import socket\n"
            "def _refuse(*args, **kwargs):\n    raise OSError('no network in this test')\n"
            "socket.socket.connect = _refuse\nsocket.socket.connect_ex = _refuse\nsocket.create_connection = _refuse\n"
            "js.configure(lm=None)\n"
            f"replayed = js.show(js.replay({str(path)!r}, speed=0))\nawait replayed\n"
            "w = replayed.widget\n"
            "print(repr((w.title, w.model_name, w.status, replayed.prediction.answer, [p['text'] for p in w.panes])))"
        )
        reply, msgs = execute(kc2, code)
        assert reply["content"]["status"] == "ok", reply["content"]
        shown = ast.literal_eval(stream_text(msgs).strip().splitlines()[-1])
        assert shown == ("Predict(question -> answer)", "kernel-test", "done", "recorded in one kernel",
                         ["recorded in one kernel"])
        assert widget_deltas(msgs), "the replay streamed no delta batch into the widget"
    finally:
        stop_kernel(km2, kc2)
    assert len(slow_server.requests) == requests  # the replay asked no server


def test_widgets_streaming_at_once_share_the_kernels_message_budget(kernel):
    """Ten widgets fed at once in a real kernel (the loop's trailing timers): together they get at most the
    budget's 30 messages a second (not 10 x 25), each widget a batch at least every ~10/30 s, all the text."""
    _, kc = kernel
    code = (
        "import asyncio\n"
        "from IPython.display import display\n"
        "from jupyter_stream.notebook.sink import WidgetSink\n"
        "from jupyter_stream.notebook.widget import StreamWidget\n"
        "from jupyter_stream.streaming.events import StreamResponse\n"
        "async def feed(i):\n"
        "    w = StreamWidget()\n"
        "    display(w)\n"
        "    sink = WidgetSink(w)\n"
        "    sink.start(title=f'w{i}')\n"
        "    await asyncio.sleep(0.5)\n"
        "    for k in range(300):\n"
        "        sink.handle(StreamResponse('p', 'answer', f'{i}.{k} ', k == 299))\n"
        "        await asyncio.sleep(0.01)\n"
        "    await asyncio.sleep(0.6)\n"
        "    sink.finish()\n"
        "await asyncio.gather(*(feed(i) for i in range(10)))\n"
    )
    reply, msgs = execute(kc, code, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    comm_of = {}
    for t, m in msgs:
        if m["msg_type"] == "comm_msg":
            data = m["content"]["data"]
            if data.get("method") == "custom" and data["content"].get("type") == "deltas":
                comm_of.setdefault(m["content"]["comm_id"], []).append((t, data["content"]))
    assert len(comm_of) == 10
    every = sorted(t for batches in comm_of.values() for t, _ in batches)
    busiest = max(sum(1 for u in every[k:] if u < t + 1.0) for k, t in enumerate(every))
    assert busiest <= 30 + 10 + 3, busiest  # the budget, its burst, and a little jitter on the way
    texts = set()
    for batches in comm_of.values():
        text = "".join(item[1] for _, c in batches for item in c["items"])
        texts.add(text.split(".")[0])
        assert text == "".join(f"{text.split('.')[0]}.{k} " for k in range(300))
        times = [t for t, _ in batches]
        assert max(b - a for a, b in zip(times, times[1:])) < 10 / 30 + 0.3, times
    assert texts == {str(i) for i in range(10)}
    print(f"{len(every)} batches to 10 widgets, at most {busiest} in a second")
