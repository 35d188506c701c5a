"""Cancelling a streamed DSPy program, every way a consumer can: the HTTP request closes within a second,
no task is left, and a sync program's thread unwinds (break and a kernel interrupt are in the other files)."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from pathlib import Path

import dspy
import pytest

import jupyter_stream as js
from jupyter_stream.demo import Fault, Reply

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))
from _reliability import engine_tasks, settled_tasks  # noqa: E402

SLOW = Reply(content="[[ ## answer ## ]]\n" + "word " * 2000 + "\n\n[[ ## completed ## ]]", token_rate=200)


class SyncModule(dspy.Module):
    """A program with ``forward`` only (it runs in a worker thread); ``finished`` is set when it unwinds."""

    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("question -> answer")
        self.finished = threading.Event()

    def forward(self, question):
        try:
            return self.predict(question=question)
        finally:
            self.finished.set()


@pytest.fixture
def slow_lm(server):
    server.reset()
    lm = dspy.LM("openai/slow", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        yield lm


def _program(kind):
    return dspy.Predict("question -> answer") if kind == "async" else SyncModule()


async def _first_chunk(agen) -> None:
    async for event in agen:
        if isinstance(event, js.StreamResponse) and event.chunk.strip():
            return


def _closed_within_a_second(server, started: float) -> None:
    assert server.wait_idle(1.0)
    assert time.monotonic() - started < 1.0
    assert server.stream_closed_early == 1


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_aclose_closes_the_request(slow_lm, server, kind):
    program = _program(kind)
    server.script(SLOW)
    tasks = await settled_tasks()
    s = js.stream(program, None, {"question": "q"})
    agen = s.__aiter__()
    await _first_chunk(agen)
    started = time.monotonic()
    await s.aclose()
    _closed_within_a_second(server, started)
    assert await settled_tasks() - tasks == set()
    if kind == "sync":
        assert program.finished.wait(2.0)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cancelling_the_consumer_task_closes_the_request(slow_lm, server, kind):
    program = _program(kind)
    server.script(SLOW)
    tasks = await settled_tasks()
    started_streaming = asyncio.Event()

    async def consume():
        async for event in js.stream(program, None, {"question": "q"}):
            if isinstance(event, js.StreamResponse) and event.chunk.strip():
                started_streaming.set()

    task = asyncio.create_task(consume())
    await started_streaming.wait()
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _closed_within_a_second(server, started)
    assert await settled_tasks() - tasks == set()
    if kind == "sync":
        assert program.finished.wait(2.0)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_real_sigint_while_waiting_cancels_the_sync_iteration(slow_lm, server, kind):
    """Ctrl-C for real: SIGINT to the main thread while the reply streams."""
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signals are delivered to the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # pragma: no cover
        pytest.skip("SIGINT is not Python's default handler here")
    program = _program(kind)
    server.script(SLOW)
    engine = engine_tasks()
    timer = None
    chunks = []
    try:
        for event in js.stream(program, None, {"question": "q"}):
            if isinstance(event, js.StreamResponse) and event.chunk:
                chunks.append(event.chunk)
                if timer is None:
                    timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
                    timer.start()
    except KeyboardInterrupt:
        interrupted = True
    else:  # pragma: no cover
        interrupted = False
    finally:
        if timer is not None:
            timer.join()
    assert interrupted and chunks
    assert server.wait_idle(1.0)
    assert server.stream_closed_early == 1
    assert engine_tasks() - engine == set()
    if kind == "sync":
        assert program.finished.wait(2.0)


@pytest.mark.skipif(dspy.__version__.startswith("3.4"), reason="DSPy 3.4 reads a sync call's reply in the program's "
                    "thread: a reply stalled mid-stream cannot be interrupted there (THREAD_GRACE)")
async def test_a_sync_programs_stalled_reply_is_cancelled_in_its_http_read(slow_lm, server):
    program = SyncModule()
    server.script(Reply(content="[[ ## answer ## ]]\nw0 w1 w2 w3 w4 w5 w6 w7", fault=Fault("stall", after=12)))
    s = js.stream(program, None, {"question": "q"})
    agen = s.__aiter__()
    await _first_chunk(agen)
    await asyncio.sleep(0.3)  # the reply has stalled
    started = time.monotonic()
    await s.aclose()
    _closed_within_a_second(server, started)
    assert program.finished.wait(2.0)
