"""The DSPy comparison of ``run.py --dspy``: DSPy's streamify against the same server, and its parser
(section 5, ``run_dspy``); a DSPy program streamed through jupyter_stream's bridge against DSPy's own
streamify and DSPy's raw streaming floor (section 9, ``run_bridge``, ``--only bridge``).

Imported only when ``import dspy`` works (``benchmarks/setup.sh`` makes ``benchmarks/.venv`` with it).
DSPy's output is checked like ours, but a mismatch is reported in the table, not fatal: known DSPy bugs
(lost whitespace, lost chunks) are part of what is being compared.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
os.environ.setdefault("DSPY_CACHEDIR", os.path.join("/tmp", "jupyter_stream_bench_dspy_cache"))

import dspy  # noqa: E402


def _fmt_s(x: float) -> str:
    return f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.1f} ms"


def run_dspy(server: Any, sizes: list[int], repeats: int, parser_sizes: list[int], *, workload: Callable[..., Any],
             measure: Callable[..., Any], make_tokens: Callable[[int], str], split_every: Callable[..., list[str]],
             question: str) -> dict[str, Any]:
    from litellm import ModelResponseStream
    from litellm.types.utils import Delta, StreamingChoices

    from jupyter_stream.adapters import ChatAdapter, JSONAdapter, XMLAdapter
    from jupyter_stream._signatures import Signature

    lm = dspy.LM("openai/bench", api_base=server.url, api_key="x", cache=False)
    dspy.configure(lm=lm, adapter=None)
    predict = dspy.Predict("question -> answer")
    runner = asyncio.Runner()
    e2e: dict[int, Any] = {}
    correct: dict[int, str] = {}

    async def once_async(w: Any) -> tuple[float, str, Any]:
        parts: list[str] = []
        final = None
        # A new streamify (new listeners) per call: DSPy's listeners stay closed after the first call of
        # a streamified program (stanfordnlp/dspy#8425), so a reused one streams nothing the second time.
        program = dspy.streamify(
            predict, stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
        )
        t0 = time.perf_counter()
        async for x in program(question=question):
            if isinstance(x, dspy.streaming.StreamResponse):
                parts.append(x.chunk)
            elif isinstance(x, dspy.Prediction):
                final = x
        return time.perf_counter() - t0, "".join(parts), final

    try:
        for n in sizes:
            w = workload("chat1", n)
            server.set_reply(w.chunks)
            verdicts: set[str] = set()

            def once() -> float:
                dt, text, final = runner.run(once_async(w))
                want = w.expected["answer"]
                if text == want:
                    verdicts.add("yes")
                else:
                    verdicts.add(f"no ({len(text):,} of {len(want):,} chars)")
                if final is None or final.answer != want:
                    verdicts.add("final prediction differs")
                return dt

            e2e[n] = measure(once, repeats, warmup=1 if n <= 5_000 else 0, budget=20.0,
                             min_repeats=3 if n <= 5_000 else 1)
            correct[n] = ", ".join(sorted(verdicts))
    finally:
        runner.close()

    # StreamListener.receive alone, on ModelResponseStream chunks of one token (4 chars).
    sig = Signature("question -> answer")
    prows: list[dict[str, Any]] = []
    ours = {"ChatAdapter": ChatAdapter(), "JSONAdapter": JSONAdapter(), "XMLAdapter": XMLAdapter()}
    for name, adapter in ours.items():
        dspy_adapter = getattr(dspy, name)()
        for tokens in parser_sizes:
            text = make_tokens(tokens, seed=tokens)
            reply = adapter.format_reply(sig, {"answer": text})
            chunks = [ModelResponseStream(model="bench", choices=[StreamingChoices(delta=Delta(content=p))])
                      for p in split_every(reply, 4)]
            got: list[str] = []

            def once() -> float:
                listener = dspy.streaming.StreamListener("answer", predict=predict, predict_name="self")
                out: list[str] = []
                with dspy.context(adapter=dspy_adapter):
                    t0 = time.perf_counter()
                    for c in chunks:
                        r = listener.receive(c)
                        if r is not None:
                            out.append(r.chunk)
                    r = listener.finalize()
                    if r is not None:
                        out.append(r.chunk)
                    dt = time.perf_counter() - t0
                got[:] = ["".join(out)]
                return dt

            st = measure(once, 3 if tokens <= 16_000 else 1, warmup=0)
            prows.append({"adapter": name, "tokens": tokens, "stat": st,
                          "us_per_token": st.median / tokens * 1e6,
                          "cpu_us_per_token": st.cpu_median / tokens * 1e6,
                          "correct": "yes" if got[0] == text else
                          f"no: {got[0][:12]!r}...{got[0][-12:]!r} ({len(got[0]):,} of {len(text):,} chars)"})

    def markdown(our_e2e: dict[tuple[str, int], Any]) -> list[str]:
        lines = [
            f"DSPy {dspy.__version__} (litellm) `streamify(Predict('question -> answer'), "
            "stream_listeners=[StreamListener('answer')])` against the same server and replies as section 1, "
            "next to our (d) from this run; `dspy.LM('openai/bench', api_base=url, api_key='x', cache=False)`. "
            "A new streamify per call: DSPy's listeners stay closed after a program's first call (dspy#8425), "
            "so a reused program streams no chunk from its second call on.",
            "",
            "| N | runs | DSPy median | min | max | µs/delta | CPU µs/delta | × our (d) | × (a) | chunks correct |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for n, st in e2e.items():
            d = our_e2e.get(("d", n))
            a = our_e2e.get(("a", n))
            lines.append(
                f"| {n:,} | {len(st.times)} | {_fmt_s(st.median)} | {_fmt_s(st.min)} | {_fmt_s(st.max)} | "
                f"{st.median / n * 1e6:.1f} | {st.cpu_median / n * 1e6:.1f} | "
                + (f"{st.median / d.median:.1f} | " if d else "- | ")
                + (f"{st.median / a.median:.1f} | " if a else "- | ")
                + f"{correct[n]} |"
            )
        lines += [
            "",
            "DSPy's `StreamListener.receive` alone (plus `finalize`), one `answer` field of K tokens fed as "
            "one-token (4-char) `ModelResponseStream` chunks, under `dspy.context(adapter=...)`; "
            "compare with section 2.",
            "",
            "| adapter | tokens | runs | median | µs/token | CPU µs/token | output correct |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in prows:
            st = r["stat"]
            lines.append(f"| {r['adapter']} | {r['tokens']:,} | {len(st.times)} | {_fmt_s(st.median)} | "
                         f"{r['us_per_token']:.1f} | {r['cpu_us_per_token']:.1f} | {r['correct']} |")
        return lines

    return {"e2e": e2e, "parser": prows, "correct": correct, "markdown": markdown}


# --------------------------------------------------------------------------- section 9: the DSPy bridge
BRIDGE_VARIANTS: list[tuple[str, str]] = [
    ("a", "(a) jupyter_stream's bridge: `js.streamify(dspy.Predict)` + `js.StreamListener('answer')`"),
    ("b", "(b) DSPy's `dspy.streamify(dspy.Predict)` + `dspy.streaming.StreamListener('answer')`"),
    ("c", "(c) DSPy's raw floor: `predict.acall` under `dspy.context(send_stream=<no-op send>)`"),
]
"""key, label. (c) is what DSPy itself pays per chunk before any listener sees it."""

BRIDGE_TARGETS = {"a/b": 0.5, "a/c": 1.3}
"""The issue's targets: (a) at most 0.5x (b) and at most 1.3x (c), per delta (wall medians)."""


