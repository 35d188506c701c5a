"""Compare with 4 variants streaming at once: the engine's share of the issue's target (widget <= 30 messages/s
in total, kernel round trip p50 < 50 ms meanwhile).

    .venv/bin/python benchmarks/compare_rate.py                 # 4 variants x 600 tokens at 150 tokens/s each
    .venv/bin/python benchmarks/compare_rate.py --rate 0        # as fast as the server sends

The demo LM runs in a subprocess (``python -m jupyter_stream.demo``: no shared GIL), each model scripted with
its own reply (``POST /v1/demo/script`` with ``"model"``). One ``js.Comparison`` of 4 ``model=`` variants is
consumed by ``async for`` on one event loop, as in a kernel, while a ticker on the same loop sleeps 5 ms at a
time and records how late it wakes: that lateness is what a kernel message arriving meanwhile would wait
before the loop served it. Printed: the text events the 4 variants deliver per second in total (what a widget
must batch into <= 30 messages/s), the consumer process's CPU per event, and the loop's lag (p50, p99, max).
Every variant's joined text is checked against its reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

import jupyter_stream as js
from jupyter_stream.demo import tokenize

MODELS = ("m1", "m2", "m3", "m4")


def start_server(rate: float) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_stream.demo", "--port", "0", "--rate", str(rate)],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "demo LM listening on http://127.0.0.1:PORT/v1"
    return proc, line.split()[-1]


def script(url: str, model: str, reply: str) -> None:
    body = json.dumps({"replies": [reply], "model": model}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{url}/demo/script", body, {"Content-Type": "application/json"}))


async def run(url: str, tokens: int) -> dict[str, float]:
    answers = {m: " ".join(f"{m}-word{i}" for i in range(tokens // 2)) for m in MODELS}
    for m, text in answers.items():
        script(url, m, f"[[ ## answer ## ]]\n{text}\n\n[[ ## completed ## ]]")
    lm = js.LM(MODELS[0], base_url=url, api_key="demo", cache=False)
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    with js.context(lm=lm):
        comparison = js.Comparison(js.Predict("question -> answer"), {"question": "q"},
                                   variants="model=" + ",".join(MODELS))
    tick = asyncio.create_task(ticker())
    got: dict[str, list[str]] = {label: [] for label in comparison.labels}
    events = 0
    cpu, wall = time.process_time(), time.perf_counter()
    async for item in comparison:
        if isinstance(item, js.VariantEvent) and isinstance(item.event, js.StreamResponse):
            got[item.variant].append(item.event.chunk)
            events += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    await tick
    await lm.aclose()
    for m in MODELS:
        if "".join(got[f"model={m}"]) != answers[m]:
            raise SystemExit(f"model={m}: the streamed text differs from its reply")
    lags.sort()
    return {"events": events, "seconds": wall, "events_per_s": events / wall, "cpu_us_per_event": cpu / events * 1e6,
            "lag_p50_ms": statistics.median(lags) * 1e3, "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1e3,
            "lag_max_ms": lags[-1] * 1e3, "tokens_per_reply": len(tokenize(next(iter(answers.values()))))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=150.0, help="tokens/s of each reply (0: as fast as possible)")
    parser.add_argument("--tokens", type=int, default=600, help="about this many tokens per reply")
    args = parser.parse_args()
    proc, url = start_server(args.rate)
    try:
        out = asyncio.run(run(url, args.tokens))
    finally:
        proc.terminate()
        proc.wait(10)
    print(json.dumps({"rate": args.rate, **{k: round(v, 2) for k, v in out.items()}}, indent=1))


if __name__ == "__main__":
    main()
