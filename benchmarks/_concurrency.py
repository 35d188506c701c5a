"""Concurrency benchmark: S concurrent streams of N deltas each on one event loop (default 100 x 2,000).

    .venv/bin/python benchmarks/_concurrency.py                    # floors and ours, 100 x 2,000, 5 runs each
    .venv/bin/python benchmarks/_concurrency.py --quick            # smoke sizes: 10 x 200, 1 run
    benchmarks/.venv/bin/python benchmarks/_concurrency.py --dspy  # + DSPy (needs `import dspy`)
    .venv/bin/python benchmarks/_concurrency.py --profile ours     # one run of one variant under cProfile

``run(server, quick=..., dspy=...)`` is what ``run.py`` calls (section 4). Every run of every variant is a
fresh subprocess (this file with ``--worker VARIANT``), so its peak RSS (``VmHWM``, reset before the round) is its own. The worker
imports everything, opens S connections with a warm-up round (S concurrent streams of a short reply, checked),
collects garbage, reads its RSS, then starts S streams at once with ``asyncio.gather`` and times each stream
from the gather start to its last item. Every stream's output is checked (joined chunks == the expected
text); a mismatch fails the run.

Variants (the same helpers as run.py's, imported from it): ``floor`` = (a) ``httpx`` + ``aiter_lines`` +
``jiter`` (``Bench._floor``) on one shared ``httpx.AsyncClient``; ``floor2`` = (a') the same on ``httpx2``
(openai 3.x's transport; skipped where it is not installed); ``lm`` = (d0) ``js.LM.astream`` alone
(``Bench._lm_only``); ``ours`` = (d) ``streamify(Predict)`` + one ``StreamListener`` (``Bench._ours``), one
program and one ``js.LM(cache=False)`` shared by all streams; ``dspy`` = ``dspy.streamify`` with a new
``StreamListener`` per call (DSPy's default: the program runs in worker threads, ``async_max_workers=8``);
``dspy_async`` = the same with ``is_async_program=True`` (every call on the event loop). The target compares
ours with the faster floor. DSPy runs only with ``dspy=True`` and where ``import dspy`` works; its output is
checked like ours (a mismatch fails the run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from run import (
    QUESTION,
    Bench,
    BenchmarkError,
    chat_body,
    check,
    fmt_s,
    print_section,
    table,
    workload,
)

WARM_QUESTION = "Warm up the connection pool, please."
"""The warm-up requests carry this question; the server answers them with a short reply (its ``match``)."""

# The openai client's default pool (openai._constants.DEFAULT_CONNECTION_LIMITS, openai 2.x and 3.x): the
# floor's httpx client gets the same, so neither side waits for a connection or loses pooled ones.
MAX_CONNECTIONS = 1000
MAX_KEEPALIVE = 100

_RESULT = "RESULT "

LABELS = {
    "floor": "(a) transport floor: httpx + aiter_lines + jiter",
    "floor2": "(a') the same floor on httpx2 (the openai 3.x transport)",
    "lm": "(d0) js.LM.astream alone (our read path, no program)",
    "ours": "(d) jupyter_stream streamify + 1 listener",
    "dspy": "DSPy streamify + 1 listener (default: worker threads)",
    "dspy_async": "DSPy streamify + 1 listener, `is_async_program=True`",
}


# ------------------------------------------------------------------------------------------- worker
def _rss_kb() -> int:
    """Resident set size now, in KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_kb() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_hwm() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_kb() -> int:
    """Peak RSS of this process's address space (``VmHWM``, KiB).

    Not ``ru_maxrss``: on Linux a process started by fork + exec inherits in ``ru_maxrss`` the RSS its parent
    had at the fork (the kernel keeps the old address space's high-water mark across exec), so a child of a
    parent holding a 1M-delta workload reads ~150 MiB before it does anything. ``VmHWM`` belongs to the
    address space made by exec, and ``_reset_hwm`` can reset it just before the measured round.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return _peak_kb()  # pragma: no cover - not Linux


def _pct(xs: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    i = int(k)
    return s[i] if i + 1 >= len(s) else s[i] + (s[i + 1] - s[i]) * (k - i)


def _ours_maker(url: str) -> tuple[Any, Any, Any]:
    """(stream coroutine factory, expected-output checker, closer) for ours."""
    import jupyter_stream as js

    lm = js.LM("bench", base_url=url, api_key="x", cache=False)
    js.configure(lm=lm, adapter=None)
    program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    this = SimpleNamespace()  # Bench._ours uses nothing of its instance

    def warm_program(**_kw: Any) -> Any:  # Bench._ours always asks QUESTION: ask the warm-up question instead
        return program(question=WARM_QUESTION)

    async def one(warm: bool, t0: float) -> tuple[float, Any]:
        _dt, fields, final = await Bench._ours(this, warm_program if warm else program)
        return time.perf_counter() - t0, (fields, final)

    def verify(label: str, out: Any, want: str) -> None:
        fields, final = out
        check(f"{label} chunks", fields, {"answer": want})
        if not isinstance(final, js.Prediction):
            raise BenchmarkError(f"{label}: the stream did not end with a Prediction (got {type(final).__name__})")
        check(f"{label} prediction", final.answer, want)

    async def close() -> None:
        await lm.aclose()

    return one, verify, close


def _lm_maker(url: str, warm_body: dict[str, Any], body: dict[str, Any]) -> tuple[Any, Any, Any]:
    """run.py's (d0): ``js.LM.astream`` alone (our read path, no program, parser or events)."""
    import jupyter_stream as js

    lm = js.LM("bench", base_url=url, api_key="x", cache=False)
    this, warm_this = SimpleNamespace(lm=lm, body=body), SimpleNamespace(lm=lm, body=warm_body)

    async def one(warm: bool, t0: float) -> tuple[float, Any]:
        _dt, text = await Bench._lm_only(warm_this if warm else this)
        return time.perf_counter() - t0, text

    def verify(label: str, out: Any, want: str) -> None:
        check(label, out, want)

    async def close() -> None:
        await lm.aclose()

    return one, verify, close


