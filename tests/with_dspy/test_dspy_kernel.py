"""A DSPy program under ``%%stream`` in a real ipykernel (jupyter_client): live widget deltas, interrupt."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")  # the kernel tools are not in the oldest-DSPy environment
sys.path.insert(0, str(Path(__file__).parents[1] / "notebook"))

from _kernel import (  # noqa: E402, F401
    LONG, execute, slow_server, start_kernel, stop_clicker, stop_kernel, stream_text, widget_deltas,
)

STEPS = "[[ ## reasoning ## ]]\n" + " ".join(f"step{i}" for i in range(60)) + "\n\n" + LONG
"""A ChainOfThought reply: 60 reasoning tokens, then the long answer (about 5 s at 60 tokens/s)."""


@pytest.fixture(scope="module")
def kernel(slow_server):
    km, kc = start_kernel(slow_server.url)
    setup = (
        "import dspy\n"
        f"dspy.configure(lm=dspy.LM('openai/kernel-test', api_base={slow_server.url!r}, api_key='k', cache=False, num_retries=0))\n"
        "prog = dspy.ChainOfThought('question -> answer')\n"
        "class SyncProg(dspy.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.cot = dspy.ChainOfThought('question -> answer')\n"
        "    def forward(self, question):\n"
        "        return self.cot(question=question)\n"
        "sync_prog = SyncProg()\n"
    )
    reply, _ = execute(kc, setup, timeout=120)
    assert reply["content"]["status"] == "ok", reply
    yield km, kc
    stop_kernel(km, kc)


def test_live_widget_deltas_arrive_while_a_dspy_program_runs(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(STEPS)
    reply, msgs = execute(kc, "%%stream prog --out w\nHello?")
    assert reply["content"]["status"] == "ok", reply
    deltas = widget_deltas(msgs)
    assert deltas, "no widget deltas"
    times = [t for t, _ in deltas]
    assert times[-1] - times[0] > 1.0  # spread over the run, not sent at the end
    keys = {item[0] for _, d in deltas for item in d["items"]}
    assert {"predict.reasoning", "predict.answer"} <= keys
    reply, out = execute(kc, "print(type(w).__module__.split('.')[0], w.answer.split()[-1])")
    assert stream_text(out).split() == ["dspy", "word119"]


def test_interrupt_cancels_a_dspy_stream_and_closes_the_request(kernel, slow_server):
    km, kc = kernel
    slow_server.reset()
    slow_server.script(STEPS)
    timer = threading.Timer(1.0, km.interrupt_kernel)
    timer.start()
    reply, msgs = execute(kc, "%%stream prog --text\nHello?")
    timer.join()
    assert "step0" in stream_text(msgs), "the stream never started"
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "CancelledError"
    assert "word119" not in stream_text(msgs)
    assert slow_server.wait_idle(5.0)
    assert slow_server.stream_closed_early == 1
    reply, msgs = execute(kc, "print(prog(question='again?').answer.split()[0])")  # the kernel still works
    assert reply["content"]["status"] == "ok" and stream_text(msgs).strip()


@pytest.mark.parametrize("program", ["prog", "sync_prog"])
def test_stop_button_stops_a_dspy_program_while_the_cell_runs(kernel, slow_server, program):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(STEPS)
    sent = []
    reply, msgs = execute(kc, f"%%stream {program} --out stopped\nHello?", on_iopub=stop_clicker(kc, sent))
    assert len(sent) == 2, "no delta arrived to click Stop after"
    assert reply["content"]["status"] == "ok"  # a stop is not an error
    assert msgs[-1][0] - sent[1] < 2.0  # handled while the cell ran
    assert slow_server.wait_idle(5.0)
    assert slow_server.stream_closed_early == 1
    states = [m["content"]["data"]["state"] for _, m in msgs if m["msg_type"] == "comm_msg"
              and m["content"]["data"].get("method") == "update"]
    assert any(s.get("status") == "stopped" for s in states)
    reply, out = execute(kc, "print('stopped' in globals())")
    assert stream_text(out).strip() == "False"


def test_show_streams_a_dspy_program_from_code(kernel, slow_server):
    _, kc = kernel
    slow_server.reset()
    slow_server.script(STEPS)
    reply, msgs = execute(kc, "view = js.show(prog, question='Hello?')")
    assert reply["content"]["status"] == "ok"
    reply, out = execute(kc, "p = await view\nprint(type(p).__module__.split('.')[0], p.answer.split()[-1], view.widget.status)",
                         timeout=60)
    assert reply["content"]["status"] == "ok", reply
    assert stream_text(out).split() == ["dspy", "word119", "done"]


def test_a_dspy_program_compared_by_model_in_one_widget(kernel, slow_server):
    """``%%stream prog --compare model=...`` on a DSPy program: each variant asks its own model through DSPy's LM
    (the configured server and key kept), a column each, and `_` holds DSPy's predictions by label."""
    _, kc = kernel
    slow_server.reset()
    slow_server.script("[[ ## reasoning ## ]]\nBlue scatters.\n\n[[ ## answer ## ]]\nRayleigh.\n\n[[ ## completed ## ]]",
                       model="small")
    slow_server.script("[[ ## reasoning ## ]]\nAir scatters blue.\n\n[[ ## answer ## ]]\nRayleigh scattering.\n\n"
                       "[[ ## completed ## ]]", model="large")
    reply, msgs = execute(kc, "%%stream prog --compare model=openai/small,openai/large\nWhy is the sky blue?")
    assert reply["content"]["status"] == "ok", reply
    assert sorted(r["model"] for r in slow_server.requests) == ["large", "small"]
    keys = {item[0] for _, d in widget_deltas(msgs) for item in d["items"]}
    assert {"model=openai/small\x1fpredict.answer", "model=openai/large\x1fpredict.answer"} <= keys, keys
    reply, out = execute(kc, "print(type(_['model=openai/large']).__module__.split('.')[0], "
                             "{k: v.answer for k, v in _.items()})")
    assert stream_text(out).strip() == (
        "dspy {'model=openai/small': 'Rayleigh.', 'model=openai/large': 'Rayleigh scattering.'}")
