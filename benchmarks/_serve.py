"""Serve benchmark: ``jupyter-stream serve`` under S concurrent streams of N deltas (default 100 x 2,000).

    .venv/bin/python benchmarks/_serve.py                       # 100 x 2,000: 3 runs of serve and inproc, 1 of floor
    .venv/bin/python benchmarks/_serve.py --quick               # 20 x 400, 1 run each
    .venv/bin/python benchmarks/_serve.py --profile serve       # one run, the server's measured round under cProfile
    .venv/bin/python benchmarks/_serve.py --profile inproc      # the same for the in-process variant (or: floor)

``run(server, quick=...)`` is what ``run.py`` calls (section 10). The LM is the benchmark's loopback server
(``_server.py``): every measured request gets the ``chat1`` reply of ``run.py`` (signature ``question -> answer``,
one ``answer`` field, exactly N content deltas) and every warm-up request (its question holds ``WARM_QUESTION``)
a 40-delta one. Every question is distinct (its index appended), because ``js.LM`` caches identical requests and
``serve`` has no switch to turn that off: every request of both variants goes to the LM server.

Variants, each run in fresh processes, the order alternating from run to run (3 runs of ``serve`` and ``inproc``,
2 when the first round shows 3 would take over ~100 s; 1 of ``floor``):

- ``serve``: ``python -m jupyter_stream serve "question -> answer" --base-url <LM> --model bench
  --max-concurrency 200`` in its own process (uvicorn, as the command runs it). A fresh client process (this file
  with ``--worker client``: one ``httpx.AsyncClient`` per stream, each keeping its connection) makes a warm-up
  round (S concurrent ``POST /stream`` of the short reply, checked), waits 0.3 s, reads the server's idle RSS
  (``VmRSS`` of ``/proc/<pid>/status``), resets its peak (``/proc/<pid>/clear_refs``), reads its CPU time (``utime +
  stime`` of ``/proc/<pid>/stat``: all threads, clock ticks), starts S streams at once with ``asyncio.gather``, and
  reads the server's CPU time again 0.3 s after the last stream ended. **Server CPU per delta** = that CPU time /
  (S x N). Time to first byte: from just before a client sends its request to the first body byte of the response
  (the first SSE event: the first ``answer`` chunk); p50/p99 over the S clients. RSS per open stream: (server
  ``VmRSS`` when the last of the S clients got its first byte - idle RSS) / S; also the peak (``VmHWM``) over the
  round, the same way.
- ``inproc``: a fresh worker process (``--worker inproc``) with an LM made as ``serve`` makes it
  (``js.LM("bench", base_url=..., api_key=...)``: its cache on) runs ``js.streaming_response(js.streamify(
  js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])(question=q))`` for S distinct
  questions at once with ``asyncio.gather``, keeping the SSE strings, after the same warm-up round. **In-process CPU
  per delta** = this process's CPU time over the measured round (``time.process_time``, all threads) / (S x N). (The
  listener on ``answer`` makes the events ``serve`` streams; without listeners streamify passes the raw LM chunks.)
- ``floor``: the HTTP stack alone, a diagnostic (no target): this file with ``--floor-serve``, a Starlette app on
  uvicorn run as ``serve`` runs it, whose ``POST /stream`` returns a ``StreamingResponse`` of the same SSE strings
  (the ``answer`` chunks, the prediction, ``[DONE]``), encoded once at start-up; no LM, no engine. Measured by the
  same client as ``serve``: its CPU per delta is what uvicorn, h11 and Starlette cost per event.

Every stream of every variant is checked after the round (so the check costs no variant CPU): its SSE events'
``answer`` chunks joined equal the expected text with exactly one ``is_last_chunk``, then comes the ``prediction``
event with that answer, then ``data: [DONE]`` last, and no ``error`` event; a mismatch raises ``BenchmarkError``.
The target: server CPU per delta <= 1.5x in-process CPU per delta (medians over runs).

``--profile VARIANT`` runs one run of VARIANT with cProfile on only for the measured round (the client signals the
server with SIGUSR1/SIGUSR2; the in-process worker turns it on itself), on a CPU-time clock by default
(``--profile-clock wall``: the default cProfile clock, cheaper but counting time the process was not running), and
prints the top functions and the time grouped by package.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _concurrency import _RESULT, WARM_QUESTION, _pct
from run import QUESTION, SIG1, BenchmarkError, check, fmt_s, free_port, print_section, table, workload

TARGET_RATIO = 1.5
MAX_CONCURRENCY = 200
KEY_ENV = "JS_BENCH_LM_KEY"
"""The environment variable ``serve`` reads the LM key from (``--api-key-env``): the loopback server takes any."""
SETTLE = 0.3
"""Seconds the client waits after the warm-up round and after the measured round before reading the server."""

VARIANTS = ("serve", "inproc", "floor")
LABELS = {
    "serve": "`jupyter-stream serve`: the server process (uvicorn + Starlette + ours)",
    "inproc": "in-process `streaming_response(streamify(Predict))`",
    "floor": "HTTP stack alone: uvicorn + Starlette `StreamingResponse` of the same SSE strings, pre-encoded",
}


# ----------------------------------------------------------------------------------------------- /proc
def _clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of process ``pid`` (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": the state is field 3
    return int(rest[11]), int(rest[12])  # fields 14 and 15


def _status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchmarkError(f"/proc/{pid}/status has no {key}")


def _reset_hwm(pid: int) -> bool:
    """Reset process ``pid``'s peak RSS (``VmHWM``) to its current RSS; False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------- checking
