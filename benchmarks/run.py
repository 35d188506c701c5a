"""jupyter_stream benchmarks: end to end, field parsers, time to first token (and DSPy, with ``--dspy``).

    python benchmarks/run.py            # full run (about 5 minutes), writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick    # smoke test (small N, fewer repeats), writes benchmarks/RESULTS-quick.md
    benchmarks/.venv/bin/python benchmarks/run.py --dspy   # after benchmarks/setup.sh: + plots + DSPy
    benchmarks/.venv/bin/python benchmarks/run.py --dspy --only bridge   # a DSPy program through our bridge
    python benchmarks/run.py --only serve --out /tmp/serve.md   # one section: /tmp/serve.md and /tmp/serve.json

Every measurement checks its output (the joined chunks equal the expected text), so a benchmark cannot
silently measure a broken path; a mismatch stops the run with a non-zero exit status.

The LM server is a DemoServer in a separate process (``_server.py``) that streams one pre-built reply of
exactly N content deltas for every request, as fast as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import importlib.metadata as _md
import os
import socket
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if __name__ == "__main__":  # the section modules `from run import ...`: let them get this module, not a copy
    sys.modules.setdefault("run", sys.modules[__name__])

import httpx  # noqa: E402
import jiter  # noqa: E402
import openai  # noqa: E402

import jupyter_stream as js  # noqa: E402
from jupyter_stream.adapters import ChatAdapter, JSONAdapter, XMLAdapter  # noqa: E402

from _server import ServerProcess  # noqa: E402

QUESTION = "Write a long answer about streaming."
SIG1 = "question -> answer"
SIG5 = "question -> a, b, c, d, e"


SECTIONS = ("e2e", "parser", "ttft", "concurrency", "memory", "notebook", "serve", "browser", "replay", "bridge")
"""``bridge`` (section 9) runs only with ``--dspy``; so does section 5 (the DSPy comparison), when ``e2e`` or
``parser`` runs (it is read against them). ``serve`` is section 10 (``_serve.py``), ``browser`` section 11
(``_browser.py``: the widget in JupyterLab in Chromium; skipped without ``chromium`` and ``playwright``),
``replay`` section 12 (``_replay.py``: replay at speed 0 and the run history's memory)."""


def free_port() -> int:
    """A free loopback TCP port (for a server a section starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchmarkError(AssertionError):
    """A benchmark produced the wrong output: its numbers would be meaningless."""


# ------------------------------------------------------------------------------------------ workloads
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def make_text(n_chars: int, seed: int = 0) -> str:
    """Prose-like text of exactly ``n_chars`` characters made of ~4-char tokens (" abc", ". Ab", ".\\nAb").

    No leading or trailing whitespace (adapters strip field text) and no ``[``/``<``/``"`` (plain text).
    """
    rng = random.Random(seed)
    out: list[str] = ["Th" + rng.choice(_LOWER) + rng.choice(_LOWER)]
    total = 4
    i = 1
    while total < n_chars:
        if i % 64 == 63:
            t = ".\n" + rng.choice(_UPPER) + rng.choice(_LOWER)
        elif i % 16 == 15:
            t = ". " + rng.choice(_UPPER) + rng.choice(_LOWER)
        else:
            t = " " + rng.choice(_LOWER) + rng.choice(_LOWER) + rng.choice(_LOWER)
        out.append(t)
        total += 4
        i += 1
    text = "".join(out)[:n_chars]
    if text[-1].isspace():
        text = text[:-1] + "x"
    return text


def make_tokens(n_tokens: int, seed: int = 0) -> str:
    return make_text(4 * n_tokens, seed)


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def token_chunks(reply: str, spans: list[str], size: int = 4) -> list[str]:
    """``reply`` cut into deltas as a tokenizer would: each field's text (``spans``, as written in the reply)
    in ``size``-char tokens aligned with its words (" abc"), the markup between them in ``size``-char pieces."""
    pieces: list[str] = []
    pos = 0
    for span in spans:
        i = reply.index(span, pos)
        pieces += split_every(reply[pos:i], size)
        pieces += split_every(span, size)
        pos = i + len(span)
    pieces += split_every(reply[pos:], size)
    return pieces


def exactly(pieces: list[str], n: int) -> list[str]:
    """Adjust a delta list to exactly ``n`` deltas (halve or merge a few at the end), keeping the text."""
    pieces = list(pieces)
    k = len(pieces) - 1
    while len(pieces) < n:
        while len(pieces[k]) < 2:
            k -= 1
        p = pieces[k]
        pieces[k : k + 1] = [p[: len(p) // 2], p[len(p) // 2 :]]
        k -= 1
    while len(pieces) > n:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    return pieces


def _span(adapter: Any, text: str) -> str:
    """How ``text`` appears inside a reply of ``adapter`` (JSON escapes it)."""
    return json.dumps(text, ensure_ascii=False)[1:-1] if isinstance(adapter, JSONAdapter) else text


@dataclass
class Workload:
    """One reply of exactly ``n`` content deltas for ``signature`` in ``adapter``'s format."""

    name: str
    n: int
    signature: Any
    adapter: Any
    reply: str
    chunks: list[str]
    expected: dict[str, str]


def workload(kind: str, n: int) -> Workload:
    """``chat1``: one long ``answer`` field; ``chat5``: five fields a..e; ``json1``: ``answer`` as JSON."""
    if kind == "chat1":
        sig, adapter, fields = js.Signature(SIG1), ChatAdapter(), ["answer"]
    elif kind == "chat5":
        sig, adapter, fields = js.Signature(SIG5), ChatAdapter(), ["a", "b", "c", "d", "e"]
    elif kind == "json1":
        sig, adapter, fields = js.Signature(SIG1), JSONAdapter(), ["answer"]
    else:
        raise ValueError(kind)
    per_field = max(8, (4 * n - len(adapter.format_reply(sig, {f: "" for f in fields}))) // len(fields))
    for _ in range(8):  # converge on a field length that gives about n deltas
        outputs = {f: make_text(per_field, seed=k) for k, f in enumerate(fields)}
        reply = adapter.format_reply(sig, outputs)
        pieces = token_chunks(reply, [_span(adapter, outputs[f]) for f in fields])
        if abs(len(pieces) - n) <= 4:
            break
        per_field = max(8, per_field + 4 * (n - len(pieces)) // len(fields))
    chunks = exactly(pieces, n)
    if "".join(chunks) != reply or len(chunks) != n:
        raise BenchmarkError(f"{kind}: could not cut the reply into {n} deltas")
    expected = adapter.parse(sig, reply)
    if expected != outputs:
        raise BenchmarkError(f"{kind}: format_reply/parse do not round-trip the workload")
    return Workload(kind, n, sig, adapter, reply, chunks, expected)


# ----------------------------------------------------------------------------------------- statistics
@dataclass
class Stat:
    times: list[float] = field(default_factory=list)
    """Wall seconds per run."""
    cpu: list[float] = field(default_factory=list)
    """CPU seconds of this (client) process per run, all its threads: robust to a loaded machine."""

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)


def measure(once: Callable[[], Any], repeats: int, *, warmup: int = 1, budget: float | None = None,
            min_repeats: int = 3, min_time: float | None = None, max_repeats: int = 60) -> Stat:
    """Run ``once()`` (which returns its own elapsed seconds, or ``(wall, cpu)``, having checked its output)
    ``repeats`` times.

    With ``budget`` seconds, fewer repeats (never under ``min_repeats``) are made when one run is long;
    with ``min_time``, more (up to ``max_repeats``) when one run is short.
    """
    for _ in range(warmup):
        once()
    st = Stat()
    cpu = time.process_time
    while len(st.times) < repeats:
        gc.collect()
        c0 = cpu()
        r = once()
        c1 = cpu()
        if isinstance(r, tuple):
            st.times.append(r[0])
            st.cpu.append(r[1])
        else:
            st.times.append(r)
            st.cpu.append(c1 - c0)
        if len(st.times) == 1 and st.times[0] > 0:
            if budget is not None:
                repeats = max(min_repeats, min(repeats, int(budget / st.times[0])))
            if min_time is not None:
                repeats = max(repeats, min(max_repeats, int(min_time / st.times[0])))
    return st


# ------------------------------------------------------------------------------------ end-to-end runs
def chat_body(sig: Any, adapter: Any) -> dict[str, Any]:
    """The request body our LM sends (same messages, stream options and usage request)."""
    return {
        "model": "bench",
        "messages": adapter.format(sig, {"question": QUESTION}),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def check(label: str, got: Any, want: Any) -> None:
    if got != want:
        g, w = str(got), str(want)
        i = next((k for k in range(min(len(g), len(w))) if g[k] != w[k]), min(len(g), len(w)))
        raise BenchmarkError(
            f"{label}: wrong output (lengths {len(g)} vs {len(w)}; first difference at {i}: "
            f"{g[max(0, i - 20):i + 20]!r} vs {w[max(0, i - 20):i + 20]!r})"
        )


class Bench:
    """All end-to-end variants, sharing one event loop (so connection pools stay warm) and one server."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.url = server.url
        self.runner = asyncio.Runner()
        self.loop = self.runner.get_loop()
        self.httpx_client = httpx.AsyncClient(timeout=60)
        self.httpx2_client: Any = None
        try:
            import httpx2

            self.httpx2_client = httpx2.AsyncClient(timeout=60)
        except ImportError:
            pass
        self.openai_client = openai.AsyncOpenAI(base_url=self.url, api_key="x", max_retries=0)
        self.lm = js.LM("bench", base_url=self.url, api_key="x", cache=False)
        js.configure(lm=self.lm, adapter=None)
        self.p1 = js.streamify(js.Predict(SIG1), stream_listeners=[js.StreamListener("answer")])
        self.p1_sync = js.streamify(js.Predict(SIG1), stream_listeners=[js.StreamListener("answer")],
                                    async_streaming=False)
        self.p5 = js.streamify(js.Predict(SIG5), stream_listeners=[js.StreamListener(f) for f in "abcde"])
        self.current: Workload | None = None
        self.bodies: dict[str, Any] = {}

    def close(self) -> None:
        async def aclose() -> None:
            await self.httpx_client.aclose()
            if self.httpx2_client is not None:
                await self.httpx2_client.aclose()
            await self.openai_client.close()

        self.runner.run(aclose())
        self.runner.close()
        js.configure(lm=None, adapter=None)

    def load(self, *workloads: Workload) -> None:
        """Give the server these replies at once; each goes to the requests carrying its prompt."""
        self.server.set_replies([(chat_body(w.signature, w.adapter)["messages"][0]["content"], w.chunks)
                                 for w in workloads])
        self.loaded = list(workloads)
        self.use(workloads[0])

    def use(self, w: Workload) -> None:
        """Run the next variants on ``w`` (loading it at the server if it is not there yet)."""
        if w not in getattr(self, "loaded", ()):
            self.load(w)
            return
        self.current = w
        self.body = chat_body(w.signature, w.adapter)

    # -- (a) transport floor: httpx + aiter_lines + jiter ------------------------------------------
    async def _floor(self, client: Any, ttft: list[float] | None = None) -> tuple[float, str]:
        parts: list[str] = []
        append = parts.append
        loads = jiter.from_json
        t0 = time.perf_counter()
        async with client.stream("POST", self.url + "/chat/completions", json=self.body,
                                 headers={"Authorization": "Bearer x"}) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].lstrip()
                if payload == "[DONE]":
                    continue  # read on to the end of the body, so the connection goes back to the pool
                data = loads(payload.encode())
                choices = data.get("choices")
                if choices:
                    delta = choices[0].get("delta")
                    if delta:
                        text = delta.get("content")
                        if text:
                            if ttft is not None and not ttft:
                                ttft.append(time.perf_counter() - t0)
                            append(text)
        return time.perf_counter() - t0, "".join(parts)

    def floor(self) -> float:
        w = self.current
        dt, text = self.runner.run(self._floor(self.httpx_client))
        check(f"(a) floor {w.name} N={w.n}", text, w.reply)
        return dt

    def floor2(self) -> float:
        w = self.current
        dt, text = self.runner.run(self._floor(self.httpx2_client))
        check(f"(a') httpx2 floor {w.name} N={w.n}", text, w.reply)
        return dt

    # -- (b) the openai client's typed stream ---------------------------------------------------------
    async def _typed(self, ttft: list[float] | None = None) -> tuple[float, str]:
        parts: list[str] = []
        body = self.body
        t0 = time.perf_counter()
        stream = await self.openai_client.chat.completions.create(
            model=body["model"], messages=body["messages"], stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if chunk.choices:
                text = chunk.choices[0].delta.content
                if text:
                    if ttft is not None and not ttft:
                        ttft.append(time.perf_counter() - t0)
                    parts.append(text)
        return time.perf_counter() - t0, "".join(parts)

    def typed(self) -> float:
        w = self.current
        dt, text = self.runner.run(self._typed())
        check(f"(b) openai typed {w.name} N={w.n}", text, w.reply)
        return dt

    # -- (d0) our LM read path alone: LM.astream with an on_content hook -------------------------------
    async def _lm_only(self) -> tuple[float, str]:
        parts: list[str] = []
        t0 = time.perf_counter()
        rec = await self.lm.astream(self.body["messages"], on_content=parts.append)
        dt = time.perf_counter() - t0
        if rec.text != "".join(parts):
            raise BenchmarkError("(d0) LM.astream: record text differs from the hooked deltas")
        return dt, rec.text

    def lm_only(self) -> float:
        w = self.current
        dt, text = self.runner.run(self._lm_only())
        check(f"(d0) LM.astream {w.name} N={w.n}", text, w.reply)
        return dt

    # -- (d)/(e)/(g) streamify, async -------------------------------------------------------------------
    async def _ours(self, program: Any, ttft: list[float] | None = None) -> tuple[float, dict[str, str], Any]:
        parts: dict[str, list[str]] = {}
        lasts: dict[str, int] = {}
        final = None
        t0 = time.perf_counter()
        async for x in program(question=QUESTION):
            if type(x) is js.StreamResponse:
                if ttft is not None and not ttft:
                    ttft.append(time.perf_counter() - t0)
                parts.setdefault(x.signature_field_name, []).append(x.chunk)
                if x.is_last_chunk:
                    lasts[x.signature_field_name] = lasts.get(x.signature_field_name, 0) + 1
            else:
                final = x
        dt = time.perf_counter() - t0
        if any(v != 1 for v in lasts.values()) or set(lasts) != set(parts):
            raise BenchmarkError(f"is_last_chunk must be set exactly once per field, got {lasts}")
        return dt, {k: "".join(v) for k, v in parts.items()}, final

    def _check_ours(self, label: str, fields: dict[str, str], final: Any) -> None:
        w = self.current
        check(f"{label} {w.name} N={w.n} chunks", fields, w.expected)
        if not isinstance(final, js.Prediction):
            raise BenchmarkError(f"{label}: the stream did not end with a Prediction (got {type(final).__name__})")
        check(f"{label} {w.name} N={w.n} prediction", {k: final[k] for k in w.expected}, w.expected)

    def ours(self) -> float:
        dt, fields, final = self.runner.run(self._ours(self.p1))
        self._check_ours("(d) streamify", fields, final)
        return dt

    def ours5(self) -> float:
        dt, fields, final = self.runner.run(self._ours(self.p5))
        self._check_ours("(e) streamify x5", fields, final)
        return dt

    def ours_json(self) -> float:
        js.configure(adapter="json")
        try:
            dt, fields, final = self.runner.run(self._ours(self.p1))
        finally:
            js.configure(adapter=None)
        self._check_ours("(g) streamify JSON", fields, final)
        return dt

    # -- (f) streamify, sync (apply_sync_streaming) --------------------------------------------------
    def _ours_sync(self, ttft: list[float] | None = None) -> tuple[float, dict[str, str], Any]:
        parts: list[str] = []
        final = None
        t0 = time.perf_counter()
        for x in self.p1_sync(question=QUESTION):
            if type(x) is js.StreamResponse:
                if ttft is not None and not ttft:
                    ttft.append(time.perf_counter() - t0)
                parts.append(x.chunk)
            else:
                final = x
        return time.perf_counter() - t0, {"answer": "".join(parts)}, final

    def ours_sync(self) -> float:
        dt, fields, final = self._ours_sync()
        self._check_ours("(f) streamify sync", fields, final)
        return dt


def measure_interleaved(bench: Bench, variants: list[tuple[str, str, str, str]], wls: dict[str, Workload], n: int,
                        repeats: int, budget: float) -> dict[tuple[str, int], Stat]:
    """Round after round, each variant runs once, so a change in the machine's load hits them all alike.

    A variant whose first run is long stops after ``budget`` seconds' worth of runs (at least 3 runs,
    or 1 at N > 5,000); at N <= 5,000 every variant is warmed up once first.
    """
    stats = {key: Stat() for key, *_ in variants}
    caps = {key: repeats for key, *_ in variants}
    cpu = time.process_time
    if n <= 5_000:
        for _key, _label, kind, meth in variants:
            bench.use(wls[kind])
            getattr(bench, meth)()
    for r in range(repeats):
        for key, _label, kind, meth in variants:
            st = stats[key]
            if len(st.times) >= caps[key]:
                continue
            bench.use(wls[kind])
            gc.collect()
            c0 = cpu()
            st.times.append(getattr(bench, meth)())
            st.cpu.append(cpu() - c0)
            if r == 0:
                caps[key] = max(3 if n <= 5_000 else 1, min(repeats, int(budget / st.times[0])))
    return {(key, n): st for key, st in stats.items()}


VARIANTS: list[tuple[str, str, str, str]] = [
    # key, label, workload kind, Bench method
    ("a", "(a) transport floor: httpx + aiter_lines + jiter", "chat1", "floor"),
    ("a2", "(a') same floor on httpx2 (the openai client's transport)", "chat1", "floor2"),
    ("b", "(b) openai typed `async for chunk in stream`", "chat1", "typed"),
    ("d0", "(d0) js.LM.astream alone (our read path, no program)", "chat1", "lm_only"),
    ("d", "(d) streamify(Predict), 1 listener, async", "chat1", "ours"),
    ("e", "(e) streamify, 5 fields / 5 listeners", "chat5", "ours5"),
    ("f", "(f) streamify sync (apply_sync_streaming)", "chat1", "ours_sync"),
    ("g", "(g) streamify, JSONAdapter", "json1", "ours_json"),
]


# ------------------------------------------------------------------------------------- field parsers
DELTA_TOKEN = "1 token (4 chars)"
DELTA_SHIFTED = "4 chars ending in a space"
DELTA_40 = "40 chars"

def make_block(n_tokens: int, seed: int = 0) -> str:
    """``n_tokens`` 4-char tokens, the first one space-led too (" Thx abc. Ab..."): ``4 * n_tokens`` chars."""
    rng = random.Random(seed)
    out = [" Th" + rng.choice(_LOWER)]
    for i in range(1, n_tokens):
        if i % 64 == 63:
            out.append(".\n" + rng.choice(_UPPER) + rng.choice(_LOWER))
        elif i % 16 == 15:
            out.append(". " + rng.choice(_UPPER) + rng.choice(_LOWER))
        else:
            out.append(" " + rng.choice(_LOWER) + rng.choice(_LOWER) + rng.choice(_LOWER))
    return "".join(out)


def parser_inputs(adapter: Any, sig: Any, tokens: int, block_tokens: int = 1_000) -> tuple[str, str, list[tuple[str, list[str]]]]:
    """``(text, reply, [(mode, deltas)])`` for one field of ``tokens`` tokens.

    The field text repeats one block of ``block_tokens`` tokens, and the deltas are the *same* string
    objects on every repetition, so a 64k-token input occupies no more memory than a 1k one: the
    µs/token ratio then shows the parser's own scaling, not the CPU caches filling up with input.
    """
    reps = max(1, tokens // block_tokens)
    block = make_block(min(tokens, block_tokens), seed=7)
    text = (block * reps)[1:]
    reply = adapter.format_reply(sig, {"answer": text})
    span = _span(adapter, text)
    i0 = reply.index(span)
    prefix, suffix = reply[:i0], reply[i0 + len(span):]
    eblock = _span(adapter, block)  # the block as written in the reply (JSON escapes newlines)
    tok = split_every(eblock, 4)
    shifted = split_every(eblock[1:] + eblock[0], 4)  # every delta ends where a word starts: "hxy "
    modes = [
        # tokens as OpenAI-style tokenizers cut them: " abc", ". Ab" (the common case)
        (DELTA_TOKEN, split_every(prefix, 4) + [tok[0][1:]] + tok[1:] + tok * (reps - 1) + split_every(suffix, 4)),
        # the same 4-char deltas shifted by one character: most deltas end in a space ("bc d")
        (DELTA_SHIFTED, split_every(prefix, 4) + shifted * (reps - 1) + shifted[:-1] + [shifted[-1][:-1]]
         + split_every(suffix, 4)),
        # Gemini-style multi-token chunks
        (DELTA_40, split_every(reply, 40)),
    ]
    modes = [(mode, [p for p in pieces if p]) for mode, pieces in modes]
    for mode, pieces in modes:
        if "".join(pieces) != reply:
            raise BenchmarkError(f"parser input {mode}: the deltas do not add up to the reply")
    return text, reply, modes


def _parser_runner(name: str, adapter: Any, sig: Any, text: str, pieces: list[str], tokens: int, label: str,
                   nwin: int = 16) -> tuple[Callable[[], tuple[float, float]], list[list[float]]]:
    """One timed, checked pass of a fresh parser over ``pieces``; also times ``nwin`` windows of deltas."""
    bounds = [round(i * len(pieces) / nwin) for i in range(nwin + 1)]
    segments = [pieces[bounds[i] : bounds[i + 1]] for i in range(nwin)]
    per_token = len(pieces) / tokens  # deltas per token, to express window times per token
    windows: list[list[float]] = [[] for _ in range(nwin)]

    def once() -> tuple[float, float]:
        # Consume each feed's deltas at once, as the router does: keeping every FieldDelta alive would
        # make the garbage collector's full passes, not the parser, grow with K.
        parser = adapter.field_parser(sig)
        feed = parser.feed
        got: list[str] = []
        keep = got.append
        nlast = 0
        clock = time.perf_counter
        c0 = time.process_time()
        t0 = prev = clock()
        for k, seg in enumerate(segments):
            for p in seg:
                for d in feed(p):
                    keep(d.text)
                    nlast += d.last
            now = clock()
            windows[k].append((now - prev) / max(1, len(seg)) * per_token)
            prev = now
        for d in parser.finish():
            keep(d.text)
            nlast += d.last
        dt = clock() - t0
        dc = time.process_time() - c0
        check(f"parser {name} {tokens} tokens {label}", "".join(got), text)
        if nlast != 1:
            raise BenchmarkError(f"parser {name}: {nlast} last deltas")
        return dt, dc

    return once, windows


def parser_bench(adapters: list[tuple[str, Any]], sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Each (adapter, delta mode): the field sizes run interleaved, round after round, so a change in the
    machine's load hits every size alike; small sizes run several times per round."""
    sig = js.Signature(SIG1)
    rows: list[dict[str, Any]] = []
    for name, adapter in adapters:
        inputs = {}
        for tokens in sizes:
            text, reply, modes = parser_inputs(adapter, sig, tokens)
            if adapter.parse(sig, reply)["answer"] != text:
                raise BenchmarkError(f"{name}: format_reply/parse do not round-trip")
            inputs[tokens] = (text, dict(modes))
        for label in (DELTA_TOKEN, DELTA_SHIFTED, DELTA_40):
            cells = {}
            for tokens in sizes:
                text, modes = inputs[tokens]
                once, windows = _parser_runner(name, adapter, sig, text, modes[label], tokens, label)
                once()  # warm-up
                cells[tokens] = (once, windows, Stat())
            for _ in range(repeats):
                for tokens in sizes:
                    once, _windows, st = cells[tokens]
                    for _ in range(min(8, max(1, sizes[-1] // tokens // 4))):
                        gc.collect()
                        dt, dc = once()
                        st.times.append(dt)
                        st.cpu.append(dc)
            for tokens in sizes:
                _once, windows, st = cells[tokens]
                q = len(windows) // 4
                early = statistics.median(v for w in windows[:q] for v in w)
                late = statistics.median(v for w in windows[-q:] for v in w)
                rows.append({"adapter": name, "delta": label, "tokens": tokens, "feeds": len(inputs[tokens][1][label]),
                             "stat": st, "us_per_token": st.median / tokens * 1e6,
                             "typical_us_per_token": statistics.median(v for w in windows for v in w) * 1e6,
                             "cpu_us_per_token": st.cpu_median / tokens * 1e6,
                             "late_early": late / early})
    return rows


# ----------------------------------------------------------------------------------------------- TTFT
def ttft_bench(bench: Bench, runs: int) -> dict[str, Stat]:
    """Request start -> first content delta (floor, openai) or first StreamResponse (ours), short reply."""
    sig, adapter = js.Signature(SIG1), ChatAdapter()
    text = make_text(80, seed=7)
    reply = adapter.format_reply(sig, {"answer": text})
    # The first delta carries the header *and* the first answer text, so every variant times the same delta.
    head = "[[ ## answer ## ]]\n"
    first = head + text[:4]
    chunks = [first, *split_every(reply[len(first):], 4)]
    w = Workload("ttft", len(chunks), sig, adapter, reply, chunks, {"answer": text})
    bench.use(w)
    out = {k: Stat() for k in ("a", "a_new", "b", "d", "f")}

    def run_floor() -> float:
        t: list[float] = []
        _, got = bench.runner.run(bench._floor(bench.httpx_client, t))
        check("ttft floor", got, reply)
        return t[0]

    # A client that keeps no idle connection: every request connects anew. (It must not share the pooled
    # client: a request that gives its connection up would leave the next pooled one to connect anew.)
    fresh = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))

    def run_floor_new() -> float:
        t: list[float] = []
        _, got = bench.runner.run(bench._floor(fresh, t))
        check("ttft floor", got, reply)
        return t[0]

    def run_typed() -> float:
        t: list[float] = []
        _, got = bench.runner.run(bench._typed(t))
        check("ttft typed", got, reply)
        return t[0]

    def run_ours() -> float:
        t: list[float] = []
        _, fields, final = bench.runner.run(bench._ours(bench.p1, t))
        bench._check_ours("ttft (d)", fields, final)
        return t[0]

    def run_sync() -> float:
        t: list[float] = []
        _, fields, final = bench._ours_sync(t)
        bench._check_ours("ttft (f)", fields, final)
        return t[0]

    fns = {"a": run_floor, "a_new": run_floor_new, "b": run_typed, "d": run_ours, "f": run_sync}
    for fn in fns.values():  # warm up
        fn()
        fn()
    try:
        for _ in range(runs):  # interleaved, so drift hits every variant alike
            for k, fn in fns.items():
                out[k].times.append(fn())
    finally:
        bench.runner.run(fresh.aclose())
    return out


class _Marks:
    """Timestamps of the first pass through a few points of one request (benchmark-side wrappers only)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def mark(self, name: str) -> None:
        if name not in self.t:
            self.t[name] = time.perf_counter()

    def wrap_async(self, owner: Any, attr: str, before: str, after: str | None = None) -> None:
        orig = getattr(owner, attr)
        marks = self

        async def wrapper(*a: Any, **k: Any) -> Any:
            marks.mark(before)
            r = await orig(*a, **k)
            if after:
                marks.mark(after)
            return r

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def wrap_sync(self, owner: Any, attr: str, before: str) -> None:
        orig = getattr(owner, attr)
        marks = self

        def wrapper(*a: Any, **k: Any) -> Any:
            marks.mark(before)
            return orig(*a, **k)

        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, orig))

    def undo(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()


def ttft_breakdown(bench: Bench, runs: int) -> list[tuple[str, Stat, Stat | None]]:
    """Where (d)'s time to first StreamResponse goes, next to the floor's, from timestamps taken by wrappers
    around the LM call, the HTTP client's ``send`` and the first JSON parse (the engine is not modified)."""
    import jupyter_stream._lm as lm_mod

    m = _Marks()
    try:
        import httpx2

        m.wrap_async(httpx2.AsyncClient, "send", "send", "headers")
    except ImportError:
        return []
    m.wrap_async(httpx.AsyncClient, "send", "send", "headers")
    m.wrap_async(js.LM, "astream", "astream")
    if hasattr(lm_mod, "_loads"):
        m.wrap_sync(lm_mod, "_loads", "line")
    ours: list[dict[str, float]] = []
    floor: list[dict[str, float]] = []
    try:
        for i in range(runs + 3):
            m.t.clear()
            t: list[float] = []
            t0 = time.perf_counter()
            bench.runner.run(bench._floor(bench.httpx_client, t))
            row = {k: v - t0 for k, v in m.t.items()}
            row["first"] = t[0]
            if i >= 3:
                floor.append(row)
            m.t.clear()
            t = []
            t0 = time.perf_counter()
            bench.runner.run(bench._ours(bench.p1, t))
            row = {k: v - t0 for k, v in m.t.items()}
            row["first"] = t[0]
            if i >= 3:
                ours.append(row)
    finally:
        m.undo()

    def stat(rows: list[dict[str, float]], a: str, b: str) -> Stat | None:
        vals = [r[b] - r[a] for r in rows if a in r and b in r]
        return Stat(vals) if vals else None

    zero = [{**r, "start": 0.0} for r in ours]
    fzero = [{**r, "start": 0.0} for r in floor]
    out = [
        ("program call -> LM.astream (streamify, Predict, prompt formatting)", stat(zero, "start", "astream"), None),
        ("LM.astream -> HTTP send (openai client: param transform, request build); floor: start -> send",
         stat(zero, "astream", "send"), stat(fzero, "start", "send")),
        ("HTTP send -> response headers (connect if needed, server, loopback)", stat(zero, "send", "headers"),
         stat(fzero, "send", "headers")),
    ]
    if any("line" in r for r in ours):
        out.append(("response headers -> first SSE line parsed", stat(zero, "headers", "line"), None))
        out.append(("first SSE line parsed -> first StreamResponse at the consumer", stat(zero, "line", "first"),
                    None))
    out.append(("response headers -> first delta at the consumer", stat(zero, "headers", "first"),
                stat(fzero, "headers", "first")))
    out.append(("total", stat(zero, "start", "first"), stat(fzero, "start", "first")))
    return out


# ------------------------------------------------------------------------------------------------ DSPy
def dspy_bench(server: ServerProcess, sizes: list[int], repeats: int, parser_sizes: list[int]) -> dict[str, Any] | None:
    try:
        import dspy  # noqa: F401
    except ImportError:
        return None
    from _dspy import run_dspy

    return run_dspy(server, sizes, repeats, parser_sizes, workload=workload, measure=measure,
                    make_tokens=make_tokens, split_every=split_every, question=QUESTION)


def bridge_bench(server: ServerProcess, *, quick: bool, smoke: bool) -> dict[str, Any] | None:
    """Section 9 (``_dspy.run_bridge``): a DSPy program through our bridge vs DSPy's streamify and its raw
    floor; None when ``import dspy`` fails."""
    try:
        import dspy  # noqa: F401
    except ImportError:
        return None
    from _dspy import run_bridge

    return run_bridge(server, quick=quick, smoke=smoke)


# -------------------------------------------------------------------------------------------- reporting
def _ver(pkg: str) -> str:
    try:
        return _md.version(pkg)
    except _md.PackageNotFoundError:
        return "-"


def machine_info() -> list[tuple[str, str]]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--", "../jupyter_stream"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        rev = (rev + (" (jupyter_stream/ has uncommitted changes)" if dirty else "")) or "-"
    except (OSError, subprocess.SubprocessError):
        rev = "-"
    return [
        ("date", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("OS", platform.platform()),
        ("Python", platform.python_version() + f" ({platform.python_implementation()})"),
        ("openai", _ver("openai")),
        ("httpx / httpx2", f"{_ver('httpx')} / {_ver('httpx2')}"),
        ("jiter", _ver("jiter")),
        ("jupyter_stream", f"{_ver('jupyter_stream')} @ {rev}"),
        ("dspy", _ver("dspy")),
        ("load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_s(x: float) -> str:
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 0.001:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def fmt_ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def save_json(path: str, info: list[tuple[str, str]], e2e: dict[tuple[str, int], Stat], sizes: list[int],
              prows: list[dict[str, Any]], ttft: dict[str, Stat], dspy_res: dict[str, Any] | None,
              extra: dict[str, Any]) -> None:
    """The raw numbers (every run), so plots can be redrawn elsewhere: ``run.py --plot-from FILE``."""
    doc = {
        "machine": dict(info),
        "sizes": sizes,
        "variants": {k: label for k, label, _kind, _m in VARIANTS},
        "e2e": [{"variant": k, "n": n, "wall": st.times, "cpu": st.cpu} for (k, n), st in e2e.items()],
        "parser": [{**{k: v for k, v in r.items() if k != "stat"}, "wall": r["stat"].times, "cpu": r["stat"].cpu}
                   for r in prows],
        "ttft": {k: st.times for k, st in ttft.items()},
        "dspy_e2e": ({str(n): {"wall": st.times, "cpu": st.cpu} for n, st in dspy_res["e2e"].items()}
                     if dspy_res else {}),
        **extra,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)


def plot_from(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    e2e = {(r["variant"], r["n"]): Stat(r["wall"], r["cpu"]) for r in doc["e2e"]}
    prows = [{**r, "stat": Stat(r["wall"], r["cpu"])} for r in doc["parser"]]
    dspy_e2e = {int(n): Stat(v["wall"], v["cpu"]) for n, v in doc.get("dspy_e2e", {}).items()}
    suffix = os.path.splitext(os.path.basename(path))[0].removeprefix("results")
    return plots(e2e, doc["sizes"], prows, suffix, {"e2e": dspy_e2e} if dspy_e2e else None, doc.get("bridge"))


def plots(e2e: dict[tuple[str, int], Stat], sizes: list[int], prows: list[dict[str, Any]], suffix: str,
          dspy_res: dict[str, Any] | None, bridge: dict[str, Any] | None = None) -> list[str]:
    """The PNGs of the sections that ran (a section that did not run keeps its old plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    if e2e:
        written.append(plot_e2e(plt, e2e, sizes, suffix, dspy_res))
    if prows:
        written.append(plot_parsers(plt, prows, suffix))
    if bridge:
        written.append(plot_bridge(plt, bridge, suffix))
    return written


def plot_e2e(plt: Any, e2e: dict[tuple[str, int], Stat], sizes: list[int], suffix: str,
             dspy_res: dict[str, Any] | None) -> str:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for key, label, _kind, _m in VARIANTS:
        xs = [n for n in sizes if (key, n) in e2e]
        if xs:
            ax.plot(xs, [e2e[(key, n)].median for n in xs], marker="o", label=label)
    if dspy_res and dspy_res.get("e2e"):
        xs = sorted(dspy_res["e2e"])
        ax.plot(xs, [dspy_res["e2e"][n].median for n in xs], marker="s", linestyle="--",
                label="DSPy streamify, 1 listener")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("content deltas (N)")
    ax.set_ylabel("wall time per stream (s, median)")
    ax.set_title("End to end: loopback server in its own process")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    path = os.path.join(HERE, f"end_to_end{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_parsers(plt: Any, prows: list[dict[str, Any]], suffix: str) -> str:
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for adapter in sorted({r["adapter"] for r in prows}):
        for delta, style in ((DELTA_TOKEN, "-"), (DELTA_SHIFTED, ":"), (DELTA_40, "--")):
            rs = [r for r in prows if r["adapter"] == adapter and r["delta"] == delta]
            if rs:
                ax.plot([r["tokens"] for r in rs], [r.get("typical_us_per_token", r["us_per_token"]) for r in rs],
                        marker="o", linestyle=style, label=f"{adapter}, deltas of {delta}")
    ax.set_xscale("log")
    ax.set_xlabel("field size (tokens)")
    ax.set_ylabel("µs per token (typical: median of the timing windows)")
    ax.set_ylim(bottom=0)
    ax.set_title("Incremental field parsers alone (flat = no growth with the field's size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = os.path.join(HERE, f"parser{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bridge(plt: Any, bridge: dict[str, Any], suffix: str) -> str:
    """Section 9 as bars: µs per delta of (a), (b), (c) (median run, whiskers from the fastest to the slowest
    run), with the limits the targets put on (a) (0.5x (b), 1.3x (c)) as dashed lines."""
    n = bridge["n"]
    keys = list(bridge["variants"])
    runs = {k: [t / n * 1e6 for t in bridge["runs"][k]["wall"]] for k in keys}
    med = [statistics.median(runs[k]) for k in keys]
    lo = [m - min(runs[k]) for m, k in zip(med, keys)]
    hi = [max(runs[k]) - m for m, k in zip(med, keys)]
    names = {"a": "(a) js.streamify\n(DSPy program, bridge)", "b": "(b) dspy.streamify\n+ StreamListener",
             "c": "(c) DSPy raw floor\n(no-op send_stream)"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bars = ax.bar([names.get(k, k) for k in keys], med, yerr=[lo, hi], capsize=4,
                  color=["C0", "C1", "C2"][: len(keys)])
    for bar, m, up in zip(bars, med, hi):  # the value above the whisker
        ax.annotate(f"{m:.1f}", (bar.get_x() + bar.get_width() / 2, m + up), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    us = dict(zip(keys, med))
    for q, color in (("a/b", "C1"), ("a/c", "C2")):
        limit, of = bridge.get("limits", {}).get(q), q.split("/")[1]
        if limit and of in us:
            ax.axhline(limit * us[of], color=color, linestyle="--", linewidth=1,
                       label=f"target for (a): <= {limit:g}x ({of})")
    ax.set_ylabel("µs per delta (wall, median run)")
    ax.set_title(f"A DSPy Predict streamed, {n:,} one-token deltas")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    path = os.path.join(HERE, f"bridge{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N and fewer repeats")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: proves the benchmark runs (CI)")
    ap.add_argument("--dspy", action="store_true", help="also measure DSPy (needs `import dspy`: benchmarks/setup.sh)")
    ap.add_argument("--out", help="where to write the markdown (default benchmarks/RESULTS.md; "
                                  "RESULTS-quick.md with --quick, RESULTS-dspy.md with --dspy); the raw numbers "
                                  "go beside it (FILE.json), not to benchmarks/results*.json")
    ap.add_argument("--only", help="comma-separated sections to run: " + ",".join(SECTIONS) + " (default: all)")
    ap.add_argument("--plot-from", metavar="JSON", help="only draw the plots from a saved results*.json")
    args = ap.parse_args(argv)
    if args.plot_from:
        written = plot_from(args.plot_from)
        print("\n".join(written) if written else "matplotlib is not importable: no plots")
        return 0 if written else 1

    quick = args.quick or args.smoke
    sizes = [200] if args.smoke else [500, 5_000] if quick else [500, 5_000, 50_000]
    repeats = 1 if args.smoke else 5 if quick else 7
    budget = 0.2 if args.smoke else 1.5 if quick else 6.0  # seconds per end-to-end cell: long cells get fewer repeats
    psizes = [1_000] if args.smoke else [1_000, 16_000] if quick else [1_000, 16_000, 64_000]
    ttft_runs = 3 if args.smoke else 30
    suffix = ("-quick" if quick else "") + ("-dspy" if args.dspy else "")
    out_path = args.out or os.path.join(HERE, f"RESULTS{suffix}.md")
    sections = set((args.only or ",".join(SECTIONS)).split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.only and "bridge" in sections and not args.dspy:
        ap.error("the bridge section streams a DSPy program: add --dspy (in benchmarks/.venv, see benchmarks/setup.sh)")
    t_start = time.perf_counter()

    info = machine_info()
    md: list[str] = [f"# jupyter_stream benchmarks{' (--quick)' if quick else ''}", ""]
    md.append(f"`python benchmarks/run.py{' --quick' if quick else ''}{' --dspy' if args.dspy else ''}`. "
              f"Median, min and max over repeats; every run checks its output.")
    md.append("")
    md.append(table(["machine", ""], [[k, v] for k, v in info], "ll"))
    md.append("")
    targets: list[tuple[str, str, bool]] = []

    def emit(s: str = "") -> None:
        md.append(s)
        print(s, flush=True)

    print("\n".join(md), flush=True)

    e2e: dict[tuple[str, int], Stat] = {}
    prows: list[dict[str, Any]] = []
    ttft: dict[str, Stat] = {}
    dspy_res: dict[str, Any] | None = None
    extra: dict[str, Any] = {}  # the raw numbers of sections 4, 6-10

    def section(name: str, res: dict[str, Any]) -> None:
        for line in res["markdown"]:
            emit(line)
        emit()
        targets.extend(res["targets"])
        extra[name] = res["raw"]

    with ServerProcess() as server:
        bench = Bench(server)
        try:
            if "e2e" in sections:
                variants = [v for v in VARIANTS if not (v[0] == "a2" and bench.httpx2_client is None)]
                # Warm every variant once on a small reply (connections, lazy imports, the engine loop).
                wl = {k: workload(k, 200) for k in ("chat1", "chat5", "json1")}
                bench.load(*wl.values())
                for _key, _label, kind, meth in variants:
                    bench.use(wl[kind])
                    getattr(bench, meth)()
                for n in sizes:
                    wls = {k: workload(k, n) for k in ("chat1", "chat5", "json1")}
                    bench.load(*wls.values())
                    e2e.update(measure_interleaved(bench, variants, wls, n, repeats, budget))
                emit("## 1. End to end")
                emit()
                emit(f"A chat-adapter reply of N content deltas (~4 characters each) from the loopback demo server "
                     f"in its own process, signature `{SIG1}` with one long `answer` field ((e): `{SIG5}`, "
                     f"the N deltas spread over five fields; (g): the same reply written by the JSONAdapter). "
                     f"Deltas are cut like tokens (\" abc\", \". Ab\"; the markup in 4-char pieces). "
                     f"Wall time per stream, request to last item; × (a): median over the floor's median. "
                     f"CPU: this process's CPU time per stream (all threads), which a loaded machine inflates "
                     f"far less than wall time. Long cells get fewer runs (a budget of {budget:g} s per cell).")
                emit()
                rows = []
                for n in sizes:
                    base, cbase = e2e[("a", n)].median, e2e[("a", n)].cpu_median
                    for key, label, _kind, _m in VARIANTS:
                        st = e2e.get((key, n))
                        if st is None:
                            continue
                        rows.append([label, f"{n:,}", str(len(st.times)), fmt_s(st.median), fmt_s(st.min),
                                     fmt_s(st.max), f"{st.median / n * 1e6:.1f}", f"{st.median / base:.2f}",
                                     f"{st.cpu_median / n * 1e6:.1f}", f"{st.cpu_median / cbase:.2f}"])
                emit(table(["variant", "N", "runs", "median", "min", "max", "µs/delta", "× (a)",
                            "CPU µs/delta", "CPU × (a)"], rows))
                emit()
                n_t = 5_000
                if ("d", n_t) in e2e:
                    d, a = e2e[("d", n_t)], e2e[("a", n_t)]
                    r = d.median / a.median
                    targets.append(("(d) <= 2x (a) at N=5,000 (wall medians)",
                                    f"{r:.2f}x (min/min {d.min / a.min:.2f}x, CPU {d.cpu_median / a.cpu_median:.2f}x)",
                                    r <= 2.0))

            if "parser" in sections:
                prows = parser_bench([("chat", ChatAdapter()), ("json", JSONAdapter()), ("xml", XMLAdapter())],
                                     psizes, 3 if quick else 5)
                emit("## 2. Field parsers alone")
                emit()
                emit("Each adapter's incremental parser (`field_parser(sig).feed` then `finish`, the deltas consumed "
                     "as they come) on one `answer` field of K tokens (reply built with `format_reply`), fed in "
                     "deltas of one token (4 chars, cut at word starts: \" abc\"), of 4 chars shifted by one so "
                     "that most deltas end in a space (\"bc d\"), or of 40 characters. The field repeats one "
                     "1k-token block whose deltas are the same string objects every time, so the input's memory "
                     "does not grow with K. median/min/max: wall time per run; µs/token: from the median run. "
                     "Each run is also timed in 16 windows of deltas: typical µs/token is the median over all "
                     "windows of all runs (a window hit by another process's burst is an outlier, not the median), "
                     "and late/early is the median of the last four windows over the first four: above 1 if a "
                     "token costs more late in a long field. Ratios: at this size over at 1k tokens.")
                emit()
                rows = []
                for r in prows:
                    st = r["stat"]
                    small = next(x for x in prows if x["adapter"] == r["adapter"] and x["delta"] == r["delta"]
                                 and x["tokens"] == psizes[0])
                    ratio = r["us_per_token"] / small["us_per_token"]
                    tratio = r["typical_us_per_token"] / small["typical_us_per_token"]
                    first = r["tokens"] == psizes[0]
                    rows.append([r["adapter"], r["delta"], f"{r['tokens']:,}", f"{r['feeds']:,}", str(len(st.times)),
                                 fmt_s(st.median), fmt_s(st.min), fmt_s(st.max), f"{r['us_per_token']:.3f}",
                                 f"{r['typical_us_per_token']:.3f}", "" if first else f"{ratio:.2f}",
                                 "" if first else f"{tratio:.2f}", f"{r['late_early']:.2f}"])
                    if r["tokens"] == psizes[-1]:
                        targets.append((f"parser {r['adapter']}, deltas of {r['delta']}: µs/token at "
                                        f"{psizes[-1] // 1000}k within 25% of 1k (typical)",
                                        f"{tratio:.2f} (of wall medians {ratio:.2f}; late/early in the "
                                        f"{psizes[-1] // 1000}k field {r['late_early']:.2f})", tratio <= 1.25))
                emit(table(["adapter", "deltas", "tokens", "feeds", "runs", "median", "min", "max", "µs/token",
                            "typical µs/token", "ratio /1k", "typical ratio /1k", "late/early"], rows,
                           "llrrrrrrrrrrr"))
                emit()

            if "ttft" in sections:
                ttft = ttft_bench(bench, ttft_runs)
                emit("## 3. Time to first token")
                emit()
                emit(f"A short reply ({len(make_text(80, 7)) // 4 + 5} deltas) whose first delta holds the "
                     f"`[[ ## answer ## ]]` header and the first answer token. From the start of the request "
                     f"(for ours: calling the streamified program, prompt formatting included) to the first "
                     f"content delta (a, b) or the first `StreamResponse` (d, f). {ttft_runs} runs each, "
                     f"interleaved; times in ms.")
                emit()
                labels = {"a": "(a) transport floor, first delta (pooled connection, like ours)",
                          "a_new": "(a) floor on a new connection per request",
                          "b": "(b) openai typed, first chunk",
                          "d": "(d) streamify async, first StreamResponse",
                          "f": "(f) streamify sync, first StreamResponse"}
                floor_key = min(("a", "a_new"), key=lambda k: ttft[k].median)
                base = ttft[floor_key].median
                rows = [[labels[k] + (" **← floor**" if k == floor_key else ""), fmt_ms(st.median), fmt_ms(st.min),
                         fmt_ms(st.max), f"{(st.median - base) * 1e3:+.2f}"] for k, st in ttft.items()]
                emit(table(["variant", "median ms", "min ms", "max ms", "Δ vs floor ms"], rows))
                emit()
                emit("The floor is the faster of the two (a) rows.")
                emit()
                parts = ttft_breakdown(bench, ttft_runs)
                if parts:
                    emit("Where the time goes (medians over "
                         f"{ttft_runs} more runs of (d) and of the floor (a), alternating; ms). Only the first and "
                         "last two rows are the client's own work; the send -> headers row is the server and the "
                         "loopback, and swings with the machine's load:")
                    emit()
                    rows = [[label, fmt_ms(o.median) if o else "", fmt_ms(f.median) if f else ""]
                            for label, o, f in parts]
                    emit(table(["step", "(d) ms", "(a) floor ms"], rows, "lrr"))
                    emit()
                    client = sum(o.median for label, o, _f in parts
                                 if o and label.startswith(("program call", "LM.astream", "response headers -> first d")))
                    fclient = sum(f.median for label, _o, f in parts
                                  if f and label.startswith(("LM.astream", "response headers -> first d")))
                    emit(f"Client-side work before the first token (the rows other than send -> headers): "
                         f"(d) {client * 1e3:.2f} ms, floor {fclient * 1e3:.2f} ms, "
                         f"difference {(client - fclient) * 1e3:+.2f} ms.")
                    emit()
                    targets.append(("TTFT: client-side work of (d) above the floor's (load-independent view)",
                                    f"{(client - fclient) * 1e3:+.2f} ms", client - fclient < 0.001))
                d = (ttft["d"].median - base) * 1e3
                targets.append(("TTFT: (d) < 1 ms above the floor (medians)",
                                f"{d:+.2f} ms (min/min {(ttft['d'].min - ttft[floor_key].min) * 1e3:+.2f} ms)",
                                d < 1.0))

            if args.dspy and sections & {"e2e", "parser"}:
                # DSPy takes ~0.5 ms per delta: N <= 5,000 and fields <= 16k tokens keep it to a minute.
                dspy_res = dspy_bench(server, [n for n in sizes if n <= 5_000], min(repeats, 5),
                                      [1_000, 4_000] if quick else [1_000, 16_000])
                emit("## 5. DSPy comparison")
                emit()
                if dspy_res is None:
                    emit("Skipped: `import dspy` failed (run `benchmarks/setup.sh`, then "
                         "`benchmarks/.venv/bin/python benchmarks/run.py --dspy`).")
                else:
                    for line in dspy_res["markdown"](e2e):
                        emit(line)
                    targets += dspy_targets(e2e, prows, dspy_res)
                emit()
            if args.dspy and "bridge" in sections:
                res = bridge_bench(server, quick=quick, smoke=args.smoke)
                if res is None:
                    emit("## 9. DSPy programs through the bridge")
                    emit()
                    emit("Skipped: `import dspy` failed (run `benchmarks/setup.sh`, then "
                         "`benchmarks/.venv/bin/python benchmarks/run.py --dspy --only bridge`).")
                    emit()
                else:
                    section("bridge", res)
            # These replace the server's replies: they run after the sections that load their own.
            if "concurrency" in sections:
                import _concurrency

                section("concurrency", _concurrency.run(server, quick=quick, dspy=args.dspy,
                                                        **({"streams": 4, "n": 50} if args.smoke else {})))
            if "memory" in sections:
                import _memory

                section("memory", _memory.run(server, quick=quick))
            if "replay" in sections:
                import _replay

                section("replay", _replay.run(server, quick=quick, smoke=args.smoke))
        finally:
            bench.close()

    if "notebook" in sections:  # a real kernel, with its own server
        import _notebook

        section("notebook", _notebook.run(quick=quick))

    if "serve" in sections:  # `jupyter-stream serve` in its own process, answered by a fresh LM server
        import _serve

        with ServerProcess() as server:
            section("serve", _serve.run(server, quick=quick, **({"streams": 5, "n": 50, "variants": ["serve", "inproc"]}
                                                               if args.smoke else {})))

    if "browser" in sections:  # the widget in a real JupyterLab in Chromium, with its own server
        import _browser

        section("browser", _browser.run(quick=quick, smoke=args.smoke))

    emit("## Targets")
    emit()
    emit(table(["target", "measured", "verdict"], [[t, m, verdict(ok)] for t, m, ok in targets], "lrl"))
    emit()
    # With --out (e.g. one section alone), the raw numbers go beside that file: benchmarks/results*.json keeps the
    # numbers of the run that wrote benchmarks/RESULTS*.md.
    json_path = os.path.join(HERE, f"results{suffix}.json")
    if args.out:
        json_path = os.path.splitext(args.out)[0] + ".json"
        if os.path.abspath(json_path) == os.path.abspath(out_path):  # --out FILE.json: not over the markdown
            json_path = out_path + ".raw.json"
    save_json(json_path, info, e2e, sizes, prows, ttft, dspy_res, extra)
    bridge = extra.get("bridge")
    written = plots(e2e, sizes, prows, suffix, dspy_res, bridge) if e2e or prows or bridge else []
    if written:
        emit("Plots: " + ", ".join(f"`{os.path.relpath(p, os.path.dirname(HERE))}`" for p in written))
    else:
        emit(f"Plots: skipped here (matplotlib is not importable). Draw them from the saved numbers with "
             f"`benchmarks/setup.sh && benchmarks/.venv/bin/python benchmarks/run.py --plot-from "
             f"{os.path.relpath(json_path, os.path.dirname(HERE))}`.")
    emit()
    if not args.dspy and os.path.exists(os.path.join(HERE, "RESULTS-dspy.md")):
        emit("DSPy comparison: `benchmarks/RESULTS-dspy.md` (made in `benchmarks/.venv`, where DSPy pins openai 2.x).")
        emit()
    emit(f"Total benchmark time: {time.perf_counter() - t_start:.0f} s; load average at the end: "
         + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores.")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    print(f"\nwrote {os.path.relpath(out_path)}")
    return 0


def dspy_targets(e2e: dict[tuple[str, int], Stat], prows: list[dict[str, Any]],
                 dspy_res: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The targets against DSPy: end to end, (d) at most 0.1x DSPy's streamify at N=5,000; each field parser
    at least 20x faster per one-token delta than DSPy's ``StreamListener.receive`` at the same size."""
    out = []
    d, c = e2e.get(("d", 5_000)), dspy_res["e2e"].get(5_000)
    if d and c:
        r = d.median / c.median
        out.append(("(d) <= 0.1x DSPy streamify + 1 listener at N=5,000 (wall medians)",
                    f"{r:.3f}x (DSPy takes {1 / r:.0f}x as long)", r <= 0.1))
    ours = {(r["adapter"], r["tokens"]): r for r in prows if r["delta"] == "1 token (4 chars)"}
    for r in dspy_res["parser"]:
        mine = ours.get((r["adapter"].removesuffix("Adapter").lower(), r["tokens"]))
        if mine:
            x = r["us_per_token"] / mine["us_per_token"]
            wrong = "" if r["correct"] == "yes" else "; DSPy's output is wrong"
            out.append((f"parser {mine['adapter']}, {r['tokens']:,} one-token deltas: at least 20x DSPy's "
                        "`StreamListener.receive` per token",
                        f"{x:.0f}x ({mine['us_per_token']:.2f} vs {r['us_per_token']:.1f} µs/token{wrong})", x >= 20))
    return out


def print_section(res: dict[str, Any], json_path: str | None) -> None:
    """What a section module's own ``__main__`` prints: its markdown and targets; its raw numbers to a file."""
    print("\n".join(res["markdown"]))
    print(table(["target", "measured", "verdict"], [[t, m, verdict(ok)] for t, m, ok in res["targets"]], "lrl"))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(res["raw"], f, indent=1)


def exit_with(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main``: a wrong output is one line and exit status 1, not a traceback."""
    try:
        raise SystemExit(main())
    except BenchmarkError as e:
        print(f"\nBENCHMARK FAILED: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    exit_with(main)
