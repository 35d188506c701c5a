"""Replay and run-history benchmark (section 12): a recording played at speed 0 against the same text from the
loopback server, and the memory of ``js.runs`` after 1,000 runs.

    python benchmarks/_replay.py                 # 100,000 deltas, 1,000 runs
    python benchmarks/_replay.py --quick         # 20,000 deltas, 300 runs

``run(server, quick=...)`` returns the section (markdown, targets, raw numbers) for ``run.py``.

(r0) live: ``streamify(Predict("question -> answer"), stream_listeners=[StreamListener("answer")])`` on ``js.LM``
against the benchmark's LM server process, one reply of N one-token deltas (``run.py``'s ``chat1`` workload):
from the call to the last event. The stream is recorded once (``with js.record(path)``: every event and raw
delta with its time). (r1) ``js.replay(path, speed=0)``, read from the file and iterated with ``async for``:
from the call to the last event (the file's parse included). (r2) the same replay of a run already loaded
(``js.load_recording``): the events alone. Each run checks the joined ``answer`` chunks against the reply.
Target (issue 14): (r1) < 2x (r0).

History: ``js.runs`` bounded to 1,000 runs (bytes at the default 64 MiB), then 1,000 runs of a 500-delta reply;
``js.runs.bytes`` (each run's size measured over what it holds) against the Python heap's growth
(``tracemalloc``, after ``gc``), then the bounds lowered to 100 runs and 1 MiB: the history must fit them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import jupyter_stream as js  # noqa: E402
from run import SIG1, BenchmarkError, check, chat_body, measure, print_section, table, workload  # noqa: E402

TARGET_RATIO = 2.0


def _program() -> Any:
    return js.streamify(js.Predict(SIG1), stream_listeners=[js.StreamListener("answer")])


async def _answer(make: Any) -> tuple[float, str]:
    """The time from ``make()`` (what makes the stream: the call, or the replay with its file's parse) to the last
    event, and the joined ``answer`` chunks."""
    t0 = time.perf_counter()
    parts = [e.chunk async for e in make() if type(e) is js.StreamResponse]
    return time.perf_counter() - t0, "".join(parts)


def run(server: Any, *, quick: bool, smoke: bool = False) -> dict[str, Any]:
    n = 2_000 if smoke else 20_000 if quick else 100_000
    n_runs = 30 if smoke else 300 if quick else 1_000
    repeats = 1 if smoke else 3 if quick else 5
    w = workload("chat1", n)
    want = w.expected["answer"]
    server.set_replies([(chat_body(w.signature, w.adapter)["messages"][0]["content"], w.chunks)])
    lm = js.LM("bench", base_url=server.url, api_key="x", cache=False)
    program = _program()
    runner = asyncio.Runner()
    tmp = tempfile.mkdtemp(prefix="js-replay-")
    path = os.path.join(tmp, "run.jsonl")
    saved = (js.runs.max_runs, js.runs.max_bytes)
    try:
        with js.context(lm=lm):
            def live() -> float:
                took, got = runner.run(_answer(lambda: program(question="Write a long answer about streaming.")))
                check("(r0) live", got, want)
                return took

            st_live = measure(live, repeats)
            with js.record(path):
                gen = program(question="Write a long answer about streaming.")
            runner.run(_answer(lambda: gen))
        size = os.path.getsize(path)

        def replay_file() -> float:
            took, got = runner.run(_answer(lambda: js.replay(path, speed=0)))
            check("(r1) replay", got, want)
            return took

        (loaded,) = js.load_recording(path)
        deltas = len(loaded.lm_calls[0].deltas or ())
        if deltas != n:
            raise BenchmarkError(f"the recording holds {deltas} raw deltas, expected {n}")

        def replay_run() -> float:
            took, got = runner.run(_answer(lambda: js.replay(loaded, speed=0)))
            check("(r2) replay", got, want)
            return took

        st_file = measure(replay_file, repeats)
        st_run = measure(replay_run, repeats)

        # -- the history's memory
        small = workload("chat1", 500)
        server.set_replies([(chat_body(small.signature, small.adapter)["messages"][0]["content"], small.chunks)])
        js.runs.clear()
        js.runs.limit(max_runs=n_runs, max_bytes=64 * 1024 * 1024)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        with js.context(lm=js.LM("bench", base_url=server.url, api_key="x", cache=False, history_size=1)):
            for _ in range(n_runs):
                _took, got = runner.run(_answer(lambda: program(question="Write a long answer about streaming.")))
                check("history run", got, small.expected["answer"])
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        kept, measured = len(js.runs), js.runs.bytes
        if kept != n_runs:
            raise BenchmarkError(f"js.runs kept {kept} runs of {n_runs}")
        js.runs.limit(max_runs=100, max_bytes=1024 * 1024)
        bounded = (len(js.runs), js.runs.bytes)
        if bounded[0] > 100 or bounded[1] > 1024 * 1024:
            raise BenchmarkError(f"js.runs holds {bounded} past its bounds (100 runs, 1 MiB)")
    finally:
        js.runs.limit(max_runs=saved[0], max_bytes=saved[1])
        js.runs.clear()
        runner.close()
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)

    ratio = st_file.median / st_live.median
    rows = [
        ["(r0) live: streamify(Predict) from the LM server", f"{st_live.median * 1e3:.1f} ms",
         f"{st_live.min * 1e3:.1f} ms", "1.00"],
        ["(r1) js.replay(path, speed=0): parse + events", f"{st_file.median * 1e3:.1f} ms",
         f"{st_file.min * 1e3:.1f} ms", f"{ratio:.2f}"],
        ["(r2) js.replay(run, speed=0): events alone", f"{st_run.median * 1e3:.1f} ms",
         f"{st_run.min * 1e3:.1f} ms", f"{st_run.median / st_live.median:.2f}"],
    ]
    per_run = measured / n_runs
    md = [
        "## 12. Replay and run history",
        "",
        f"One reply of {n:,} one-token deltas, {repeats} repeats (median, min); the recording is {size / 1e6:.1f} MB "
        f"of JSON Lines. `benchmarks/_replay.py` describes the variants.",
        "",
        table(["variant", "median", "min", "vs (r0)"], rows, "lrrr"),
        "",
        f"History: {n_runs:,} runs of a 500-delta reply kept in `js.runs`: {measured / 2**20:.2f} MiB by the runs' "
        f"own measure ({per_run / 1024:.1f} KiB a run), {grown / 2**20:.2f} MiB of heap growth (tracemalloc). "
        f"Bounded to 100 runs and 1 MiB: {bounded[0]} runs, {bounded[1] / 2**20:.2f} MiB.",
    ]
    targets = [(f"replay at speed 0 < {TARGET_RATIO:g}x the live stream ({n:,} deltas, medians)",
                f"{ratio:.2f}x", ratio < TARGET_RATIO),
               ("js.runs within its bounds after lowering them (100 runs, 1 MiB)",
                f"{bounded[0]} runs, {bounded[1] / 2**20:.2f} MiB", True)]
    raw = {"n": n, "live": st_live.times, "replay_file": st_file.times, "replay_run": st_run.times,
           "recording_bytes": size, "history_runs": n_runs, "history_bytes": measured, "heap_growth": grown,
           "bounded": bounded}
    return {"markdown": md, "targets": targets, "raw": raw}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()
    from _server import ServerProcess

    with ServerProcess() as server:
        print_section(run(server, quick=args.quick), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