class _NullStream:
    """A ``send_stream`` whose ``send`` keeps nothing: DSPy streams into it and pays only its own cost.

    It counts the chunks (one integer increment), so a run that streamed nothing cannot pass as a floor.
    """

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, chunk: Any) -> None:
        self.sent += 1


def bridge_reply(n: int, make_tokens: Callable[[int], str],
                 split_every: Callable[..., list[str]]) -> tuple[str, list[str]]:
    """``(answer, deltas)``: DSPy's chat-format reply as ``"[[ ## answer ## ]]\\n"``, then ``n`` one-token
    (4-char) deltas of the answer, then ``"\\n\\n[[ ## completed ## ]]"`` (``n + 2`` deltas in all)."""
    answer = make_tokens(n)
    tokens = split_every(answer, 4)
    if len(tokens) != n:
        raise ValueError(f"the answer splits into {len(tokens)} tokens, not {n}")
    return answer, ["[[ ## answer ## ]]\n", *tokens, "\n\n[[ ## completed ## ]]"]


def run_bridge(server: Any, *, quick: bool, smoke: bool = False, n: int | None = None,
               repeats: int | None = None) -> dict[str, Any]:
    """Section 9: the cost per delta of a real DSPy program streamed through jupyter_stream's bridge (a),
    next to DSPy's own streamify (b) and to DSPy's raw floor (c), on one reply of ``n`` one-token deltas
    (5,000; 200 with ``smoke``), run interleaved (round after round each variant once, the order rotating),
    ``repeats`` rounds (9; 5 with ``quick``, 1 with ``smoke``) after one warm-up round.

    Our output is checked (the chunks join to the answer, one ``is_last_chunk``, the program's own
    ``dspy.Prediction`` at the end) and a mismatch fails the run; so is the floor's (the answer DSPy parsed,
    and at least ``n`` chunks sent), since the targets divide by it. DSPy's streamify output is reported in
    the table, not fatal (as in section 5). Returns ``{"markdown", "targets", "raw"}`` like sections 4, 6-8.
    """
    import jupyter_stream as js
    from run import QUESTION, BenchmarkError, Stat, check, fmt_s, make_tokens, split_every, table

    n = n or (200 if smoke else 5_000)
    repeats = repeats or (1 if smoke else 5 if quick else 9)
    answer, deltas = bridge_reply(n, make_tokens, split_every)
    server.set_reply(deltas)
    lm = dspy.LM("openai/bench", api_base=server.url, api_key="x", cache=False)
    dspy.configure(lm=lm, adapter=None)
    predict = dspy.Predict("question -> answer")
    # One program for every call of (a): ours gives each call its own listener state.
    ours = js.streamify(predict, stream_listeners=[js.StreamListener("answer")])
    correct_b: set[str] = set()

    async def run_ours() -> float:
        parts: list[str] = []
        lasts = 0
        final = None
        t0 = time.perf_counter()
        async for x in ours(question=QUESTION):
            if type(x) is js.StreamResponse:
                parts.append(x.chunk)
                lasts += x.is_last_chunk
            else:
                final = x
        dt = time.perf_counter() - t0
        check(f"bridge (a) N={n} chunks", "".join(parts), answer)
        if lasts != 1:
            raise BenchmarkError(f"bridge (a): is_last_chunk must be set exactly once, got {lasts}")
        if not isinstance(final, dspy.Prediction):
            raise BenchmarkError(f"bridge (a): the stream did not end with a dspy.Prediction "
                                 f"(got {type(final).__name__})")
        check(f"bridge (a) N={n} prediction", final.answer, answer)
        return dt

    async def run_dspy_streamify() -> float:
        parts: list[str] = []
        final = None
        # A new streamify (new listeners) per call: DSPy's stay closed after a program's first call (dspy#8425).
        program = dspy.streamify(
            predict, stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
        )
        t0 = time.perf_counter()
        async for x in program(question=QUESTION):
            if isinstance(x, dspy.streaming.StreamResponse):
                parts.append(x.chunk)
            elif isinstance(x, dspy.Prediction):
                final = x
        dt = time.perf_counter() - t0
        text = "".join(parts)
        correct_b.add("yes" if text == answer else f"no ({len(text):,} of {len(answer):,} chars)")
        if final is None or final.answer != answer:
            correct_b.add("final prediction differs")
        return dt

    async def run_floor() -> float:
        sink = _NullStream()
        t0 = time.perf_counter()
        with dspy.context(send_stream=sink):
            pred = await predict.acall(question=QUESTION)
        dt = time.perf_counter() - t0
        check(f"bridge (c) N={n} prediction", pred.answer, answer)
        if sink.sent < n:
            raise BenchmarkError(f"bridge (c): DSPy sent {sink.sent} chunks to send_stream, expected at least {n}")
        return dt

    fns = {"a": run_ours, "b": run_dspy_streamify, "c": run_floor}
    stats = {k: Stat() for k in fns}
    runner = asyncio.Runner()
    cpu = time.process_time
    try:
        for fn in fns.values():  # warm up: connections, lazy imports, our engine loop
            runner.run(fn())
        keys = list(fns)
        for r in range(repeats):
            for k in keys[r % len(keys):] + keys[: r % len(keys)]:  # rotate, so no variant always runs first
                gc.collect()
                c0 = cpu()
                stats[k].times.append(runner.run(fns[k]()))
                stats[k].cpu.append(cpu() - c0)
    finally:
        runner.close()

    us = {k: st.median / n * 1e6 for k, st in stats.items()}
    cpu_us = {k: st.cpu_median / n * 1e6 for k, st in stats.items()}
    ratios = {q: us[q[0]] / us[q[2]] for q in BRIDGE_TARGETS}  # "a/b": (a) over (b)
    cpu_ratios = {q: cpu_us[q[0]] / cpu_us[q[2]] for q in BRIDGE_TARGETS}
    # The ratio within each round (the three runs of a round share the machine's load at that moment).
    paired = {q: statistics.median(x / y for x, y in zip(stats[q[0]].times, stats[q[2]].times)) for q in ratios}
    correct = {"a": "yes", "b": ", ".join(sorted(correct_b)), "c": "yes"}

    rows = [[label, str(len(stats[k].times)), fmt_s(stats[k].median), fmt_s(stats[k].min), fmt_s(stats[k].max),
             f"{us[k]:.1f}", f"{cpu_us[k]:.1f}", f"{us[k] / us['c']:.2f}", correct[k]]
            for k, label in BRIDGE_VARIANTS]
    md = [
        "## 9. DSPy programs through the bridge",
        "",
        f"A real DSPy {dspy.__version__} program, `dspy.Predict('question -> answer')` with "
        "`dspy.LM('openai/bench', api_base=url, api_key='x', cache=False)`, on one chat-format reply from the "
        f"loopback server: `[[ ## answer ## ]]\\n`, {n:,} one-token (4-char) deltas of the answer, "
        "`\\n\\n[[ ## completed ## ]]`. (a) consumed with `async for` (one streamified program for all calls), "
        "its chunks joined and checked against the prediction's answer; (b) a new `dspy.streamify` per call "
        "(DSPy's listeners stay closed after the first call, dspy#8425); (c) DSPy's own streaming path with "
        "nothing listening: what DSPy pays per chunk before any listener. The three run interleaved "
        f"({repeats} round{'s' * (repeats != 1)} after a warm-up, each variant once per round, the order "
        f"rotating). µs/delta: the median run's wall time (request to last item) / {n:,}; CPU µs/delta: this "
        "process's CPU time, "
        "all threads, the load-robust view.",
        "",
        table(["variant", "runs", "median", "min", "max", "µs/delta", "CPU µs/delta", "× (c)", "output correct"],
              rows, "lrrrrrrrl"),
        "",
        f"(a)/(b) = {ratios['a/b']:.3f} (CPU {cpu_ratios['a/b']:.3f}, median of per-round ratios "
        f"{paired['a/b']:.3f}); (a)/(c) = {ratios['a/c']:.2f} (CPU {cpu_ratios['a/c']:.2f}, median of per-round "
        f"ratios {paired['a/c']:.2f}). Targets: (a) <= {BRIDGE_TARGETS['a/b']:g}x (b) and (a) <= "
        f"{BRIDGE_TARGETS['a/c']:g}x (c)" + ("." if n == 5_000 else f", judged at N=5,000 only (here N={n:,})."),
    ]
    targets: list[tuple[str, str, bool]] = []
    if n == 5_000:
        for q, what in (("a/b", "DSPy's streamify + 1 listener (b)"),
                        ("a/c", "DSPy's raw floor (c), no-op send_stream")):
            limit = BRIDGE_TARGETS[q]
            targets.append((f"bridge: (a) js.streamify(dspy.Predict) <= {limit:g}x {what}, per delta at N=5,000 "
                            "(wall medians)",
                            f"{ratios[q]:.2f}x ({us['a']:.1f} vs {us[q[2]]:.1f} µs/delta; CPU {cpu_ratios[q]:.2f}x, "
                            f"per-round {paired[q]:.2f}x)", ratios[q] <= limit))
    raw = {
        "n": n,
        "deltas": len(deltas),
        "variants": dict(BRIDGE_VARIANTS),
        "runs": {k: {"wall": st.times, "cpu": st.cpu} for k, st in stats.items()},
        "us_per_delta": us,
        "cpu_us_per_delta": cpu_us,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "paired_ratios": paired,
        "limits": BRIDGE_TARGETS,
        "met": {q: ratios[q] <= BRIDGE_TARGETS[q] for q in ratios} if n == 5_000 else {},
        "correct": correct,
    }
    return {"markdown": md, "targets": targets, "raw": raw}