def _floor_maker(url: str, warm_body: dict[str, Any], body: dict[str, Any], transport: str) -> tuple[Any, Any, Any]:
    mod = importlib.import_module(transport)  # httpx (run.py's (a)) or httpx2 (its (a'), the openai 3.x transport)
    client = mod.AsyncClient(timeout=60, limits=mod.Limits(max_connections=MAX_CONNECTIONS,
                                                           max_keepalive_connections=MAX_KEEPALIVE))
    this = SimpleNamespace(url=url, body=body)  # what Bench._floor reads of its instance
    warm_this = SimpleNamespace(url=url, body=warm_body)

    async def one(warm: bool, t0: float) -> tuple[float, Any]:
        _dt, text = await Bench._floor(warm_this if warm else this, client)
        return time.perf_counter() - t0, text

    def verify(label: str, out: Any, want: str) -> None:
        check(label, out, want)

    async def close() -> None:
        await client.aclose()

    return one, verify, close


def _dspy_maker(url: str, *, is_async: bool) -> tuple[Any, Any, Any]:
    from _dspy import (
        dspy,  # sets DSPy's environment (no cost-map fetch, a private cache dir) before importing it
    )

    lm = dspy.LM("openai/bench", api_base=url, api_key="x", cache=False)
    dspy.configure(lm=lm, adapter=None)
    predict = dspy.Predict("question -> answer")

    async def one(warm: bool, t0: float) -> tuple[float, Any]:
        # A new streamify per call: DSPy's listeners stay closed after a program's first call (dspy#8425).
        program = dspy.streamify(predict, stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
                                 is_async_program=is_async)
        parts: list[str] = []
        final = None
        async for x in program(question=WARM_QUESTION if warm else QUESTION):
            if isinstance(x, dspy.streaming.StreamResponse):
                parts.append(x.chunk)
            elif isinstance(x, dspy.Prediction):
                final = x
        return time.perf_counter() - t0, ("".join(parts), final)

    def verify(label: str, out: Any, want: str) -> None:
        text, final = out
        check(f"{label} chunks", text, want)
        if final is None:
            raise BenchmarkError(f"{label}: the stream did not end with a Prediction")
        check(f"{label} prediction", final.answer, want)

    async def close() -> None:
        pass

    return one, verify, close


