"""``make soak``: the reliability scenarios of ``tests/reliability`` at full size, in one process.

One :class:`~jupyter_stream.demo.DemoServer` on loopback (in this process), one event loop (as in a
kernel) plus the engine loop the sync API runs on. The phases run the very functions the CI tests run,
only bigger:

* faults: every fault of ``test_faults.CASES`` (drops, stalls, 429/500 with retries, malformed SSE, SSE
  error events, truncated replies, a field never opened, invalid typed values, refused connections),
  ``--fault-reps`` times through ``async for`` and as many through the sync ``streamify`` wrapper;
* bad inputs: every case of ``test_bad_input.CASES`` ``--bad-reps`` times, plus a 10 MB input;
* cancellations: 1,000 streams stopped at a random point by one of seven ways (``test_cancellation``);
* load: 200 concurrent streams on one loop, then 10,000 sequential streams (``test_load``).

Each check that fails is reported (the phase stops at its first failure). Prints a table of the figures
and writes it to ``benchmarks/SOAK.md``; exits 1 unless every check passed with zero lost chunks and
zero leaked tasks, threads and sockets.

    .venv/bin/python benchmarks/soak.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests")]

import _reliability as R
import test_bad_input as B
import test_cancellation as C
import test_faults as F
import test_load as L

import jupyter_stream as js
from jupyter_stream.demo import DemoServer

KEY = "sk-test-SECRET-key-123"


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[tuple[str, str, str]] = []
        self.phases: list[tuple[str, float, str]] = []
        self.failures: list[str] = []
        self.lost = self.tasks = self.threads = self.sockets = 0
        self.figures: dict[str, Any] = {}

    async def phase(self, name: str, run: Any) -> None:
        print(f"[soak] {name} ...", flush=True)
        started = time.monotonic()
        status = "ok"
        try:
            result = run()
            if asyncio.iscoroutine(result):
                await result
        except Exception as e:  # noqa: BLE001
            status = "FAILED"
            self.failures.append(f"{name}: {type(e).__name__}: {e}".splitlines()[0][:300])
            traceback.print_exc()
        elapsed = time.monotonic() - started
        self.phases.append((name, elapsed, status))
        print(f"[soak] {name}: {status} in {elapsed:.1f} s", flush=True)

    def add(self, figures: dict[str, Any]) -> None:
        for k in ("lost", "tasks", "threads", "sockets"):
            setattr(self, k, getattr(self, k) + int(figures.get(k, 0)))


async def main(args: argparse.Namespace) -> int:
    soak = Soak(args)
    started = time.monotonic()
    server = DemoServer(token_rate=None).start()
    lm = js.LM("test-model", base_url=server.url, api_key=KEY, cache=False, num_retries=0)
    js.configure(lm=lm, adapter=None, callbacks=None)

    # Warm up this loop, the engine loop and IPython's shell (for the %%stream cases: it keeps a history
    # thread), then take the baseline every leak is counted against.
    from IPython.testing.globalipapp import get_ipython

    get_ipython()
    server.script(C.SHORT, C.SHORT)
    assert [e async for e in C._stream()][-1].answer == "short and done"
    assert list(C._stream())[-1].answer == "short and done"
    await lm.aclose()
    tasks0, engine0, threads0 = await R.settled_tasks(), R.engine_tasks(), R.threads()
    sockets0, _ = R.baseline(server)

    faults_by_kind: dict[str, int] = {}

    async def faults() -> None:
        for _rep in range(args.fault_reps):
            for case in F.CASES:
                soak.add(await F.fault_scenario_async(case, lm, server))
                soak.add(F.fault_scenario_sync(case, lm, server))
                faults_by_kind[case.id] = faults_by_kind.get(case.id, 0) + 2
        await lm.aclose()

    bad_tried = [0]

    def bad_inputs() -> None:
        for _rep in range(args.bad_reps):
            for case in B.CASES:
                server.reset()
                B.check_bad(case, server)
                bad_tried[0] += 1
        server.reset()
        B.test_ten_megabyte_input_is_sent_whole(lm, server)
        bad_tried[0] += 1
        B.test_a_typed_field_with_an_invalid_json_value(lm, server)
        js.configure(adapter=None)
        bad_tried[0] += 2

    async def cancellations() -> None:
        server.reset()
        figures = await C.cancellation_scenario(lm, server, args.cancel, seed=1000)
        soak.figures["cancel"] = figures
        soak.add(figures)
        await lm.aclose()

    load_lm = js.LM("test-model", base_url=server.url, api_key=KEY, cache=False, num_retries=0, history_size=10)

    async def concurrent() -> None:
        server.reset()
        with js.context(lm=load_lm):
            figures = await L.concurrent_scenario(args.concurrent, server.port, load_lm)
        soak.figures["concurrent"] = figures
        soak.add(figures)
        await load_lm.aclose()

    async def sequential() -> None:
        server.reset()
        n = args.sequential
        with js.context(lm=load_lm):
            figures = await L.sequential_scenario(
                n, server.port, trace_from=n - max(200, n // 5), sample_every=max(20, n // 100),
                on_stream=lambda i: server.requests.clear(),  # the server's own record, not the client's
            )
        soak.figures["sequential"] = figures
        soak.add(figures)
        await load_lm.aclose()

    await soak.phase("faults", faults)
    await soak.phase("bad inputs", bad_inputs)
    await soak.phase("cancellations", cancellations)
    await soak.phase("concurrent", concurrent)
    await soak.phase("sequential", sequential)

    # Whatever is left at the end, against the baseline taken after the warm-up (pools closed).
    await lm.aclose()
    await load_lm.aclose()
    end_tasks = (await R.settled_tasks() - tasks0) | (R.engine_tasks() - engine0)
    end_threads = R.new_threads(threads0)
    end_sockets = R.settle_connections(server)
    left_sockets = len(end_sockets.client) + end_sockets.server + max(0, end_sockets.other - sockets0.other)
    soak.tasks += len(end_tasks)
    soak.threads += len(end_threads)
    soak.sockets += left_sockets
    if end_tasks or end_threads or left_sockets:
        soak.failures.append(f"left at the end: {len(end_tasks)} tasks {sorted(map(repr, end_tasks))[:3]}, "
                             f"threads {end_threads}, {left_sockets} sockets ({end_sockets})")
    server.stop()
    wall = time.monotonic() - started
    report(soak, args, faults_by_kind, bad_tried[0], wall)
    ok = not soak.failures and soak.lost == soak.tasks == soak.threads == soak.sockets == 0
    return 0 if ok else 1


def report(soak: Soak, args: argparse.Namespace, faults_by_kind: dict[str, int], bad_tried: int, wall: float) -> None:
    cancel = soak.figures.get("cancel", {})
    conc = soak.figures.get("concurrent", {})
    seq = soak.figures.get("sequential", {})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    methods = ", ".join(f"{k} {v}" for k, v in cancel.get("by_method", {}).items())
    rows = [
        ("faults injected", f"{sum(faults_by_kind.values()):,}",
         f"{len(faults_by_kind)} kinds x {args.fault_reps} x (async for, sync streamify)"),
        ("streams cancelled", f"{cancel.get('cancelled', 0):,} of {cancel.get('streams', 0):,}",
         (f"mid-stream, each seen closed early by the server; {cancel.get('ran_to_end', 0)} left at their end; "
          f"{methods}")),
        ("concurrent streams", f"{conc.get('streams', 0):,}",
         f"one loop, own inputs; cross-talk {conc.get('crossed', 'n/a')}"),
        ("sequential streams", f"{seq.get('streams', 0):,}", "one streamified program"),
        ("bad inputs tried", f"{bad_tried:,}", f"{len(B.CASES)} kinds x {args.bad_reps}, 10 MB input, invalid typed JSON"),
        ("lost chunks", f"{soak.lost}", "must be 0"),
        ("leaked tasks", f"{soak.tasks}", "must be 0 (test loop + engine loop)"),
        ("leaked threads", f"{soak.threads}", "must be 0 (the engine thread is long-lived)"),
        ("leaked sockets", f"{soak.sockets}", "must be 0 (idle keep-alive pools closed at the end)"),
        (f"peak memory, {conc.get('streams', 0)} concurrent", f"{conc.get('peak_mib', 0):.1f} MiB",
         "tracemalloc peak above the start (client and in-process server)"),
        ("memory growth, sequential", f"{seq.get('growth_bytes', 0) / 1024:+.0f} KiB",
         f"tracemalloc over the last {seq.get('traced_streams', 0):,} streams; bound 200 B/stream"),
        ("gc objects drift, sequential", f"{seq.get('objects_drift', 0):+.0f}",
         f"from the 10% mark to the end ({seq.get('streams', 0) - max(10, seq.get('streams', 0) // 10):,} streams)"),
        ("max RSS", f"{rss:.0f} MiB", "the whole soak process"),
        ("wall time", f"{wall:.0f} s", ", ".join(f"{n} {t:.0f} s{'' if s == 'ok' else ' ' + s}" for n, t, s in soak.phases)),
        ("checks failed", f"{len(soak.failures)}", "; ".join(soak.failures)[:400] or "none"),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':>{vwidth}}  notes", f"{'-' * width}  {'-' * vwidth}  -----"]
    lines += [f"{a:<{width}}  {b:>{vwidth}}  {c}" for a, b, c in rows]
    print("\n" + "\n".join(lines))
    md = [
        "# Soak: reliability figures",
        "",
        "Written by `make soak` (`benchmarks/soak.py`): the scenarios of `tests/reliability` at full size, in one",
        "process, against the loopback demo server, through the real `openai` client.",
        "",
        (f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
         f"{_cpus()} CPUs; run {time.strftime('%Y-%m-%d %H:%M')}."),
        "",
        "| figure | value | notes |",
        "|---|---:|---|",
        *[f"| {a} | {b} | {c.replace('|', '/')} |" for a, b, c in rows],
        "",
        "Faults by kind (async + sync runs): " + ", ".join(f"`{k}` {v}" for k, v in faults_by_kind.items()) + ".",
        "",
    ]
    if not args.quick:
        (ROOT / "benchmarks" / "SOAK.md").write_text("\n".join(md), "utf-8")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small run that does not write SOAK.md (a smoke test)")
    p.add_argument("--fault-reps", type=int, default=3)
    p.add_argument("--bad-reps", type=int, default=5)
    p.add_argument("--cancel", type=int, default=1000)
    p.add_argument("--concurrent", type=int, default=200)
    p.add_argument("--sequential", type=int, default=10_000)
    args = p.parse_args(argv)
    if args.quick:
        args.fault_reps, args.bad_reps, args.cancel, args.concurrent, args.sequential = 1, 1, 40, 20, 300
    return args


if __name__ == "__main__":
    gc.collect()
    sys.exit(asyncio.run(main(parse())))
