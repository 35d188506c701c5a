"""Helpers for the real-kernel tests: a kernel (jupyter_client) with jupyter_stream configured on a slow loopback server."""

from __future__ import annotations

import os
import queue
import time

import pytest

from jupyter_stream.demo import DemoServer

LONG = "[[ ## answer ## ]]\n" + " ".join(f"word{i}" for i in range(120)) + "\n\n[[ ## completed ## ]]"
"""A reply of about 250 tokens: about 4 s at the slow server's 60 tokens/s."""


@pytest.fixture(scope="module")
def slow_server():
    srv = DemoServer(token_rate=60).start()
    yield srv
    srv.stop()


def start_kernel(url: str, *, magic: bool = True):
    """A kernel (manager, client) whose jupyter_stream LM points at ``url``; no OPENAI_API_KEY."""
    import jupyter_client

    km = jupyter_client.KernelManager(kernel_name="python3")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["JUPYTER_STREAM_DEMO_RATE"] = "0"
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    setup = (
        ("%load_ext jupyter_stream\n" if magic else "")
        + "import jupyter_stream as js\n"
        + f"js.configure(lm=js.LM('kernel-test', base_url={url!r}, api_key='k', cache=False))\n"
    )
    reply, _ = execute(kc, setup)
    assert reply["content"]["status"] == "ok", reply
    return km, kc


def stop_kernel(km, kc) -> None:
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
    """What a cell printed to stdout."""
    return "".join(m["content"]["text"] for _, m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


def widget_deltas(msgs):
    """The widget's delta batches among a cell's iopub messages: ``[(receive time, content)]``."""
    out = []
    for t, m in msgs:
        if m["msg_type"] == "comm_msg":
            data = m["content"]["data"]
            if data.get("method") == "custom" and data["content"].get("type") == "deltas":
                out.append((t, data["content"]))
    return out


def widget_comm_ids(msgs):
    """The comm ids of the stream widgets a cell opened."""
    return [m["content"]["comm_id"] for _, m in msgs if m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"].get("_model_name") == "AnyModel"]


def stop_clicker(kc, sent):
    """An ``on_iopub`` hook that clicks the widget's Stop (a ``stop`` message from the front end) right after
    the first delta batch; ``sent`` gets the comm id, then the time of the click."""

    def click_stop(msg):
        if msg["msg_type"] == "comm_open" and not sent and widget_comm_ids([(0, msg)]):
            sent.append(msg["content"]["comm_id"])
        elif msg["msg_type"] == "comm_msg" and len(sent) == 1 and msg["content"]["data"].get("method") == "custom":
            stop = kc.session.msg("comm_msg", {"comm_id": sent[0], "data": {"method": "custom", "content": {"type": "stop"}}})
            kc.shell_channel.send(stop)
            sent.append(time.monotonic())

    return click_stop