def verify_sse(label: str, body: str, want: str) -> int:
    """``body``: one stream's SSE text. Its ``answer`` chunks must join to ``want`` (one ``is_last_chunk``), then
    the prediction (with that answer), then ``[DONE]`` last; no ``error`` event. Returns the number of events."""
    if not body.endswith("\n\n"):
        raise BenchmarkError(f"{label}: the stream does not end with a complete event ({body[-80:]!r})")
    parts: list[str] = []
    lasts = 0
    prediction: Any = None
    done = False
    frames = body[:-2].split("\n\n")
    for frame in frames:
        if done:
            raise BenchmarkError(f"{label}: an event after [DONE]: {frame[:80]!r}")
        if not frame.startswith("data: "):
            raise BenchmarkError(f"{label}: not an SSE data event: {frame[:80]!r}")
        data = frame[6:]
        if data == "[DONE]":
            done = True
            continue
        if prediction is not None:
            raise BenchmarkError(f"{label}: an event after the prediction: {data[:80]!r}")
        event = json.loads(data)
        if "stream_response" in event:
            r = event["stream_response"]
            if r.get("signature_field_name") != "answer":
                raise BenchmarkError(f"{label}: a chunk of an unexpected field: {data[:120]!r}")
            parts.append(r["chunk"])
            lasts += bool(r.get("is_last_chunk"))
        elif "prediction" in event:
            prediction = event["prediction"]
        elif "status_message" in event:
            continue
        else:
            raise BenchmarkError(f"{label}: unexpected event {data[:200]!r}")
    check(f"{label} chunks", "".join(parts), want)
    if lasts != 1:
        raise BenchmarkError(f"{label}: is_last_chunk set {lasts} times, expected once")
    if prediction is None:
        raise BenchmarkError(f"{label}: the stream has no prediction event")
    check(f"{label} prediction", prediction, {"answer": want})
    if not done:
        raise BenchmarkError(f"{label}: the stream does not end with [DONE]")
    return len(frames)


# ------------------------------------------------------------------------------------------- profiling
def _profiler(clock: str) -> Any:
    import cProfile

    return cProfile.Profile(time.process_time) if clock == "cpu" else cProfile.Profile()


def _profile_on_signals(out: str, clock: str) -> None:
    """Profile this process from SIGUSR1 to SIGUSR2 (sent by the client around its measured round), then write
    ``out``."""
    prof = _profiler(clock)
    signal.signal(signal.SIGUSR1, lambda *_: prof.enable())

    def stop(*_: Any) -> None:
        prof.disable()
        prof.dump_stats(out + ".tmp")
        os.replace(out + ".tmp", out)

    signal.signal(signal.SIGUSR2, stop)


def profiled_serve(out: str, clock: str, argv: list[str]) -> int:
    """``jupyter-stream ARGV`` (``serve ...``), profiled over the client's measured round."""
    from jupyter_stream._cli import main as cli_main

    _profile_on_signals(out, clock)
    return cli_main(argv)