def worker(variant: str, url: str, streams: int, n: int, warm_n: int, profile: str | None = None) -> dict[str, Any]:
    """One run of ``variant`` in this (fresh) process: a warm-up round, then ``streams`` concurrent streams."""
    w = workload("chat1", n)
    warm = workload("chat1", warm_n)
    want, warm_want = w.expected["answer"], warm.expected["answer"]
    if variant == "ours":
        one, verify, close = _ours_maker(url)
        want_out, warm_out = want, warm_want
    elif variant in ("floor", "floor2"):
        body = chat_body(w.signature, w.adapter)
        warm_body = dict(body, messages=w.adapter.format(w.signature, {"question": WARM_QUESTION}))
        one, verify, close = _floor_maker(url, warm_body, body, "httpx" if variant == "floor" else "httpx2")
        want_out, warm_out = w.reply, warm.reply  # the floor reads the whole reply's content
    elif variant == "lm":
        body = chat_body(w.signature, w.adapter)
        warm_body = dict(body, messages=w.adapter.format(w.signature, {"question": WARM_QUESTION}))
        one, verify, close = _lm_maker(url, warm_body, body)
        want_out, warm_out = w.reply, warm.reply
    elif variant in ("dspy", "dspy_async"):
        one, verify, close = _dspy_maker(url, is_async=variant == "dspy_async")
        want_out, warm_out = want, warm_want
    else:
        raise SystemExit(f"unknown variant {variant!r}")

    async def main() -> dict[str, Any]:
        try:
            # Warm-up: imports, lazy initialisation, and `streams` pooled connections.
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(one(True, t0) for _ in range(streams)))
            warm_s = time.perf_counter() - t0
            for i, (_t, out) in enumerate(outs):
                verify(f"concurrency {variant} warm-up stream {i}", out, warm_out)
            del outs
            gc.collect()
            rss0 = _rss_kb()
            _reset_hwm()  # the peak from here on: not the imports', the warm-up's or the parent's (see _hwm_kb)
            peak0 = _hwm_kb()
            prof = None
            if profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            c0 = time.process_time()
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(one(False, t0) for _ in range(streams)))
            total = time.perf_counter() - t0
            cpu = time.process_time() - c0
            if prof is not None:
                prof.disable()
                prof.dump_stats(profile)
            peak1 = _hwm_kb()
            for i, (_t, out) in enumerate(outs):
                verify(f"concurrency {variant} S={streams} N={n} stream {i}", out, want_out)
            ends = [t for t, _out in outs]
            return {
                "variant": variant, "streams": streams, "n": n, "total": total, "cpu": cpu, "warmup": warm_s,
                "p50": _pct(ends, 50), "p99": _pct(ends, 99), "first_done": min(ends), "ends": ends,
                "rss_before_kb": rss0, "peak_before_kb": peak0, "peak_kb": peak1,
                "growth_kb": max(0, peak1 - rss0), "peak_moved": peak1 > peak0,
            }
        finally:
            await close()

    return asyncio.run(main())


