"""Cancellation: N streams, each stopped at a random point in one of the ways a user stops a stream.

The ways: ``break`` out of ``async for``; ``aclose()``; cancelling the consuming task (in its loop body, or
while it waits for the next event); ``break`` out of a
sync ``for``; ``KeyboardInterrupt`` raised in the body of a sync ``for`` (what Ctrl-C does while the cell
prints); the widget's Stop button (the front end's ``{"type": "stop"}`` message). The Stream object stays
referenced by a variable throughout, as in a notebook cell, so only leaving the loop can stop it.

The reply is paced (1,000 tokens/s, 300 deltas), and a stream is stopped after 1 to 40 chunks, so the
server is provably still sending: each stop must show up as one more ``stream_closed_early`` on the server.
A few streams run to their end before the loop is left (the boundary): those must not count.

Afterwards: no asyncio task on the test loop or the engine loop, no new thread, and no socket beyond the
idle keep-alive connections of the LM's pools (counted from ``/proc``; see ``_reliability``).

N is 100 (x ``$RELIABILITY_SCALE``; the soak runs 1,000).
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from typing import Any

import pytest
from _reliability import (
    baseline,
    close_pools,  # noqa: F401
    engine_tasks,
    new_threads,
    pooled_idle,
    scaled,
    server_open,
    settle_connections,
    settled_tasks,
    threads,
)

import jupyter_stream as js
from jupyter_stream.demo import Fault, Reply
from jupyter_stream.notebook.show import ShownStream

pytestmark = pytest.mark.usefixtures("close_pools")

WORDS = [f"w{i}" for i in range(150)]
ANSWER = " ".join(WORDS)
PACED = Reply(content=f"[[ ## answer ## ]]\n{ANSWER}\n\n[[ ## completed ## ]]", token_rate=1000)
SHORT = "[[ ## answer ## ]]\nshort and done\n\n[[ ## completed ## ]]"
METHODS = ("async_break", "aclose", "task_cancel", "task_cancel_waiting", "sync_break", "keyboard_interrupt",
           "widget_stop")
# Stopped when the consumer next waits, so events already queued may still be consumed after the k-th.
AT_LEAST_K = ("task_cancel_waiting", "widget_stop")
SYNC = ("sync_break", "keyboard_interrupt")


def _stream() -> js.Stream:
    return js.stream(js.Predict("question -> answer"), None, {"question": "q"})


def _chunks(events: list[Any]) -> list[str]:
    return [ev.chunk for ev in events if isinstance(ev, js.StreamResponse) and ev.chunk]


async def _idle(server: Any, timeout: float = 5.0) -> None:
    """Wait for the server to be idle while letting this loop run (no executor thread)."""
    deadline = time.monotonic() + timeout
    while not server.wait_idle(0):
        assert time.monotonic() < deadline, "the server still streams: the request was not closed"
        await asyncio.sleep(0.002)


async def _stop(method: str, k: int | None) -> tuple[list[Any], Any]:
    """Run one stream and stop it after ``k`` chunks (None: after the final prediction) by ``method``.

    Returns the events the consumer got, and the widget's sink for ``widget_stop``.
    """
    events: list[Any] = []
    s = _stream()

    def reached() -> bool:
        if k is None:
            return isinstance(events[-1], js.Prediction)
        return len(_chunks(events)) == k

    if method == "async_break":
        async for ev in s:
            events.append(ev)
            if reached():
                break
    elif method == "aclose":
        it = s.__aiter__()
        while True:
            events.append(await it.__anext__())
            if reached():
                break
        await s.aclose()
    elif method in ("task_cancel", "task_cancel_waiting"):
        hit = asyncio.Event()

        async def consume() -> None:
            async for ev in s:
                events.append(ev)
                if reached():
                    hit.set()
                    if method == "task_cancel":  # cancelled in the loop body, not inside the stream
                        await asyncio.sleep(3600)

        task = asyncio.create_task(consume())
        await hit.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    elif method == "sync_break":
        for ev in s:
            events.append(ev)
            if reached():
                break
    elif method == "keyboard_interrupt":
        with pytest.raises(KeyboardInterrupt):
            for ev in s:
                events.append(ev)
                if reached():
                    raise KeyboardInterrupt
    elif method == "widget_stop":
        loop = asyncio.get_running_loop()
        holder: list[ShownStream] = []

        async def feed() -> Any:
            async for ev in s:
                events.append(ev)
                yield ev
                if reached():  # the front end's Stop message arrives between two events
                    w = holder[0].widget
                    loop.call_soon(w._handle_msg, {"content": {"data": {"method": "custom",
                                                                         "content": {"type": "stop"}}},
                                                   "buffers": []})

        view = ShownStream(feed(), title="predict", model="test-model", display=False)
        holder.append(view)
        assert await view is None
        assert view.widget.status == "stopped" and view.widget.stop_requested
        sink = view.display.sink
        # The panes keep exactly what arrived, in the saved state too.
        assert sink.texts() == ({"answer": "".join(_chunks(events))} if _chunks(events) else {})
        assert [p["text"] for p in view.widget.panes] == list(sink.texts().values())
        return events, sink
    else:  # pragma: no cover
        raise AssertionError(method)
    return events, None


async def cancellation_scenario(lm: js.LM, server: Any, n: int, seed: int = 5) -> dict[str, Any]:
    """Stop ``n`` streams at random points in random ways, checking each; return the figures.

    Also run by ``benchmarks/soak.py`` (n=1,000). Raises AssertionError at the first broken promise.
    """
    rng = random.Random(seed)
    # Warm up both loops (this one, and the engine loop sync streams run on) so their clients, pools and
    # executor threads exist before the baseline.
    requests0 = len(server.requests)
    server.script(SHORT, SHORT)
    assert [e async for e in _stream()][-1].answer == "short and done"
    assert list(_stream())[-1].answer == "short and done"
    tasks, engine, thr = await settled_tasks(), engine_tasks(), threads()
    before, offset = baseline(server)
    early = server.stream_closed_early
    counts = dict.fromkeys(METHODS, 0)
    mid_stream = lost = 0

    first = list(METHODS)
    rng.shuffle(first)  # every way comes up once before the random draws
    for i in range(n):
        method = first[i] if i < len(first) else rng.choice(METHODS)
        at_end = method in ("async_break", "sync_break") and rng.random() < 0.1
        k = None if at_end else rng.randint(1, 40)
        server.script(SHORT if at_end else PACED)
        events, _sink = await _stop(method, k)
        await _idle(server)
        counts[method] += 1
        chunks = _chunks(events)
        if at_end:
            lost += "".join(chunks) != "short and done"
            assert "".join(chunks) == "short and done" and events[-1].answer == "short and done"
        else:
            mid_stream += 1
            # Nothing lost or reordered before the stop: the chunks are a prefix of the reply.
            lost += not ANSWER.startswith("".join(chunks))
            assert len(chunks) == k or (method in AT_LEAST_K and len(chunks) >= k), (i, method, k, chunks)
            assert ANSWER.startswith("".join(chunks)), (i, method, chunks)
            assert not any(isinstance(ev, js.Prediction) for ev in events)
        assert server.stream_closed_early - early == mid_stream, (i, method, k)

    # Nothing left: tasks on both loops, threads, sockets.
    left_tasks = (await settled_tasks() - tasks) | (engine_tasks() - engine)
    left_threads = new_threads(thr)
    after = settle_connections(server, offset)
    fresh = len(set(after.client) - set(before.client))
    figures = {
        "streams": n, "cancelled": mid_stream, "ran_to_end": n - mid_stream, "by_method": counts, "lost": lost,
        "tasks": len(left_tasks), "threads": len(left_threads),
        "sockets": max(0, fresh - pooled_idle(lm)) + abs(after.other - before.other),
    }
    assert all(counts.values()) or n < len(METHODS), counts  # every way of stopping was exercised
    assert mid_stream >= n * 0.8
    assert left_tasks == set()
    assert left_threads == {}
    assert not [t for t in threading.enumerate() if t.name == "jupyter_stream-program"]
    assert after.client_states() == ["ESTABLISHED"] * len(after.client)  # no half-closed connection
    assert server_open(server) - offset == len(after.client) == after.server
    assert fresh <= pooled_idle(lm)  # new ones are idle in a pool
    assert len(after.client) <= len(before.client)  # one idle connection per loop at most, as before
    assert after.other == before.other  # no other socket (loop self-pipes...) appeared
    assert len(server.requests) - requests0 == n + 2
    return figures


async def test_random_cancellations_leave_nothing_behind(lm: js.LM, server: Any) -> None:
    figures = await cancellation_scenario(lm, server, scaled(100))
    assert figures["lost"] == figures["tasks"] == figures["threads"] == figures["sockets"] == 0


@pytest.mark.parametrize("held", [True, False], ids=["stream_held_in_a_variable", "stream_temporary"])
def test_break_from_sync_for_closes_the_request_without_close(lm: js.LM, server: Any, held: bool) -> None:
    """Leaving a sync ``for`` over ``js.stream(...)`` stops it; no ``close()``/``with`` needed.

    Regression: the Stream held its generator strongly and the generator's frame held the Stream, so the
    generator was never closed and the request streamed to the end of the reply (here ~1.5 s).
    """
    server.script(Reply(content=PACED.content, token_rate=100))
    s = _stream() if held else None
    started = time.monotonic()
    for i, _ev in enumerate(s if held else _stream()):
        if i == 3:
            break
    assert server.wait_idle(5.0)
    assert time.monotonic() - started < 1.0
    assert server.stream_closed_early == 1


async def test_break_from_async_for_closes_the_request_without_aclose(lm: js.LM, server: Any) -> None:
    """Same for ``async for``: the dropped async generator is closed by the loop, which cancels the call."""
    server.script(Reply(content=PACED.content, token_rate=100))
    tasks = await settled_tasks()
    s = _stream()
    started = time.monotonic()
    n = 0
    async for _ev in s:
        n += 1
        if n == 3:
            break
    await _idle(server, 1.0)
    assert time.monotonic() - started < 1.0
    assert server.stream_closed_early == 1
    assert await settled_tasks() - tasks == set()


def test_real_sigint_while_waiting_cancels_the_sync_stream(lm: js.LM, server: Any) -> None:
    """Ctrl-C for real: SIGINT to the main thread while it blocks on the next event of a stalled stream."""
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signals are delivered to the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # pragma: no cover
        pytest.skip("SIGINT is not Python's default handler here")
    server.script(Reply(content=PACED.content, fault=Fault("stall", after=12)))
    chunks: list[str] = []
    timer = None
    thr = threads()
    engine = engine_tasks()
    try:
        for ev in _stream():
            if isinstance(ev, js.StreamResponse) and ev.chunk:
                chunks.append(ev.chunk)
                if len(chunks) == 3 and timer is None:
                    # The stall comes after 12 deltas ("w", "0", " w", ... after the 6 of the header): the
                    # main thread is then blocked waiting for the 7th chunk.
                    timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
                    timer.start()
    except KeyboardInterrupt:
        interrupted = True
    else:  # pragma: no cover
        interrupted = False
    finally:
        if timer is not None:
            timer.join()
    assert interrupted
    assert "".join(chunks) == "w0 w1 w2"
    assert server.wait_idle(5.0)
    assert server.stream_closed_early == 1
    assert engine_tasks() - engine == set()
    assert new_threads(thr) == {}
