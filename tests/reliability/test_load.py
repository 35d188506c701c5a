"""Load: many concurrent streams on one loop with no cross-talk; many sequential streams with no growth.

The server runs in a child process (the demo server's automatic responder: every reply quotes the
question and a hash of the prompt), so the memory, sockets, tasks and threads counted here are the
client's alone.

Sizes (x ``$RELIABILITY_SCALE``): 50 concurrent streams (the soak: 200), 300 sequential streams (the
soak: 10,000; ``benchmarks/soak.py`` runs the same scenario functions against its in-process server).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import threading
import tracemalloc
import warnings
import weakref
from typing import Any

import pytest
import pytest_asyncio
from _reliability import (
    RemoteServer,
    new_threads,
    pooled_idle,
    scaled,
    settled_tasks,
    sockets,
    threads,
)

import jupyter_stream as js


@pytest.fixture(scope="module")
def remote():
    server = RemoteServer()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def remote_lm(remote):
    # A small history (bounded by design), so it is full well before the 10% mark growth is measured from.
    lm = js.LM("test-model", base_url=remote.url, api_key="sk-test-SECRET-key-123", cache=False, num_retries=0,
               history_size=10)
    js.configure(lm=lm, adapter=None, callbacks=None)
    yield lm
    js.configure(lm=None, adapter=None, callbacks=None)
    await lm.aclose()  # on this test's loop, while it runs


def _question(i: int) -> str:
    return f"What is special about token-{i:05d}-x?"


async def _run(program: Any, i: int) -> tuple[dict[str, str], dict[str, int], Any]:
    texts: dict[str, str] = {}
    lasts: dict[str, int] = {}
    final = None
    async for ev in program(question=_question(i)):
        if isinstance(ev, js.StreamResponse):
            texts[ev.signature_field_name] = texts.get(ev.signature_field_name, "") + ev.chunk
            lasts[ev.signature_field_name] = lasts.get(ev.signature_field_name, 0) + int(ev.is_last_chunk)
        elif isinstance(ev, js.Prediction):
            final = ev
    return texts, lasts, final


def _program_cot() -> Any:
    return js.streamify(js.ChainOfThought("question -> answer"),
                        stream_listeners=[js.StreamListener("reasoning"), js.StreamListener("answer")])


async def concurrent_scenario(n: int, port: int, lm: js.LM) -> dict[str, Any]:
    """``n`` streams of one streamified program at once on this loop, each with its own question.

    Checks that each gets exactly its own chunks; returns the figures (peak traced memory in MiB).
    Also run by ``benchmarks/soak.py`` (n=200).
    """
    program = _program_cot()
    await _run(program, -1)  # warm-up: the client and its pool exist before the measurement
    tasks = await settled_tasks()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        results = await asyncio.gather(*(_run(program, i) for i in range(n)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    figures: dict[str, Any] = {"streams": n, "peak_mib": (peak - base) / 2**20, "lost": 0, "crossed": 0}
    refs = set()
    for i, (texts, _lasts, final) in enumerate(results):
        if isinstance(final, js.Prediction):
            want = {"reasoning": final.reasoning, "answer": final.answer}
            figures["lost"] += sum(max(0, len(v) - len(texts.get(k, ""))) for k, v in want.items())
            figures["crossed"] += sum(1 for j in range(n) if j != i and f"token-{j:05d}-" in "".join(texts.values()))
    for i, (texts, lasts, final) in enumerate(results):
        assert isinstance(final, js.Prediction), i
        assert texts == {"reasoning": final.reasoning, "answer": final.answer}, i  # every chunk, in order
        assert lasts == {"reasoning": 1, "answer": 1}, i
        assert f'"{_question(i)}"' in final.answer and f'"{_question(i)}"' in final.reasoning, i
        refs.add(final.answer.rsplit(" ", 1)[1])
    assert figures["crossed"] == 0  # no stream got another stream's text
    assert len(refs) == n  # every reply distinct (the responder hashes each prompt)
    assert figures["peak_mib"] < 2 + 0.25 * n  # ~80 KiB per stream in flight; a buffer kept per stream shows
    left = await settled_tasks() - tasks
    figures["tasks"] = len(left)
    assert left == set()
    assert not [t for t in threading.enumerate() if t.name == "jupyter_stream-program"]
    s = sockets(port)
    figures["sockets"] = max(0, len(s.client) - pooled_idle(lm))
    assert s.client_states() == ["ESTABLISHED"] * len(s.client)
    assert len(s.client) <= pooled_idle(lm)  # only idle keep-alive connections remain
    return figures


async def sequential_scenario(n: int, port: int, *, trace_from: int | None = None,
                              sample_every: int = 20, on_stream: Any = None) -> dict[str, Any]:
    """``n`` streams, one after the other, of one streamified program; returns the figures.

    Tasks, threads and sockets are compared between the 10% mark and the end. Memory: tracemalloc runs
    from ``trace_from`` (default: the 10% mark) to the end; growth is measured from the third sample on
    (the first traced streams replace the bounded history's untraced records). Also run by
    ``benchmarks/soak.py`` (n=10,000, tracing the last 2,000).
    """
    warm = max(10, n // 10)
    trace_from = warm if trace_from is None else max(trace_from, warm)
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    objects: list[int] = []
    mem: list[int] = []
    lost = 0
    first: Any = None
    try:
        for i in range(n):
            if i == warm:
                gc.collect()
                first = (await settled_tasks(collect=False), threads(), sockets(port))
            if i == trace_from:
                tracemalloc.start()
            if i >= warm and (i - warm) % sample_every == 0:
                gc.collect()
                objects.append(len(gc.get_objects()))
                if tracemalloc.is_tracing():
                    mem.append(tracemalloc.get_traced_memory()[0])
            texts, lasts, final = await _run(program, i)
            lost += max(0, len(final.answer) - len(texts.get("answer", "")))
            assert texts == {"answer": final.answer} and lasts == {"answer": 1}, i
            assert f'"{_question(i)}"' in final.answer
            if on_stream is not None:
                on_stream(i)
        gc.collect()
        objects.append(len(gc.get_objects()))
        mem.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    tasks, thr, socks = first
    end_tasks = await settled_tasks(collect=False)
    end = sockets(port)
    start = 2 if len(mem) > 6 else 1
    traced = n - trace_from - sample_every * start
    window = max(2, len(objects) // 5)
    figures = {
        "streams": n, "lost": lost, "tasks": len(end_tasks - tasks) + max(0, len(end_tasks) - len(tasks)),
        "threads": len(new_threads(thr)) + max(0, len(threads()) - len(thr)),
        "sockets": max(0, end.total - socks.total), "traced_streams": traced,
        "growth_bytes": mem[-1] - mem[start],
        "objects_drift": statistics.median(objects[-window:]) - statistics.median(objects[:window]),
    }
    assert figures["tasks"] == figures["threads"] == figures["sockets"] == 0, figures
    assert len(end.client) == len(socks.client) <= 1  # the one pooled keep-alive connection
    assert figures["growth_bytes"] < max(128 * 1024, 200 * traced), figures  # 2 MB per 10,000 streams
    # Python objects: under one per two streams (a leaked record or prediction leaves dozens each). The
    # floor is the noise: cancelled timer handles (one per wait with a timeout) stay in the loop's heap,
    # each with its context, until asyncio purges them in bulk - a sawtooth of up to ~450 objects.
    assert figures["objects_drift"] < max(600, (n - warm) // 2), figures
    return figures


async def test_concurrent_streams_get_exactly_their_own_chunks(remote, remote_lm) -> None:
    figures = await concurrent_scenario(scaled(50), remote.port, remote_lm)
    print(f"\n{figures['streams']} concurrent streams: peak traced memory {figures['peak_mib']:.1f} MiB")
    assert figures["lost"] == figures["tasks"] == figures["sockets"] == 0


async def test_sequential_streams_do_not_grow(remote, remote_lm) -> None:
    # The run history keeps runs by design, up to its bounds: 5 here, so it is full before the warm-up ends and
    # any growth is a leak (the history's eviction included).
    saved = js.runs.max_runs
    js.runs.limit(max_runs=5)
    try:
        figures = await sequential_scenario(scaled(300), remote.port)
    finally:
        js.runs.limit(max_runs=saved)
    print(f"\n{figures['streams']} sequential streams: {figures['growth_bytes'] / 1024:+.0f} KiB traced over "
          f"the last {figures['traced_streams']}, gc objects {figures['objects_drift']:+.0f}")
    assert figures["lost"] == 0


def test_one_lm_across_event_loops_keeps_no_socket_per_loop(remote) -> None:
    """A script that calls ``asyncio.run()`` per request: each loop's client is closed as its loop shuts down."""
    lm = js.LM("test-model", base_url=remote.url, api_key="sk-test-SECRET-key-123", cache=False, num_retries=0)
    program = js.Predict("question -> answer")
    before = sockets(remote.port)
    for i in range(10):
        assert asyncio.run(program.acall(question=_question(i), lm=lm)).answer
        assert lm._clients == {}, "the client of a loop that asyncio.run() shut down is still held"
    after = sockets(remote.port)
    assert len(after.client) == len(before.client), f"{len(after.client) - len(before.client)} sockets left"


def test_clients_of_loops_closed_without_shutdown_are_dropped(remote, caplog) -> None:
    """A loop closed by hand (no ``shutdown_asyncgens``) cannot close its client: the next call drops it."""
    lm = js.LM("test-model", base_url=remote.url, api_key="sk-test-SECRET-key-123", cache=False, num_retries=0)
    program = js.Predict("question -> answer")
    loops = []
    for i in range(5):
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(program.acall(question=_question(i), lm=lm)).answer
        loop.close()
        loops.append(weakref.ref(loop))
        del loop
        assert len(lm._clients) == 1, f"{len(lm._clients)} clients held after {i + 1} closed loops"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the dropped transports close unawaited
        gc.collect()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum(r() is not None for r in loops[:-1]) == 0, "closed event loops are kept alive by the LM"
    lm.close()
