"""Profile one end-to-end variant with cProfile: where the client's time goes.

    python benchmarks/profile_stream.py                  # (d) streamify, N=5,000, 10 runs
    python benchmarks/profile_stream.py --variant d0 --n 5000 --runs 10 --top 40 --out /tmp/d.prof

Variants are run.py's keys: a (httpx floor), a2 (httpx2 floor), b (openai typed), d0 (LM.astream), d, e, f, g.
The server runs in its own process, so only the client is profiled (cProfile slows Python code ~1.5-2x;
compare functions with each other, not with the unprofiled timings).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _server import ServerProcess  # noqa: E402
from run import VARIANTS, Bench, workload  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="d")
    ap.add_argument("--n", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    ap.add_argument("--out", help="also dump the raw profile here (for snakeviz / pstats)")
    args = ap.parse_args()
    spec = {k: (kind, meth) for k, _label, kind, meth in VARIANTS}
    kind, meth = spec[args.variant]
    with ServerProcess() as server:
        bench = Bench(server)
        try:
            bench.use(workload(kind, args.n))
            fn = getattr(bench, meth)
            fn()
            fn()
            t0 = time.perf_counter()
            for _ in range(args.runs):
                fn()
            plain = (time.perf_counter() - t0) / args.runs
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.runs):
                fn()
            prof.disable()
        finally:
            bench.close()
    print(f"variant {args.variant} ({meth}), N={args.n:,}: {plain * 1e3:.1f} ms per stream unprofiled "
          f"({plain / args.n * 1e6:.1f} µs/delta); profile of {args.runs} runs:")
    s = io.StringIO()
    stats = pstats.Stats(prof, stream=s)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
    print(s.getvalue())
    if args.out:
        prof.dump_stats(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
