"""Memory benchmark (item 7): peak RSS growth for one stream of 1,000,000 one-token deltas, at most 3x the text.

    .venv/bin/python benchmarks/_memory.py                  # 1,000,000 deltas: 3 runs per variant + a traced run
    .venv/bin/python benchmarks/_memory.py --quick          # 20,000 deltas, 1 run each (smoke test)
    .venv/bin/python benchmarks/_memory.py --tokens 200000 --repeats 1 --no-trace
    .venv/bin/python benchmarks/_memory.py --json /tmp/mem.json   # also the raw numbers

``run(server, quick=...)`` returns section 8 (markdown, targets, raw numbers) for ``run.py``. Every run of every
variant is a fresh subprocess (this file with ``--worker VARIANT``), as in ``_concurrency.py``, whose helpers it
uses: the worker imports everything, streams a warm-up reply of N/50 deltas of the same kind of text (checked;
so the process's one-time costs are paid before the baseline: the connection, lazy imports, the allocator's first
pools and ``jiter``'s process-wide string cache, which keeps up to 16,384 short strings), collects garbage, reads
its RSS (``/proc/self/statm``) and resets its peak RSS (``/proc/self/clear_refs``), then streams ONE reply of N
one-token (~4 character) content deltas -- the ``chat1`` workload of ``run.py``: one ``answer`` field -- and reads
its peak RSS (``VmHWM``; see ``_hwm_kb`` for why not ``ru_maxrss``) while it still holds the result. Growth = peak -
RSS before; it is compared with the size of the field text (UTF-8 bytes) and of the whole reply. The consumer keeps no chunk: it counts characters and runs a CRC-32 over each chunk's UTF-8 bytes,
and the count and CRC must equal the expected text's (the final prediction's answer, or the LM record's text, is
checked the same way), or the run fails.

Variants: ``floor`` = the transport alone (``httpx`` + ``aiter_lines`` + ``jiter``, as ``run.py``'s (a), but
discarding each delta once counted), ``floor2`` = the same on ``httpx2`` (the openai 3.x transport, which
``js.LM`` reads through), ``lm`` = ``js.LM.astream`` alone with an ``on_content`` hook (its record keeps the
reply), ``ours`` = ``streamify(Predict("question -> answer"), stream_listeners=[StreamListener("answer")])``
with ``js.LM(..., cache=False)``. A last run of ``ours`` under ``tracemalloc`` (started after the warm-up, so
only new allocations are traced) lists what the engine holds, by allocation site: at the moment the whole reply
has arrived and the adapter starts parsing it, when the final ``Prediction`` is in hand, and after the
consumer dropped it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _concurrency import _RESULT, WARM_QUESTION, _hwm_kb, _peak_kb, _reset_hwm, _rss_kb
from run import QUESTION, SIG1, BenchmarkError, print_section, table, workload

LABELS = {
    "floor": "(a) transport floor: httpx + aiter_lines + jiter, deltas discarded",
    "floor2": "(a') the same floor on httpx2 (the openai 3.x transport)",
    "lm": "(d0) js.LM.astream alone (on_content hook)",
    "ours": "(d) jupyter_stream streamify + 1 listener",
}
TARGET_RATIO = 3.0
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------- worker
class _Tally:
    """Counts the text it is given and runs a CRC-32 over its UTF-8 bytes, keeping none of it.

    Every ``every`` pieces it also reads the RSS, so the growth during the stream can be seen.
    """

    __slots__ = ("chars", "crc", "every", "n", "nbytes", "samples")

    def __init__(self, every: int = 0) -> None:
        self.chars = self.nbytes = self.crc = self.n = 0
        self.every = every
        self.samples: list[tuple[int, int]] = []

    def add(self, text: str) -> None:
        b = text.encode()
        self.chars += len(text)
        self.nbytes += len(b)
        self.crc = zlib.crc32(b, self.crc)
        self.n += 1
        if self.every and self.n % self.every == 0:
            self.samples.append((self.n, _rss_kb()))

    def digest(self) -> list[int]:
        return [self.chars, self.nbytes, self.crc]


def _digest(text: str) -> list[int]:
    b = text.encode()
    return [len(text), len(b), zlib.crc32(b)]


def _expect(label: str, got: list[int], want: list[int]) -> None:
    if list(got) != list(want):
        raise BenchmarkError(f"{label}: wrong output (chars, UTF-8 bytes, CRC-32) {tuple(got)} != {tuple(want)}")


def _where(filename: str, lineno: int) -> str:
    """``jupyter_stream/_lm.py:330`` for the project's files, ``httpx2/_models.py:12`` for a library's."""
    path = os.path.abspath(filename)
    if path.startswith(ROOT + os.sep) and ".venv" not in path:
        return f"{os.path.relpath(path, ROOT)}:{lineno}"
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("site-packages", "lib-dynload") or parts[i].startswith("python3"):
            return f"{'/'.join(parts[i + 1:])}:{lineno}"
    return f"{os.path.basename(path)}:{lineno}"


def _snapshot(tracemalloc: Any, top: int) -> dict[str, Any]:
    """The traced memory now, by allocation site (file:line), the largest ``top`` sites first."""
    snap = tracemalloc.take_snapshot()
    snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    count = sum(s.count for s in stats)
    sites = [{"site": _where(s.traceback[0].filename, s.traceback[0].lineno), "size": s.size, "count": s.count}
             for s in stats[:top]]
    return {"total": total, "count": count, "sites": sites}


def worker(variant: str, url: str, n: int, expect: dict[str, list[int]], trace: int = 0) -> dict[str, Any]:
    """One run of ``variant`` in this (fresh) process: a warm-up stream, then one stream of ``n`` deltas."""
    import jupyter_stream as js
    from jupyter_stream.adapters import ChatAdapter

    sig, adapter = js.Signature(SIG1), ChatAdapter()

    def body(question: str) -> dict[str, Any]:  # what js.LM sends (run.py's chat_body, any question)
        return {"model": "bench", "messages": adapter.format(sig, {"question": question}), "stream": True,
                "stream_options": {"include_usage": True}}

    warm_body, big_body = body(WARM_QUESTION), body(QUESTION)
    every = max(1, n // 64)
    tm: Any = None
    snaps: dict[str, Any] = {}
    if trace:
        import tracemalloc as tm

    lm: Any = None
    client: Any = None
    program: Any = None
    if variant in ("floor", "floor2"):
        import jiter

        mod = importlib.import_module("httpx" if variant == "floor" else "httpx2")
        client = mod.AsyncClient(timeout=600)
        loads = jiter.from_json

        async def one(b: dict[str, Any], tally: _Tally) -> Any:
            async with client.stream("POST", url + "/chat/completions", json=b,
                                     headers={"Authorization": "Bearer x"}) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].lstrip()
                    if payload == "[DONE]":
                        continue  # read on to the end of the body (the connection goes back to the pool)
                    choices = loads(payload.encode()).get("choices")
                    if choices:
                        delta = choices[0].get("delta")
                        if delta:
                            text = delta.get("content")
                            if text:
                                tally.add(text)
            return None

        def verify(label: str, tally: _Tally, result: Any, want: dict[str, list[int]]) -> None:
            _expect(label, tally.digest(), want["reply"])

    elif variant == "lm":
        lm = js.LM("bench", base_url=url, api_key="x", cache=False)

        async def one(b: dict[str, Any], tally: _Tally) -> Any:
            return await lm.astream(b["messages"], on_content=tally.add)

        def verify(label: str, tally: _Tally, result: Any, want: dict[str, list[int]]) -> None:
            _expect(f"{label} deltas", tally.digest(), want["reply"])
            _expect(f"{label} record text", _digest(result.text), want["reply"])

    elif variant == "ours":
        lm = js.LM("bench", base_url=url, api_key="x", cache=False)
        if trace:
            class TracedChat(ChatAdapter):
                """Takes a snapshot when the whole reply has arrived and the adapter starts parsing it."""

                def parse(self, signature: Any, completion: str) -> dict[str, Any]:
                    if "reply" not in snaps and tm.is_tracing():  # the measured stream, not the warm-up
                        snaps["reply"] = {**_snapshot(tm, trace), "traced_peak": tm.get_traced_memory()[1]}
                    return super().parse(signature, completion)

            js.configure(lm=lm, adapter=TracedChat())
        else:
            js.configure(lm=lm, adapter=None)
        program = js.streamify(js.Predict(SIG1), stream_listeners=[js.StreamListener("answer")])

        async def one(b: dict[str, Any], tally: _Tally) -> Any:
            question = WARM_QUESTION if b is warm_body else QUESTION
            final = None
            lasts = 0
            async for x in program(question=question):
                if type(x) is js.StreamResponse:
                    if x.signature_field_name != "answer":
                        raise BenchmarkError(f"memory ours: a chunk of an unlistened field {x.signature_field_name!r}")
                    tally.add(x.chunk)
                    lasts += x.is_last_chunk
                elif isinstance(x, js.Prediction):
                    final = x
            if lasts != 1:
                raise BenchmarkError(f"memory ours: is_last_chunk must be set exactly once, got {lasts}")
            return final

        def verify(label: str, tally: _Tally, result: Any, want: dict[str, list[int]]) -> None:
            _expect(f"{label} chunks", tally.digest(), want["answer"])
            if not isinstance(result, js.Prediction):
                raise BenchmarkError(f"{label}: the stream did not end with a Prediction (got {type(result).__name__})")
            _expect(f"{label} prediction", _digest(result.answer), want["answer"])
    else:
        raise SystemExit(f"unknown variant {variant!r}")

    async def main() -> dict[str, Any]:
        try:
            tally = _Tally()
            result = await one(warm_body, tally)
            verify(f"memory {variant} warm-up", tally, result, expect["warm"])
            del result, tally
            gc.collect()
            tally = _Tally(every)
            if trace:
                tm.start(1)
            reset = _reset_hwm()
            rss0, peak0, maxrss0 = _rss_kb(), _hwm_kb(), _peak_kb()
            t0 = time.perf_counter()
            result = await one(big_body, tally)
            seconds = time.perf_counter() - t0
            peak1, rss_held, maxrss1 = _hwm_kb(), _rss_kb(), _peak_kb()  # read before the checks, which allocate
            traced: dict[str, Any] = {}
            if trace:
                traced["traced_peak"] = tm.get_traced_memory()[1]
                snaps["final"] = _snapshot(tm, trace)
            verify(f"memory {variant} N={n}", tally, result, expect)
            del result
            gc.collect()
            rss_dropped = _rss_kb()
            if trace:
                snaps["dropped"] = _snapshot(tm, trace)
            if lm is not None:
                lm.history.clear()
                gc.collect()
            rss_cleared = _rss_kb()
            if trace:
                snaps["cleared"] = _snapshot(tm, trace)
                tm.stop()
            samples = tally.samples
            half = next((s for s in samples if s[0] >= tally.n // 2), None)
            slope = ((samples[-1][1] - half[1]) * 1024 / (samples[-1][0] - half[0])
                     if samples and half and samples[-1][0] > half[0] else float("nan"))
            return {
                "variant": variant, "n": n, "seconds": seconds, "pieces": tally.n,
                "rss_before_kb": rss0, "peak_before_kb": peak0, "peak_kb": peak1, "peak_moved": peak1 > peak0,
                "hwm_reset": reset, "ru_maxrss_before_kb": maxrss0, "ru_maxrss_kb": maxrss1,
                "growth_kb": max(0, peak1 - rss0), "held_kb": rss_held - rss0, "dropped_kb": rss_dropped - rss0,
                "cleared_kb": rss_cleared - rss0, "sampled_max_kb": max((r for _k, r in samples), default=rss0) - rss0,
                "slope_b_per_piece": slope, "samples": samples, **traced, "snapshots": snaps,
            }
        finally:
            if lm is not None:
                await lm.aclose()
            if client is not None:
                await client.aclose()

    return asyncio.run(main())


# ------------------------------------------------------------------------------------------- parent
def _spawn(variant: str, url: str, n: int, expect: dict[str, list[int]], trace: int = 0,
           timeout: float = 1800) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--url", url, "--tokens", str(n),
           "--expect", json.dumps(expect)]
    if trace:
        cmd += ["--trace", str(trace)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"memory worker {variant} did not finish in {timeout:g} s") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(_RESULT)]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-6:]
        raise BenchmarkError(f"memory worker {variant} failed (exit {p.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1][len(_RESULT):])


def _mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def run(server: Any, *, quick: bool, tokens: int | None = None, repeats: int | None = None, warm_n: int | None = None,
        trace: bool = True, top: int = 12, variants: list[str] | None = None, log: Any = None) -> dict[str, Any]:
    """Section 8: peak RSS growth of one stream of ``tokens`` deltas (1,000,000; 20,000 with ``quick``).

    Replaces the server's replies (the measured reply, plus one of ``warm_n`` deltas, default N/50, for the
    warm-up question). ``repeats`` runs per variant (3; 1 with ``quick``), then one traced run of ours (unless
    ``trace=False``).
    """
    n = tokens or (20_000 if quick else 1_000_000)
    warm_n = warm_n or max(40, n // 50)
    repeats = repeats or (1 if quick else 3)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    names = list(variants or LABELS)
    unknown = [v for v in names if v not in LABELS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(LABELS)}")
    notes: list[str] = []
    if "floor2" in names and importlib.util.find_spec("httpx2") is None:
        names.remove("floor2")
        notes.append("(a') not measured: `httpx2` is not installed in this interpreter.")
    t_start = time.perf_counter()

    w = workload("chat1", n)
    warm = workload("chat1", warm_n)
    answer, reply = w.expected["answer"], w.reply
    expect = {"answer": _digest(answer), "reply": _digest(reply), "warm": {"answer": _digest(warm.expected["answer"]),
                                                                             "reply": _digest(warm.reply)}}
    text_bytes, reply_bytes = expect["answer"][1], expect["reply"][1]
    server.set_replies([(WARM_QUESTION, warm.chunks), (None, w.chunks)])
    del w, answer, reply
    gc.collect()
    say(f"  memory: one reply of {n:,} deltas, field text {text_bytes / MIB:.2f} MiB, reply {reply_bytes / MIB:.2f} MiB")

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in names}
    for r in range(repeats):
        for v in (names if r % 2 == 0 else names[::-1]):
            res = _spawn(v, server.url, n, expect)
            res.pop("snapshots", None)
            runs[v].append(res)
            say(f"  memory {v} run {r + 1}/{repeats}: {res['seconds']:.1f} s, RSS before "
                f"{_mib(res['rss_before_kb'])} MiB, peak growth {_mib(res['growth_kb'])} MiB "
                f"({res['growth_kb'] * 1024 / text_bytes:.2f}x the field text), after dropping the result "
                f"{_mib(res['dropped_kb'])} MiB")

    traced: dict[str, Any] | None = None
    if trace and "ours" in names:
        traced = _spawn("ours", server.url, n, expect, trace=top)
        traced.pop("samples", None)
        say(f"  memory ours traced: {traced['seconds']:.1f} s, traced peak {traced['traced_peak'] / MIB:.1f} MiB")

    def med(v: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[v])

    summary: dict[str, dict[str, float]] = {}
    for v in names:
        summary[v] = {k: med(v, k) for k in ("growth_kb", "rss_before_kb", "held_kb", "dropped_kb", "cleared_kb",
                                             "slope_b_per_piece", "seconds")}
        summary[v]["ratio_text"] = summary[v]["growth_kb"] * 1024 / text_bytes
        summary[v]["ratio_reply"] = summary[v]["growth_kb"] * 1024 / reply_bytes
        summary[v]["growth_min_kb"] = min(x["growth_kb"] for x in runs[v])
        summary[v]["growth_max_kb"] = max(x["growth_kb"] for x in runs[v])

    rows = []
    for v in names:
        s = summary[v]
        moved = all(x["peak_moved"] for x in runs[v])
        rows.append([LABELS[v], str(len(runs[v])), _mib(s["rss_before_kb"]),
                     _mib(s["growth_kb"]) + ("" if moved else "*"),
                     f"{_mib(s['growth_min_kb'])}-{_mib(s['growth_max_kb'])}",
                     f"**{s['ratio_text']:.2f}**", f"{s['ratio_reply']:.2f}", f"{s['slope_b_per_piece']:.1f}",
                     _mib(s["held_kb"]), _mib(s["dropped_kb"]), _mib(s["cleared_kb"]), f"{s['seconds']:.1f} s"])

    md = [
        "## 6. Memory",
        "",
        (f"One reply of {n:,} one-token content deltas (~4 characters each; the section-1 `chat1` reply, one "
         f"`answer` field of {text_bytes:,} bytes of UTF-8, {text_bytes / MIB:.2f} MiB; the whole reply "
         f"{reply_bytes:,} bytes) from the loopback server process. Each run of each variant is a fresh process: "
         f"it imports everything, streams a warm-up reply of {warm_n:,} deltas of the same kind of text (so the "
         f"process's one-time costs are paid before the baseline: the connection, lazy imports, the allocator's first "
         f"pools, `jiter`'s process-wide cache of up to 16,384 short strings), collects garbage, reads its RSS "
         f"(`/proc/self/statm`) and resets its peak RSS (`/proc/self/clear_refs`), streams the one long reply, and "
         f"reads its peak RSS (`VmHWM` in `/proc/self/status`) while it still holds the result. (Not `ru_maxrss`: "
         f"a process started by fork + exec inherits there the RSS its parent had at the fork, here the parent's "
         f"copy of the workload.) Growth = peak - RSS before; × text: growth over the field text's size (× reply: over "
         f"the reply's). The consumer keeps no chunk: it counts the characters and runs a CRC-32 over each chunk's "
         f"UTF-8 bytes, and both must equal the expected text's (so must the final prediction's `answer`, or the "
         f"LM record's text). B/delta: RSS growth per delta over the second half of the stream (RSS read every "
         f"{max(1, n // 64):,} deltas). Held: RSS - RSS before, after the stream with the result held; then after "
         f"the consumer dropped the result (and `gc.collect()`); then after `lm.history.clear()` as well (RSS does "
         f"not always shrink when memory is freed, so these are upper bounds; the traced run below is exact). "
         f"Variants alternate order; medians over runs. The floor keeps nothing: its growth is the transport's "
         f"own buffering; (d0) adds our LM record; (d) adds the field parser, events, the final parse and the "
         f"Prediction."),
        "",
        table(["variant", "runs", "RSS before MiB", "peak growth MiB", "min-max", "× text", "× reply", "B/delta",
               "held MiB", "dropped MiB", "history cleared MiB", "time"], rows),
        "",
    ]
    if any(not all(x["peak_moved"] for x in runs[v]) for v in names):
        md += [("\\* in some runs the peak RSS was set before the stream (imports, warm-up: `/proc/self/clear_refs` "
                "could not reset it): the growth shown is then the old peak minus the RSS before the stream, an upper "
                "bound."), ""]
    if quick or n < 200_000:
        md += [(f"At {n:,} deltas the text is only {text_bytes / 1024:.0f} KiB, the size of the allocator's "
                f"own granularity (pymalloc arenas, malloc's heap), so the ratios are indicative; the target is "
                f"stated for 1,000,000 deltas."), ""]
    if traced is not None:
        sn = traced["snapshots"]
        order = [k for k in ("reply", "final", "dropped", "cleared") if k in sn]
        heads = {"reply": "whole reply in, parse starts", "final": "Prediction in hand",
                 "dropped": "Prediction dropped", "cleared": "lm.history cleared"}
        sizes: dict[str, dict[str, tuple[int, int]]] = {k: {s["site"]: (s["size"], s["count"]) for s in sn[k]["sites"]}
                                                         for k in order}
        sites: list[str] = []
        for k in order:
            for s in sn[k]["sites"]:
                if s["site"] not in sites:
                    sites.append(s["site"])
        ref = order[0]
        sites.sort(key=lambda s: -max(sizes[k].get(s, (0, 0))[0] for k in order))
        trows = []
        for site in sites[:top]:
            cells = []
            for k in order:
                size, count = sizes[k].get(site, (0, 0))
                cells.append(f"{size / MIB:.2f} ({count:,})" if size else "")
            big = max(sizes[k].get(site, (0, 0))[0] for k in order)
            trows.append([f"`{site}`", *cells, f"{big / text_bytes:.2f}"])
        trows.append(["**total traced**", *[f"**{sn[k]['total'] / MIB:.2f}** ({sn[k]['count']:,})" for k in order],
                      f"{max(sn[k]['total'] for k in order) / text_bytes:.2f}"])
        peak = traced["traced_peak"]
        md += [
            (f"Where the memory goes: one more run of (d) under `tracemalloc` (started after the warm-up, so only "
             f"memory allocated during the stream is traced; one frame per allocation). MiB by allocation site "
             f"(the number of live blocks in brackets) at four moments; × text: the site's largest size over the "
             f"field text's. The traced peak (the most Python memory alive at any one time during the stream) was "
             f"{peak / MIB:.2f} MiB = {peak / text_bytes:.2f}x the text; at the start of the parse "
             f"{sn[ref]['total'] / MIB:.2f} MiB were alive, so "
             f"{(peak - sn[ref]['total']) / MIB:.2f} MiB were transient copies made after it (joining, "
             f"slicing, stripping). RSS growth of this run: {_mib(traced['growth_kb'])} MiB (tracemalloc's own "
             f"bookkeeping included)."),
            "",
            table(["allocation site", *[heads[k] for k in order], "× text"], trows, "l" + "r" * (len(order) + 1)),
            "",
        ]
    md += notes + ([""] if notes else [])

    targets: list[tuple[str, str, bool]] = []
    if "ours" in summary:
        o = summary["ours"]
        extra = ""
        if "floor2" in summary or "floor" in summary:
            fk = "floor2" if "floor2" in summary else "floor"
            extra = f"; transport floor {summary[fk]['ratio_text']:.2f}x, LM.astream alone " + (
                f"{summary['lm']['ratio_text']:.2f}x" if "lm" in summary else "-")
        if traced is not None:
            extra += f"; traced Python peak {traced['traced_peak'] / text_bytes:.2f}x"
        targets.append(((f"memory: peak RSS growth of one {n:,}-token stream <= {TARGET_RATIO:g}x the field text "
                         f"({text_bytes / MIB:.2f} MiB; ours, median of {len(runs['ours'])})"),
                        f"{o['ratio_text']:.2f}x ({_mib(o['growth_kb'])} MiB; {o['ratio_reply']:.2f}x the reply{extra})",
                        o["ratio_text"] <= TARGET_RATIO))
    raw = {"n": n, "warm_n": warm_n, "repeats": repeats, "text_bytes": text_bytes, "reply_bytes": reply_bytes, "variants": names,
           "summary": summary, "runs": runs, "traced": traced, "seconds": time.perf_counter() - t_start}
    return {"markdown": md, "targets": targets, "raw": raw}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 deltas, 1 run per variant")
    ap.add_argument("--tokens", type=int, help="deltas in the reply (default 1,000,000; 20,000 with --quick)")
    ap.add_argument("--repeats", type=int, help="runs per variant (default 3; 1 with --quick)")
    ap.add_argument("--variants", help="comma-separated subset of " + ",".join(LABELS))
    ap.add_argument("--warm", type=int, help="deltas in the warm-up reply (default N/50; 40 = a cold process)")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    ap.add_argument("--top", type=int, default=12, help="allocation sites to list")
    ap.add_argument("--json", help="write the raw numbers here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--expect", help=argparse.SUPPRESS)
    ap.add_argument("--trace", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.url, args.tokens, json.loads(args.expect), args.trace)
        print(_RESULT + json.dumps(res), flush=True)
        return 0

    from _server import ServerProcess

    with ServerProcess() as server:
        res = run(server, quick=args.quick, tokens=args.tokens, repeats=args.repeats, warm_n=args.warm,
                  trace=not args.no_trace,
                  top=args.top, variants=args.variants.split(",") if args.variants else None)
    print_section(res, args.json)
    return 0


if __name__ == "__main__":
    from run import exit_with

    exit_with(main)