def _group(filename: str, name: str) -> str:
    """A profile entry's package (``site-packages/<pkg>``, ``jupyter_stream/<module>``, ``stdlib <module>``), or
    for a built-in the built-in itself."""
    if filename == "~":
        return "built-in " + name
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0]
    if "/jupyter_stream/" in path:
        return "jupyter_stream/" + path.rsplit("/jupyter_stream/", 1)[1]
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib " + rest.split("/", 1)[0].removesuffix(".py")
    return path


def by_package(path: str, top: int = 25) -> list[tuple[str, float]]:
    """Own time (``tottime``) of a profile, grouped by :func:`_group`, largest first."""
    import pstats

    st = pstats.Stats(path)
    groups: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        key = _group(filename, name)
        groups[key] = groups.get(key, 0.0) + tt
    return sorted(groups.items(), key=lambda kv: -kv[1])[:top]


# ------------------------------------------------------------------------------------------- floor server
def _frames(n: int) -> list[str]:
    """The SSE strings of one ``chat1`` stream of N deltas, as ``streaming_response`` writes them: the ``answer``
    text cut where the reply's deltas are cut, the prediction, ``[DONE]``."""
    import jupyter_stream as js

    w = workload("chat1", n)
    answer = w.expected["answer"]
    start = w.reply.index(answer)
    end = start + len(answer)
    pieces: list[str] = []
    pos = 0
    for c in w.chunks:
        a, b = max(pos, start), min(pos + len(c), end)
        if a < b:
            pieces.append(w.reply[a:b])
        pos += len(c)
    events: list[Any] = [js.StreamResponse("self", "answer", p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    events.append(js.Prediction(answer=answer))

    async def collect() -> list[str]:
        async def gen() -> Any:
            for e in events:
                yield e

        return [line async for line in js.streaming_response(gen())]

    return asyncio.run(collect())


def floor_serve(port: int, n: int, warm_n: int, profile: str | None, clock: str) -> int:
    """A Starlette app on uvicorn (as ``jupyter-stream serve`` runs one) streaming pre-encoded SSE strings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    frames = {True: _frames(warm_n), False: _frames(n)}

    async def stream(request: Request) -> Response:
        question = json.loads(await request.body())["question"]
        lines = frames[WARM_QUESTION in question]

        async def body() -> Any:
            for line in lines:
                yield line

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/stream", stream, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])])
    if profile:
        _profile_on_signals(profile, clock)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0


# -------------------------------------------------------------------------------------------- workers
def client_worker(url: str, pid: int, streams: int, n: int, warm_n: int, label: str,
                  signal_profile: bool = False) -> dict[str, Any]:
    """The clients of one HTTP run (serve or floor), in this (fresh) process: a warm-up round, then the measured
    round; the server's CPU time, RSS and peak RSS are read from ``/proc/<pid>``."""
    import httpx

    want, warm_want = workload("chat1", n).expected["answer"], workload("chat1", warm_n).expected["answer"]
    tck = _clk_tck()

    async def main() -> dict[str, Any]:
        # One client (one connection) per stream: a shared httpcore 1.x pool hands one idle connection to several
        # queued requests at once, so 100 concurrent requests went out over ~20 connections, one after another
        # (and some failed with ReadError); this way every stream has its own kept-alive connection.
        clients = [httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
                   for _ in range(streams)]
        firsts: list[float] = []
        at_all_open: dict[str, Any] = {}
        ended = [0]

        async def one(client: Any, question: str, measured: bool) -> tuple[float, float, bytes]:
            chunks: list[bytes] = []
            ttfb = float("nan")
            t0 = time.perf_counter()
            async with client.stream("POST", url + "/stream", json={"question": question}) as r:
                if r.status_code != 200:
                    await r.aread()
                    raise BenchmarkError(f"{label}: HTTP {r.status_code} for {question!r}: {r.text[:200]}")
                async for b in r.aiter_raw():
                    if not chunks:
                        ttfb = time.perf_counter() - t0
                        if measured:
                            firsts.append(ttfb)
                            if len(firsts) == streams:  # every stream has started: the server holds them all
                                at_all_open.update(rss_kb=_status_kb(pid, "VmRSS"), ended=ended[0])
                    chunks.append(b)
            end = time.perf_counter()
            ended[0] += 1
            return ttfb, end, b"".join(chunks)

        try:
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(one(c, f"{WARM_QUESTION} #{i}", False) for i, c in enumerate(clients)))
            warm_s = time.perf_counter() - t0
            for i, (_f, _e, body) in enumerate(outs):
                verify_sse(f"{label} warm-up stream {i}", body.decode(), warm_want)
            del outs
            ended[0] = 0
            gc.collect()
            await asyncio.sleep(SETTLE)
            rss_idle = _status_kb(pid, "VmRSS")
            reset = _reset_hwm(pid)
            hwm0 = _status_kb(pid, "VmHWM")
            if signal_profile:
                os.kill(pid, signal.SIGUSR1)  # the server's profiler starts
            u0, k0 = _cpu_ticks(pid)
            my0 = time.process_time()
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(one(c, f"{QUESTION} #{i}", True) for i, c in enumerate(clients)))
            total = time.perf_counter() - t0
            my_cpu = time.process_time() - my0
            await asyncio.sleep(SETTLE)  # the server's work after the last byte (closing, cleaning up) counts too
            u1, k1 = _cpu_ticks(pid)
            if signal_profile:
                os.kill(pid, signal.SIGUSR2)  # ... stops and writes its file
            hwm1 = _status_kb(pid, "VmHWM")
            rss_after = _status_kb(pid, "VmRSS")
        finally:
            for c in clients:
                await c.aclose()
        events = [verify_sse(f"{label} S={streams} N={n} stream {i}", body.decode(), want)
                  for i, (_f, _e, body) in enumerate(outs)]
        ttfbs = [f for f, _e, _b in outs]
        ends = [e - t0 for _f, e, _b in outs]
        ticks = u1 + k1 - u0 - k0
        return {
            "variant": label, "streams": streams, "n": n, "total": total, "warmup": warm_s,
            "cpu": ticks / tck, "ticks": ticks, "user": (u1 - u0) / tck, "system": (k1 - k0) / tck,
            "client_cpu": my_cpu, "events": statistics.median(events),
            "ttfb_p50": _pct(ttfbs, 50), "ttfb_p99": _pct(ttfbs, 99), "ttfb_max": max(ttfbs),
            "end_p50": _pct(ends, 50), "end_p99": _pct(ends, 99),
            "rss_idle_kb": rss_idle, "rss_open_kb": at_all_open.get("rss_kb", rss_idle),
            "ended_before_all_open": at_all_open.get("ended", 0), "hwm_before_kb": hwm0, "hwm_kb": hwm1,
            "hwm_reset": reset, "rss_after_kb": rss_after,
        }

    return asyncio.run(main())


