"""The benchmark still runs (tiny sizes, one repeat). Its numbers are not checked here: speed is shown
by `make bench`, never by a timed test. Every benchmark run checks its own output for correctness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_benchmark_smoke_run(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    for heading in ("## 1. End to end", "## 2. Field parsers alone", "## 3. Time to first token", "## 4. Concurrency",
                    "## 6. Memory", "## 7. The notebook wire", "## 8. Kernel responsiveness",
                    "## 10. `jupyter-stream serve`", "## Targets"):
        assert heading in text
    assert "(d) streamify(Predict), 1 listener" in text