# ------------------------------------------------------------------------------------------- parent
def _spawn(variant: str, url: str, streams: int, n: int, warm_n: int, profile: str | None = None,
           timeout: float = 1800) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--url", url, "--streams", str(streams),
           "--n", str(n), "--warm-n", str(warm_n)]
    if profile:
        cmd += ["--profile-out", profile]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"concurrency worker {variant} did not finish in {timeout:g} s") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(_RESULT)]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-6:]
        raise BenchmarkError(f"concurrency worker {variant} failed (exit {p.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1][len(_RESULT):])


def _dspy_available() -> bool:
    return importlib.util.find_spec("dspy") is not None


def run(server: Any, *, quick: bool, dspy: bool, streams: int | None = None, n: int | None = None,
        repeats: int | None = None, dspy_repeats: int | None = None, dspy_budget: float = 60.0,
        variants: list[str] | None = None, log: Any = None) -> dict[str, Any]:
    """Section 4: S concurrent streams of N deltas, floor vs ours (vs DSPy); a fresh process per run.

    Replaces the server's replies (the measured reply, plus a short one for the warm-up question).
    ``repeats`` runs per variant (5; 1 with ``quick``); a DSPy variant makes ``dspy_repeats`` (3) runs at
    most, fewer when its first run shows they would take over ``dspy_budget`` seconds (at least one).
    """
    streams = streams or (10 if quick else 100)
    n = n or (200 if quick else 2_000)
    repeats = repeats or (1 if quick else 5)
    dspy_repeats = dspy_repeats or (1 if quick else min(repeats, 3))
    warm_n = 40
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    notes: list[str] = []
    names = list(variants or LABELS)
    unknown = [v for v in names if v not in LABELS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(LABELS)}")
    if "floor2" in names and importlib.util.find_spec("httpx2") is None:
        names = [v for v in names if v != "floor2"]
        notes.append("(a') not measured: `httpx2` is not installed in this interpreter (openai 2.x, where "
                     "`js.LM` reads through httpx too).")
    if any(v.startswith("dspy") for v in names):
        if not dspy:
            names = [v for v in names if not v.startswith("dspy")]
        elif not _dspy_available():
            names = [v for v in names if not v.startswith("dspy")]
            notes.append("DSPy: skipped (`import dspy` fails in this interpreter; run under `benchmarks/.venv`, "
                         "made by `benchmarks/setup.sh`).")
    caps = {v: dspy_repeats if v.startswith("dspy") else repeats for v in names}

    w = workload("chat1", n)
    warm = workload("chat1", warm_n)
    server.set_replies([(WARM_QUESTION, warm.chunks), (None, w.chunks)])

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in names}
    t_start = time.perf_counter()
    for r in range(max(caps.values())):
        order = names if r % 2 == 0 else names[::-1]  # alternate the order, so drift hits every variant alike
        for v in order:
            if len(runs[v]) >= caps[v]:
                continue
            res = _spawn(v, server.url, streams, n, warm_n)
            runs[v].append(res)
            if v.startswith("dspy") and len(runs[v]) == 1:  # ~0.3 ms per delta: a budget, not a count
                caps[v] = max(1, min(caps[v], int(dspy_budget / max(res["total"], 1e-9))))
            say(f"  concurrency {v} run {len(runs[v])}/{caps[v]}: total {fmt_s(res['total'])}, "
                f"p50 {fmt_s(res['p50'])}, p99 {fmt_s(res['p99'])}, CPU {res['cpu']:.2f} s, "
                f"peak RSS {res['peak_kb'] / 1024:.0f} MiB (+{res['growth_kb'] / 1024:.1f})")

    def med(v: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[v])

    summary: dict[str, dict[str, float]] = {}
    for v in names:
        totals = [x["total"] for x in runs[v]]
        summary[v] = {
            "runs": len(totals), "total_median": statistics.median(totals), "total_min": min(totals),
            "total_max": max(totals), "p50_median": med(v, "p50"), "p99_median": med(v, "p99"),
            "cpu_median": med(v, "cpu"), "rss_before_mib": med(v, "rss_before_kb") / 1024,
            "peak_mib": med(v, "peak_kb") / 1024, "growth_mib": med(v, "growth_kb") / 1024,
        }

    floors = [v for v in ("floor", "floor2") if v in summary]
    fkey = min(floors, key=lambda v: summary[v]["total_median"]) if floors else None
    base = summary[fkey] if fkey else None
    rows = []
    for v in names:
        s = summary[v]
        moved = all(x["peak_moved"] for x in runs[v])
        rows.append([
            LABELS[v] + (" **← floor**" if v == fkey and len(floors) > 1 else ""), str(s["runs"]),
            fmt_s(s["total_median"]), fmt_s(s["total_min"]), fmt_s(s["total_max"]),
            f"{s['total_median'] / (streams * n) * 1e6:.2f}",
            fmt_s(s["p50_median"]), fmt_s(s["p99_median"]),
            f"{s['total_median'] / base['total_median']:.2f}" if base else "-",
            f"{s['cpu_median']:.2f} s", f"{s['cpu_median'] / base['cpu_median']:.2f}" if base else "-",
            f"{s['rss_before_mib']:.0f}", f"{s['peak_mib']:.0f}", f"{s['growth_mib']:.1f}" + ("" if moved else "*"),
        ])

    md = [
        "## 4. Concurrency",
        "",
        (f"{streams} concurrent streams of {n:,} content deltas each (the section-1 `chat1` reply, one `answer` "
        f"field), all started at once with `asyncio.gather` on one event loop, against the same loopback server "
        f"process. Each run of each variant is a fresh process: it imports everything, opens {streams} pooled "
        f"connections with a warm-up round ({streams} streams of a {warm_n}-delta reply), then runs the measured "
        f"round; variants alternate order from run to run. Total: gather start to the last stream's end (median, "
        f"min, max over runs); µs/delta: total over all {streams * n:,} deltas; p50/p99: per-stream completion "
        f"time from the gather start (percentiles over the {streams} streams, median over runs). CPU: the "
        f"process's CPU time during the measured round (all threads). Memory: RSS just before the measured round, "
        f"peak RSS during the round (`VmHWM`, reset to the RSS just before it; not `ru_maxrss`, which a "
        f"process started by fork + exec inherits from its parent) and growth = peak - RSS before (MiB, medians). "
        f"Every stream's joined chunks (and final prediction) are checked against the expected text. Connection "
        f"pools: ours uses the openai client's defaults (max {MAX_CONNECTIONS} connections, {MAX_KEEPALIVE} kept "
        f"alive); the floors' `httpx`/`httpx2` clients are given the same limits (their own default keeps only 20 "
        f"alive); DSPy's litellm uses its aiohttp transport (limit 1000, 500 per host)."),
        "",
        table(["variant", "runs", "total", "min", "max", "µs/delta", "p50 stream", "p99 stream", "× floor",
               "CPU", "CPU × floor", "RSS before MiB", "peak RSS MiB", "growth MiB"], rows),
        "",
    ]
    if len(floors) > 1:
        md += [("The floor is the faster of the two (a) rows. With many connections httpcore 1.x (under httpx) spends "
               "much of its time in its pool's bookkeeping (`_assign_requests_to_connections` re-scans every "
               "connection for every idle one, encode/httpcore#1035); httpx2's pool does not "
               "(pydantic/httpx2#974, #1075)."), ""]
    if any(not all(x["peak_moved"] for x in runs[v]) for v in names):
        md += [("\\* in some runs the peak could not be reset (`/proc/self/clear_refs` not writable) and was set "
               "before the measured round: the growth shown is then the old peak minus the RSS before the round, "
               "an upper bound."), ""]
    if "dspy" in names:
        md += [("DSPy's default `streamify` runs the program in worker threads limited to `dspy.settings."
               "async_max_workers` (8), so at most 8 of the calls stream at a time; `is_async_program=True` runs "
               "them all on the event loop."), ""]
    md += notes + ([""] if notes else [])

    targets: list[tuple[str, str, bool]] = []
    if base and "ours" in summary:
        o = summary["ours"]
        r = o["total_median"] / base["total_median"]
        other = ""
        if "floor" in summary and fkey != "floor":
            other = f"; vs (a) httpx {o['total_median'] / summary['floor']['total_median']:.2f}x"
        targets.append(((f"concurrency: ours within 1.5x of {streams} concurrent floor readers ({streams} x {n:,} "
                        f"deltas, total wall medians; floor: the faster of (a)/(a'), here {fkey})"),
                        (f"{r:.2f}x (min/min {o['total_min'] / base['total_min']:.2f}x, "
                        f"CPU {o['cpu_median'] / base['cpu_median']:.2f}x, "
                        f"p99 {o['p99_median'] / base['p99_median']:.2f}x{other})"), r <= 1.5))
    raw = {
        "streams": streams, "n": n, "warm_n": warm_n, "repeats": caps, "variants": names, "floor": fkey,
        "limits": {"max_connections": MAX_CONNECTIONS, "max_keepalive_connections": MAX_KEEPALIVE},
        "summary": summary, "runs": runs, "seconds": time.perf_counter() - t_start,
    }
    return {"markdown": md, "targets": targets, "raw": raw}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke sizes: 10 streams of 200 deltas, 1 run")
    ap.add_argument("--streams", type=int, help="concurrent streams (default 100; 10 with --quick)")
    ap.add_argument("--n", type=int, help="deltas per stream (default 2,000; 200 with --quick)")
    ap.add_argument("--repeats", type=int, help="runs per variant (default 5; 1 with --quick)")
    ap.add_argument("--dspy-repeats", type=int, help="runs per DSPy variant (default min(repeats, 3))")
    ap.add_argument("--dspy", action="store_true", help="also DSPy (needs `import dspy`: benchmarks/.venv)")
    ap.add_argument("--variants", help="comma-separated subset of " + ",".join(LABELS))
    ap.add_argument("--json", help="write the raw numbers here")
    ap.add_argument("--profile", metavar="VARIANT", help="one run of VARIANT with its measured round under cProfile")
    ap.add_argument("--top", type=int, default=30, help="with --profile: functions to list")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--warm-n", type=int, default=40, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.url, args.streams, args.n, args.warm_n, args.profile_out)
        print(_RESULT + json.dumps(res), flush=True)
        return 0

    from _server import ServerProcess

    with ServerProcess() as server:
        if args.profile:
            import pstats
            import tempfile

            streams, n = args.streams or (10 if args.quick else 100), args.n or (200 if args.quick else 2_000)
            w, warm = workload("chat1", n), workload("chat1", 40)
            server.set_replies([(WARM_QUESTION, warm.chunks), (None, w.chunks)])
            with tempfile.TemporaryDirectory() as d:
                out = os.path.join(d, "prof")
                res = _spawn(args.profile, server.url, streams, n, 40, profile=out)
                print(f"{args.profile}: {streams} x {n:,}, total {fmt_s(res['total'])} under cProfile, "
                      f"CPU {res['cpu']:.2f} s")
                pstats.Stats(out).strip_dirs().sort_stats("tottime").print_stats(args.top)
            return 0
        res = run(server, quick=args.quick, dspy=args.dspy, streams=args.streams, n=args.n, repeats=args.repeats,
                  dspy_repeats=args.dspy_repeats, variants=args.variants.split(",") if args.variants else None)
    print_section(res, args.json)
    return 0


if __name__ == "__main__":
    from run import exit_with

    exit_with(main)