def inproc_worker(lm_url: str, streams: int, n: int, warm_n: int, profile: str | None = None,
                  clock: str = "cpu") -> dict[str, Any]:
    """One in-process run in this (fresh) process: a warm-up round, then the measured round."""
    import jupyter_stream as js

    want, warm_want = workload("chat1", n).expected["answer"], workload("chat1", warm_n).expected["answer"]
    lm = js.LM("bench", base_url=lm_url, api_key="x")  # as `serve --model bench --base-url URL` makes it
    js.configure(lm=lm, adapter=None)
    program = js.streamify(js.Predict(SIG1), stream_listeners=[js.StreamListener("answer")])

    async def one(question: str, t0: float) -> tuple[float, str]:
        lines: list[str] = []
        async for line in js.streaming_response(program(question=question)):
            lines.append(line)
        return time.perf_counter() - t0, "".join(lines)

    async def main() -> dict[str, Any]:
        try:
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(one(f"{WARM_QUESTION} #{i}", t0) for i in range(streams)))
            warm_s = time.perf_counter() - t0
            for i, (_e, body) in enumerate(outs):
                verify_sse(f"inproc warm-up stream {i}", body, warm_want)
            del outs
            gc.collect()
            prof = _profiler(clock) if profile else None
            if prof is not None:
                prof.enable()
            c0, times0 = time.process_time(), os.times()
            t0 = time.perf_counter()
            outs = await asyncio.gather(*(one(f"{QUESTION} #{i}", t0) for i in range(streams)))
            total = time.perf_counter() - t0
            cpu, times1 = time.process_time() - c0, os.times()
            if prof is not None:
                prof.disable()
                prof.dump_stats(profile)
            events = [verify_sse(f"inproc S={streams} N={n} stream {i}", body, want)
                      for i, (_e, body) in enumerate(outs)]
            ends = [e for e, _b in outs]
            return {"variant": "inproc", "streams": streams, "n": n, "total": total, "warmup": warm_s, "cpu": cpu,
                    "user": times1.user - times0.user, "system": times1.system - times0.system,
                    "events": statistics.median(events), "end_p50": _pct(ends, 50), "end_p99": _pct(ends, 99)}
        finally:
            await lm.aclose()

    return asyncio.run(main())


