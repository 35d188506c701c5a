"""The DSPy comparison of ``run.py --dspy``: DSPy's streamify against the same server, and its parser.

Imported only when ``import dspy`` works (``benchmarks/setup.sh`` makes ``benchmarks/.venv`` with it).
DSPy's output is checked like ours, but a mismatch is reported in the table, not fatal: known DSPy bugs
(lost whitespace, lost chunks) are part of what is being compared.
"""

from __future__ import annotations

import asyncio
import os
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
    from jupyter_stream.signatures import Signature

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