# ------------------------------------------------------------------------------------------- parent
class Served:
    """An HTTP server process on a free loopback port: ``python -m jupyter_stream serve "question -> answer"``
    answered by ``lm_url`` (``kind="serve"``), or the floor app (``kind="floor"``)."""

    def __init__(self, kind: str, lm_url: str, n: int, warm_n: int, profile: str | None = None,
                 clock: str = "cpu") -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.err = tempfile.TemporaryFile(mode="w+")
        me = [sys.executable, os.path.abspath(__file__)]
        if kind == "serve":
            args = ["serve", SIG1, "--port", str(self.port), "--base-url", lm_url, "--model", "bench",
                    "--max-concurrency", str(MAX_CONCURRENCY), "--api-key-env", KEY_ENV]
            cmd = me + ["--profiled-serve", profile, clock] if profile else [sys.executable, "-m", "jupyter_stream"]
            cmd += args
        else:
            cmd = me + ["--floor-serve", "--port", str(self.port), "--n", str(n), "--warm-n", str(warm_n)]
            cmd += ["--profile-out", profile, "--profile-clock", clock] if profile else []
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
        env[KEY_ENV] = "x"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err,
                                     env=env, cwd=ROOT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchmarkError(f"{kind} exited {self.proc.returncode} at start: {self.stop()[-500:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchmarkError(f"{kind} did not answer /healthz in 60 s")
            time.sleep(0.05)

    def stop(self) -> str:
        """Stop the server (SIGTERM: uvicorn shuts down, then re-raises it); its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.err.seek(0)
        err = self.err.read()
        self.err.close()
        return err


def _spawn(args: list[str], label: str, timeout: float = 900) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"serve benchmark: the {label} worker did not finish in {timeout:g} s") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(_RESULT)]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-6:]
        raise BenchmarkError(f"serve benchmark: the {label} worker failed (exit {p.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1][len(_RESULT):])


def run_http(kind: str, lm_url: str, streams: int, n: int, warm_n: int, profile: str | None = None,
             clock: str = "cpu") -> dict[str, Any]:
    """One run of ``serve`` or ``floor``: a fresh server process, a fresh client process."""
    served = Served(kind, lm_url, n, warm_n, profile, clock)
    try:
        res = _spawn(["--worker", "client", "--label", kind, "--url", served.url, "--pid", str(served.pid),
                      "--streams", str(streams), "--n", str(n), "--warm-n", str(warm_n)]
                     + (["--signal-profile"] if profile else []), f"{kind} client")
        if profile:
            deadline = time.monotonic() + 60
            while not os.path.exists(profile) and time.monotonic() < deadline:  # SIGUSR2 -> the server writes it
                time.sleep(0.05)
    finally:
        err = served.stop()
    if "Traceback" in err or "ERROR" in err:
        raise BenchmarkError(f"{kind}: the server logged an error: {err[-800:]}")
    return res


def run_inproc(lm_url: str, streams: int, n: int, warm_n: int, profile: str | None = None,
               clock: str = "cpu") -> dict[str, Any]:
    return _spawn(["--worker", "inproc", "--url", lm_url, "--streams", str(streams), "--n", str(n),
                   "--warm-n", str(warm_n)] + (["--profile-out", profile, "--profile-clock", clock] if profile else []),
                  "inproc")


def _range(xs: list[float], fmt: str) -> str:
    """``median (min-max)``."""
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})"


def run(server: Any, *, quick: bool, streams: int | None = None, n: int | None = None, repeats: int | None = None,
        floor_repeats: int = 1, budget: float | None = 100.0, warm_n: int = 40, variants: list[str] | None = None,
        log: Any = None) -> dict[str, Any]:
    """Section 10: ``jupyter-stream serve``'s CPU per delta next to ``streaming_response`` in-process.

    Replaces the LM server's replies (the measured reply, plus a short one for the warm-up questions).
    ``repeats`` runs of serve and inproc (3; 1 with ``quick``), ``floor_repeats`` of the floor (a diagnostic),
    the order alternating; when the first round shows that ``repeats`` rounds would take over ``budget`` seconds,
    fewer (at least 2).
    """
    streams = streams or (20 if quick else 100)
    n = n or (400 if quick else 2_000)
    repeats = repeats or (1 if quick else 3)
    warm_n = min(warm_n, n)
    names = [v for v in VARIANTS if v in (variants or VARIANTS)]
    if not {"serve", "inproc"} <= set(names):
        raise ValueError("the serve section needs at least the variants serve and inproc")
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    w = workload("chat1", n)
    warm = workload("chat1", warm_n)
    server.set_replies([(WARM_QUESTION, warm.chunks), (None, w.chunks)])
    deltas = streams * n

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in names}
    caps = {v: min(repeats, floor_repeats) if v == "floor" else repeats for v in names}
    t_start = time.perf_counter()
    r = 0
    while r < repeats:
        t_round = time.perf_counter()
        for v in (names if r % 2 == 0 else names[::-1]):  # alternate the order: drift hits every variant alike
            if len(runs[v]) >= caps[v]:
                continue
            if v == "inproc":
                res = run_inproc(server.url, streams, n, warm_n)
            else:
                res = run_http(v, server.url, streams, n, warm_n)
            runs[v].append(res)
            extra = f" (user {res['user']:.2f}, system {res['system']:.2f})"
            if v != "inproc":
                extra += (f", TTFB p50 {fmt_s(res['ttfb_p50'])} "
                         f"p99 {fmt_s(res['ttfb_p99'])}, RSS/stream "
                         f"{(res['rss_open_kb'] - res['rss_idle_kb']) / streams:.0f} KiB, client CPU "
                         f"{res['client_cpu']:.2f} s")
            say(f"  serve section {v} run {len(runs[v])}/{caps[v]}: total {fmt_s(res['total'])}, CPU {res['cpu']:.2f} s"
                f"{extra} -> {res['cpu'] / deltas * 1e6:.2f} µs/delta")
        if r == 0 and budget is not None and repeats > 2:
            repeats = max(2, min(repeats, int(budget / (time.perf_counter() - t_round))))
            caps.update({v: repeats for v in ("serve", "inproc")})
        r += 1

    us = {v: [x["cpu"] / deltas * 1e6 for x in runs[v]] for v in names}
    med = {v: statistics.median(us[v]) for v in names}
    user = {v: statistics.median(x["user"] for x in runs[v]) / deltas * 1e6 for v in names}
    system = {v: statistics.median(x["system"] for x in runs[v]) / deltas * 1e6 for v in names}
    sv = runs["serve"]
    ratio = med["serve"] / med["inproc"]
    per_open = [(x["rss_open_kb"] - x["rss_idle_kb"]) / streams for x in sv]
    per_peak = [(x["hwm_kb"] - x["rss_idle_kb"]) / streams for x in sv]
    summary: dict[str, Any] = {
        "cpu_us_per_delta": med, "user_us_per_delta": user, "system_us_per_delta": system, "ratio": ratio,
        "ratio_min_min": min(us["serve"]) / min(us["inproc"]),
        "ttfb_p50": statistics.median(x["ttfb_p50"] for x in sv),
        "ttfb_p99": statistics.median(x["ttfb_p99"] for x in sv),
        "rss_idle_mib": statistics.median(x["rss_idle_kb"] for x in sv) / 1024,
        "rss_per_open_stream_kib": statistics.median(per_open), "peak_per_stream_kib": statistics.median(per_peak),
        "client_cpu_us_per_delta": statistics.median(x["client_cpu"] for x in sv) / deltas * 1e6,
        "events_per_stream": statistics.median(x["events"] for x in sv),
    }
    rows = []
    for v in names:
        rs = runs[v]
        rows.append([LABELS[v], str(len(rs)), _range([x["total"] for x in rs], ".2f") + " s",
                     _range([x["cpu"] for x in rs], ".2f") + " s", _range(us[v], ".2f"), f"{user[v]:.2f}",
                     f"{system[v]:.2f}", f"{med[v] / med['inproc']:.2f}"])
    ticks = min(x["ticks"] for v in names if v != "inproc" for x in runs[v])
    late = max(x["ended_before_all_open"] for x in sv)
    md = [
        "## 10. `jupyter-stream serve`",
        "",
        (f"`python -m jupyter_stream serve \"{SIG1}\" --model bench --base-url <LM> --max-concurrency "
         f"{MAX_CONCURRENCY}` in its own process (uvicorn, here on asyncio with h11), its LM the loopback server "
         f"answering every request with the section-1 `chat1` reply of {n:,} content deltas; {streams} clients in "
         f"another process (one `httpx.AsyncClient` each) `POST /stream` at once (`asyncio.gather`), each with a "
         f"distinct question (`js.LM` caches identical requests, and `serve` leaves its cache on), after a warm-up "
         f"round ({streams} streams of a {warm_n}-delta reply). Server CPU: the server process's `utime + stime` "
         f"(`/proc/<pid>/stat`, all threads) over the measured round, until {SETTLE:g} s after the last stream "
         f"ended. In-process: a fresh process runs the same {streams} streams as "
         f"`js.streaming_response(js.streamify(js.Predict(...), stream_listeners=[js.StreamListener(\"answer\")])"
         f"(question=...))` with `asyncio.gather`, on an LM made as `serve` makes it, keeping the SSE strings; CPU: "
         f"that process's CPU time over the round. "
         + ("HTTP stack alone (a diagnostic): a Starlette app on uvicorn, as `serve` runs it, streaming the same "
            "SSE strings pre-encoded (no LM, no engine), same client. " if "floor" in names else "")
         + f"User and kernel: `utime` and `stime` (clock ticks). Per delta: over all {deltas:,} LM deltas (each "
         f"stream is {summary['events_per_stream']:.0f} SSE events). "
         f"Median (min-max) over runs; the variants alternate order from run to run, each run in fresh processes. "
         f"Every stream is checked (its `answer` chunks joined == the expected text, one `is_last_chunk`, the "
         f"prediction, then `[DONE]`)."),
        "",
        table(["variant", "runs", "wall (round)", "CPU (round)", "CPU µs/delta", "user µs/delta", "kernel µs/delta",
               "× in-process"], rows),
        "",
        table(["serve (median over runs)", "value"], [
            ["time to first byte, p50 (request sent -> first SSE byte)", fmt_s(summary["ttfb_p50"])],
            ["time to first byte, p99", fmt_s(summary["ttfb_p99"])],
            ["server RSS idle (after the warm-up round)", f"{summary['rss_idle_mib']:.1f} MiB"],
            [f"RSS per open stream: (RSS with all {streams} open - idle) / {streams}",
             f"{_range(per_open, '.0f')} KiB"],
            [f"peak RSS per stream: (`VmHWM` over the round - idle) / {streams}", f"{_range(per_peak, '.0f')} KiB"],
            ["client process CPU µs/delta (not counted)", f"{summary['client_cpu_us_per_delta']:.2f}"],
        ], "lr"),
        "",
    ]
    extra_us = med["serve"] - med["inproc"]
    md += [(f"serve - in-process: {extra_us:.2f} µs/delta (user {user['serve'] - user['inproc']:.2f}, kernel "
            f"{system['serve'] - system['inproc']:.2f})"
            + (f"; the HTTP stack alone, streaming the same events pre-encoded: {med['floor']:.2f}" if "floor" in med
               else "")
            + ". Where the server's time goes: `.venv/bin/python benchmarks/_serve.py --profile serve` (cProfile of "
              "the measured round, by function and by package)."), ""]
    if late:
        md += [f"In some run {late} of the {streams} streams had ended before the last one got its first byte: the "
               f"RSS with all open undercounts there.", ""]
    if ticks < 100:
        md += [f"(Server CPU time is read in clock ticks of {1e3 / _clk_tck():g} ms; a run here took as few as "
               f"{ticks}: coarse at these sizes.)", ""]
    if not all(x["hwm_reset"] for x in sv):
        md += ["(The server's peak RSS could not be reset before the round: the peak row is an upper bound.)", ""]
    targets = [((f"serve: server CPU per delta <= {TARGET_RATIO:g}x in-process `streaming_response` ({streams} "
                 f"concurrent streams x {n:,} deltas, CPU medians)"),
                (f"{ratio:.2f}x ({med['serve']:.2f} vs {med['inproc']:.2f} µs/delta; min/min "
                 f"{summary['ratio_min_min']:.2f}x; TTFB p50 {fmt_s(summary['ttfb_p50'])}, p99 "
                 f"{fmt_s(summary['ttfb_p99'])}; {summary['rss_per_open_stream_kib']:.0f} KiB RSS per open stream)"),
                ratio <= TARGET_RATIO)]
    raw = {"streams": streams, "n": n, "warm_n": warm_n, "repeats": caps, "variants": names, "summary": summary,
           "runs": runs, "seconds": time.perf_counter() - t_start}
    return {"markdown": md, "targets": targets, "raw": raw}


def profile(server: Any, variant: str, streams: int, n: int, warm_n: int, top: int, clock: str,
            out: str | None = None) -> None:
    """One run of ``variant`` with its measured round under cProfile: the top functions, and time by package."""
    import pstats

    w, warm = workload("chat1", n), workload("chat1", warm_n)
    server.set_replies([(WARM_QUESTION, warm.chunks), (None, w.chunks)])
    with tempfile.TemporaryDirectory() as d:
        path = out or os.path.join(d, f"{variant}.prof")
        if os.path.exists(path):
            os.remove(path)
        if variant == "inproc":
            res = run_inproc(server.url, streams, n, warm_n, profile=path, clock=clock)
        else:
            res = run_http(variant, server.url, streams, n, warm_n, profile=path, clock=clock)
        split = f" (user {res['user']:.2f} s, system {res['system']:.2f} s)" if "user" in res else ""
        print(f"{variant} under cProfile ({clock} clock), measured round only: {streams} x {n:,}, total "
              f"{fmt_s(res['total'])}, CPU {res['cpu']:.2f} s{split}; {res['cpu'] / (streams * n) * 1e6:.2f} µs/delta "
              f"(inflated by the profiler)")
        if not os.path.exists(path):
            raise BenchmarkError(f"no profile written at {path}")
        st = pstats.Stats(path).strip_dirs()
        st.sort_stats("tottime").print_stats(top)
        st.sort_stats("cumulative").print_stats(top)
        groups = by_package(path)
        total = sum(t for _k, t in by_package(path, top=10_000))
        print(f"Own time by package ({clock} clock, total {total:.2f} s):")
        for key, t in groups:
            print(f"  {t:8.2f} s  {t / total * 100:5.1f}%  {key}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled-serve"]:  # the server process of `--profile serve`
        return profiled_serve(argv[1], argv[2], argv[3:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 streams of 400 deltas, 1 run each")
    ap.add_argument("--streams", type=int, help="concurrent streams (default 100; 20 with --quick)")
    ap.add_argument("--n", type=int, help="deltas per stream (default 2,000; 400 with --quick)")
    ap.add_argument("--repeats", type=int, help="runs per variant (default 3; 1 with --quick)")
    ap.add_argument("--variants", help="comma-separated subset of " + ",".join(VARIANTS) + " (serve and inproc needed)")
    ap.add_argument("--json", help="write the raw numbers here")
    ap.add_argument("--profile", choices=VARIANTS, help="one run of this variant, its measured round under cProfile")
    ap.add_argument("--profile-clock", choices=["cpu", "wall"], default="cpu",
                    help="cProfile's clock: process CPU time (default) or its own wall clock")
    ap.add_argument("--profile-out", help="with --profile: keep the .prof file here")
    ap.add_argument("--top", type=int, default=30, help="with --profile: functions to list")
    ap.add_argument("--worker", choices=["client", "inproc"], help=argparse.SUPPRESS)
    ap.add_argument("--floor-serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--label", default="serve", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--pid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warm-n", type=int, default=40, help=argparse.SUPPRESS)
    ap.add_argument("--signal-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.floor_serve:
        return floor_serve(args.port, args.n, args.warm_n, args.profile_out, args.profile_clock)
    if args.worker == "client":
        res = client_worker(args.url, args.pid, args.streams, args.n, args.warm_n, args.label, args.signal_profile)
        print(_RESULT + json.dumps(res), flush=True)
        return 0
    if args.worker == "inproc":
        res = inproc_worker(args.url, args.streams, args.n, args.warm_n, args.profile_out, args.profile_clock)
        print(_RESULT + json.dumps(res), flush=True)
        return 0

    from _server import ServerProcess

    with ServerProcess() as server:
        if args.profile:
            profile(server, args.profile, args.streams or (20 if args.quick else 100),
                    args.n or (400 if args.quick else 2_000), args.warm_n, args.top, args.profile_clock,
                    args.profile_out)
            return 0
        res = run(server, quick=args.quick, streams=args.streams, n=args.n, repeats=args.repeats,
                  variants=args.variants.split(",") if args.variants else None)
    print_section(res, args.json)
    return 0


if __name__ == "__main__":
    from run import exit_with

    exit_with(main)
