"""The browser's own cost of the widget (section 11): a real JupyterLab 4 in Debian's Chromium, driven by Playwright.

    .venv/bin/python benchmarks/_browser.py             # full sizes (about 3 minutes), prints the markdown
    .venv/bin/python benchmarks/_browser.py --quick     # small sizes (about 1.5 minutes)
    .venv/bin/python benchmarks/_browser.py --only c    # one scenario
    .venv/bin/python benchmarks/_browser.py --only b --profile /tmp/b [--trace]   # + a CPU profile (a trace)

Experiments (not used by ``run.py``): ``--setup-extra CODE`` runs CODE in each notebook's first cell (e.g. a patch
of the kernel side), ``--page-css CSS`` adds a stylesheet to the page, ``--windowing MODE`` sets JupyterLab's
``windowingMode`` (its default is ``contentVisibility``, which skips off-screen cells; here ``none``).

``run(quick=..., smoke=...)`` returns ``{"markdown": [...], "targets": [(name, measured, met)], "raw": {...}}``;
without ``chromium`` on PATH, ``playwright`` or ``jupyterlab`` it returns a section that says so and no targets.

Set-up: one JupyterLab server (free loopback port, random token, notebook dir, HOME / JUPYTER_* / IPYTHONDIR /
XDG_* in a temp dir; every cell in the DOM: ``windowingMode: none``, as the browser tests run it) and one
headless Chromium (1280x900). Each scenario is its own notebook in a fresh browser context, opened alone
(``?reset``); its cells, run with Run All Cells: (1) the kernel's demo LM is scripted with exact replies
(``shared_server().script(Reply(chunks=..., token_rate=R))``: one chat-adapter ``answer`` field whose deltas go
out at R deltas/s), (2) a warm-up ``%%stream`` (the widget's code, the comm, the LM connection; short, but in (c)
WARM_C characters with the measured stream's deltas and rate: see below), (3) a
barrier the kernel waits in until this process, having collected garbage and read the page's heap, says go,
(4) the measured ``%%stream`` cell(s) (with ``--background`` when there are several, so they all stream at once).
Each measured reply first streams empty deltas for LEAD_S seconds (1 s with one widget): every cell has run and
every widget shows before the text starts, so the widgets stream at once and their creation (JupyterLab's output
area, the widget model and view) is measured on its own, in the heap, rather than inside the stream's frames.

Why (c) warms up with a stream of its own: its target compares the apply time per batch at 10k characters with that
at 1M, and the 10k batches are the first of the measured stream. After the short warm-up (a few characters) they
were also nearly the first batches the page applied at all: the widget's per-batch code could still be running
unoptimized in V8, the browser's and JupyterLab's paths for them used for the first time. What the target asks
is whether a batch costs more in a long pane than in a short one, not whether the page's first batches cost more
than its later ones. So (c) first streams WARM_C characters with the same deltas at the same rate in the same page
(above the measured cell, out of view once the notebook is scrolled to its end): the 10k figure is then the start
of a pane, not the start of the page.

Scenarios: (a) one pane fed 2,000 tokens/s (4-character deltas) for 30 s (240,000 characters); (b) 20 widgets
streaming at once, each 100 tokens/s for 20 s; (c) one pane grown to 1,000,000 characters (16-character deltas
at 2,000/s, 32,000 characters/s); (w) the widget alone: the built widget in a page of its own (no JupyterLab,
kernel or LM), fed (c)'s deltas by a stand-in model, to 1,000,000 characters (see ``run_alone``): what grows with
the text, apart from what changes in the run around it. ``--quick`` and ``--smoke`` shorten them.

What is measured, in the page (an init script that runs before JupyterLab's own code):

* long tasks: a ``PerformanceObserver`` for ``longtask`` (main-thread tasks over 50 ms), counted from the first
  delta applied to 2 s after the last widget turned ``done`` (so the end of the stream is in);
* the same from a Chrome trace recorded while each scenario streams (``MEASURE_CATEGORIES``): the page's main-thread
  tasks over 50 ms of wall time (what the observer sees) and those over 50 ms of CPU (thread) time. On two cores
  shared with the server, the kernel, the LM and other jobs, most wall-time long tasks are the main thread waiting
  for a core (a task of 129 ms wall, 2 ms CPU); the CPU count is the page's own work. Both are reported, the target
  stays the observer's count;
* frames: a ``requestAnimationFrame`` loop's timestamps; intervals from the first delta to the last ``done``
  (p50/p95/max, frames per second);
* the time to apply one delta batch: the widget calls ``globalThis.__jpsPerf.frame(start, end, chars,
  longest)`` (a probe present only when a benchmark sets it) after each frame's pane updates; the probe then
  posts a ``MessageChannel`` message, whose handler runs after that frame's style, layout and paint: "apply" is
  from the start of the widget's work to then (the batch's whole main-thread cost, forced layout included), "JS"
  the widget's own part. Per pane length (the longest pane the batch touched): the median over the batches
  within 10% of 10k, 100k and 1M characters (at least the 10 nearest; or the largest size reached);
* (c)'s target, the main-thread CPU per batch: the thread time of the trace's task each batch's frame ran in (found
  by the batch's start: the probe marks each batch, which gives the trace's clock against the page's), median over
  the batches at NEAR_10K characters against those from NEAR_END of the length on. One stream has about 7 batches
  near 10k, too few (its wall-time median moved 6.5 -> 10.2 ms between identical runs): before the long stream
  and after it (its end and heap read), SHORT_C short streams of SHORT_CHARS characters each (same deltas and rate,
  a new widget each, scrolled into view before its text) add theirs (the load drifts over a run: on both sides,
  it weighs on them as on the long stream, on average);
* the JS heap: Chrome DevTools Protocol ``HeapProfiler.collectGarbage`` twice then ``Runtime.getHeapUsage``
  (``usedSize``) at the barrier (after the warm-up), once every measured widget shows a pane (streaming), and 2 s
  after the end: the growth per character from the second read to the end (the characters shown in between), and
  the fixed cost of each widget shown (the growth up to the second read less its characters' share); the long
  tasks, frames and batches that overlap the second read's forced GCs are left out;
* the end: the pane elements seen while streaming must still be in the document (no view rebuilt from
  scratch) and every pane that overflows must show its end (no jump to the top) when the reader scrolls to it
  (each widget scrolled into view in turn: a view out of sight scrolls its panes when it comes into sight).

Before the measured cells run, the notebook is scrolled to its end, so that the last cell's output shows as it
appears (the reader watches the stream; Run All leaves the notebook at the last cell's input with the output below
the fold, and the widget updates views out of sight only 10 times a second). The table says how many widgets were
in view.

Every run checks its output: each measured pane's text (``textContent``) must equal the scripted answer and
every widget must end ``done``, or :class:`BenchmarkError` stops the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from run import BenchmarkError, free_port, print_section, table  # noqa: E402

__all__ = ["BenchmarkError", "run"]

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IDLE = "Python 3 (ipykernel) | Idle"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
SETTLE_S = 2.0
"""Seconds watched after the last widget turned done: the end of the stream (final update, any re-render)."""
LONG_TASK_MS = 50.0
FLAT = 1.25
"""Target: the apply time per batch at 1M characters within 25% of that at 10k."""
HEAP_BYTES_PER_CHAR = 8.0
START_BATCHES = 20
"""The first batches of a stream, compared with the next as many (see report)."""
LEAD_S = 8.0
"""Seconds each reply of a scenario with several widgets streams no text at first (empty deltas): the cells run one
after the other, so every widget is shown and running before any text arrives, and then they all stream at once. The
heap is read then (the fixed cost of each widget shown), before the first delta (one widget: 1 s)."""
SHORT_LEAD_S = 1.0
"""Seconds each short stream of (c) streams no text at first: the benchmark scrolls its widget into view meanwhile."""
WARM_C = 100_000
"""Characters of scenario (c)'s warm-up stream (full size; --quick a quarter, --smoke none)."""
BUCKET = 10
"""Batches per pane size: those within 10% of it, at least the 10 nearest."""
MEASURE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "blink.user_timing"]
"""The trace every scenario in JupyterLab records (its main-thread tasks' wall and CPU time, the probe's marks)."""
SHORT_C = 8
"""Scenario (c): streams of SHORT_CHARS characters before the long one and as many after it (same deltas, same rate, a
new widget each), so that about 100 batches fall near 10k characters (one stream gives about 7), and the load of the
machine, which drifts over a run, weighs on them as on the long one on average: see `cpu_per_batch`."""
SHORT_CHARS = 20_000
NEAR_10K = (5_000, 15_000)
"""The pane lengths of the batches that make the "10k" CPU figure (a window of the shorts and the long stream)."""
NEAR_END = 0.9
"""The "1M" CPU figure: the batches from this share of the long stream's length to its end."""

# The answer's text: exactly n 4-character tokens (" abc", ". Ab", ".\nAb"), deltas of `per` tokens each, after
# `lead` empty deltas (the lead-in: the reply streams, no text yet). The same source runs in the kernel (to script
# the demo LM) and here (the expected text).
ANSWER_SRC = '''
def _answer(n_tokens, per=1, seed=0, lead=0):
    import random
    rng = random.Random(seed)
    low = "abcdefghijklmnopqrstuvwxyz"
    up = low.upper()
    toks = ["Th" + rng.choice(low) + rng.choice(low)]
    for i in range(1, n_tokens):
        if i % 64 == 63:
            toks.append(".\\n" + rng.choice(up) + rng.choice(low))
        elif i % 16 == 15:
            toks.append(". " + rng.choice(up) + rng.choice(low))
        else:
            toks.append(" " + rng.choice(low) + rng.choice(low) + rng.choice(low))
    head, tail = "[[ ## answer ## ]]\\n", "\\n\\n[[ ## completed ## ]]"
    body = ["".join(toks[i:i + per]) for i in range(0, len(toks), per)]
    deltas = [""] * lead + [head[i:i + 4] for i in range(0, len(head), 4)] + body + [tail[i:i + 4] for i in range(0, len(tail), 4)]
    return "".join(toks), deltas
'''
_ns: dict[str, Any] = {}
exec(ANSWER_SRC, _ns)
answer = _ns["_answer"]

# In the page, before JupyterLab's code: the probes. `__bench.reset()` starts a measurement.
PROBE_JS = r"""
(() => {
  if (window.top !== window || window.__bench) return;
  const B = window.__bench = {
    frames: [], longtasks: [], batches: [], done: [], marked: null, n: 1e9, first: 1,
    reset(n) { this.frames = []; this.longtasks = []; this.batches = []; this.done = []; this.marked = null;
               if (n) this.n = n; },
    // The measured widgets: the page holds one .jps-widget per cell output; those before `first` are the warm-up's
    // (and in (c) the short streams run before the long one).
    measured() { return [...document.querySelectorAll('.jps-widget')].slice(this.first, this.first + this.n); },
  };
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) B.longtasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) { B.noLongtask = String(e); }
  const tick = (t) => { B.frames.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  globalThis.__jpsPerf = {
    frame(start, end, chars, longest) {
      const rec = [start, end, 0, chars, longest];
      B.batches.push(rec);
      performance.mark("jps-batch");  // in a trace: the page's clock against the trace's (see read_trace)
      performance.clearMarks("jps-batch");
      const ch = new MessageChannel();
      ch.port1.onmessage = () => { rec[2] = performance.now(); ch.port1.close(); };
      ch.port2.postMessage(0);
    },
  };
  const seen = new WeakSet();
  const mo = new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target;
      if (el.classList && el.classList.contains("jps-widget") && el.dataset.status === "done" && !seen.has(el)) {
        seen.add(el);
        B.done.push(performance.now());
      }
    }
  });
  const start = () => mo.observe(document.documentElement,
                                 { subtree: true, attributes: true, attributeFilter: ["data-status"] });
  if (document.documentElement) start(); else document.addEventListener("DOMContentLoaded", start);
})();
"""

MEASURED_JS = "() => window.__bench.measured()"

DONE_JS = """() => [window.__bench.done.length,
  window.__bench.measured().filter(w => w.dataset.status === 'done').length,
  performance.now()]"""

# Before the measured cells run: the notebook scrolled to its end (past the last cell, as far as JupyterLab lets it),
# so that the output of the last cell shows (the reader watches the stream; Run All leaves the notebook at the last
# cell's input, with its output below the fold).
SCROLL_END_JS = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
  if (nb) nb.scrollTop = nb.scrollHeight;
  return !!nb;
}"""

# Once every measured widget shows a pane: remember the pane elements, and how many widgets are in view.
MARK_JS = """(n) => {
  const ws = window.__bench.measured();
  if (ws.length < n || ws.some(w => !w.querySelector('.jps-pane-text'))) return false;
  window.__bench.marked = ws.map(w => w.querySelector('.jps-pane-text'));
  window.__bench.inView = ws.filter(w => {
    const r = w.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight && r.height > 0;
  }).length;
  return true;
}"""

RUNNING_JS = """(n) => { const ws = window.__bench.measured();
  return ws.length >= n && ws.every(w => w.dataset.status === 'running'); }"""

# The characters the measured panes show, and the page's clock.
SHOWN_JS = """() => [window.__bench.measured().reduce((n, w) => n +
  ((w.querySelector('.jps-pane-text') || {}).textContent || '').length, 0), performance.now()]"""

# The end, read as the reader sees it: the texts, then each widget scrolled into view in turn (a view out of sight
# scrolls its panes to their end when it comes into sight, not before) and its pane's scroll read a few frames later.
END_JS = """async () => {
  const ws = window.__bench.measured();
  const marked = window.__bench.marked || [];
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const panes = [];
  for (const w of ws) {
    const t = w.querySelector('.jps-pane-text');
    if (!t) { panes.push(null); continue; }
    w.scrollIntoView({ block: 'center' });
    for (let i = 0; i < 6; i++) await frame();
    panes.push([t.scrollHeight, t.scrollTop, t.clientHeight]);
  }
  return {
    statuses: ws.map(w => w.dataset.status),
    texts: ws.map(w => {
      const t = w.querySelector('.jps-pane[data-key="answer"] .jps-pane-text');
      return t ? t.textContent : null;
    }),
    marked: marked.length,
    markedConnected: marked.filter(e => e.isConnected).length,
    panes,
  };
}"""


# ------------------------------------------------------------------------------------------ scenarios
def scenarios(quick: bool, smoke: bool) -> dict[str, dict[str, Any]]:
    """name -> widgets, tokens per widget, tokens per delta, deltas/s per widget, label."""
    if smoke:
        sizes = {"a": (1, 4_000, 1, 2_000.0), "b": (3, 200, 1, 100.0), "c": (1, 12_500, 4, 2_000.0)}
    elif quick:
        sizes = {"a": (1, 16_000, 1, 2_000.0), "b": (20, 600, 1, 100.0), "c": (1, 62_500, 4, 2_000.0)}
    else:
        sizes = {"a": (1, 60_000, 1, 2_000.0), "b": (20, 2_000, 1, 100.0), "c": (1, 250_000, 4, 2_000.0)}
    warm_c = 0 if smoke else WARM_C // 4 if quick else WARM_C
    out = {}
    for name, (widgets, tokens, per, rate) in sizes.items():
        chars = tokens * 4
        secs = tokens / per / rate
        label = {
            "a": f"(a) one pane, {rate * per:,.0f} tokens/s for {secs:.0f} s",
            "b": f"(b) {widgets} widgets at once, {rate * per:,.0f} tokens/s each for {secs:.0f} s",
            "c": f"(c) one pane to {chars:,} characters ({4 * per}-character deltas, {rate:,.0f}/s)",
        }[name]
        out[name] = {"widgets": widgets, "tokens": tokens, "per": per, "rate": rate, "chars": chars,
                     "seconds": secs, "label": label, "lead_s": LEAD_S if widgets > 1 else 1.0,
                     "warm_tokens": warm_c // 4 if name == "c" else 0,
                     "shorts": (0 if smoke else SHORT_C // 2 if quick else SHORT_C) if name == "c" else 0}
    return out


def notebook(name: str, sc: dict[str, Any], setup_extra: str = "") -> dict[str, Any]:
    n = sc["widgets"]
    lead = round(sc["lead_s"] * sc["rate"])
    replies = ", ".join(f"Reply(chunks=_answer({sc['tokens']}, {sc['per']}, seed={i}, lead={lead})[1], "
                        f"token_rate={sc['rate']})" for i in range(n))
    shorts = sc.get("shorts", 0)
    short_lead = round(SHORT_LEAD_S * sc["rate"])

    def short_replies(seeds: range) -> str:
        return "".join(f"Reply(chunks=_answer({SHORT_CHARS // 4}, {sc['per']}, seed={i}, lead={short_lead})[1], "
                       f"token_rate={sc['rate']}), " for i in seeds)
    # The demo LM answers in the order of the requests: the warm-up, the shorts before, the measured, the shorts after.
    replies = short_replies(SHORT_SEEDS["before"][:shorts]) + replies + ", " + short_replies(SHORT_SEEDS["after"][:shorts])
    warm = ("Reply(chunks=_answer({}, {}, seed=999)[1], token_rate={})".format(sc["warm_tokens"], sc["per"], sc["rate"])
            if sc.get("warm_tokens") else "'[[ ## answer ## ]]\\nwarm up\\n\\n[[ ## completed ## ]]'")
    setup = (
        'import os, pathlib, time\n'
        'os.environ["JUPYTER_STREAM_DEMO_RATE"] = "0"  # before the demo server starts; each reply sets its rate\n'
        "%load_ext jupyter_stream\n"
        "from jupyter_stream.demo import Reply, shared_server\n"
        + ANSWER_SRC + "\n"
        "shared_server().script(" + warm + ", " + replies + ")\n"
        + setup_extra
    )
    def barrier(ready: str, go: str) -> str:
        return (f'pathlib.Path("{ready}").write_text("1")\n'
                f'while not pathlib.Path("{go}").exists():\n'
                "    time.sleep(0.02)")
    flag = " --background" if n > 1 else ""
    cells = [setup, '%%stream "question -> answer"\nWarm up.']
    if shorts:  # (c): after the warm-up, one short stream after another
        cells += [barrier(f"ready0-{name}", f"go0-{name}")]
        cells += [f'%%stream "question -> answer"\nShort {i}.' for i in range(shorts)]
    cells += [barrier(f"ready-{name}", f"go-{name}")]
    cells += [f'%%stream "question -> answer"{flag}\nWrite {i}.' for i in range(n)]
    if shorts:  # (c): after the measured stream (and its end, its heap read), as many short streams again
        cells += [barrier(f"ready2-{name}", f"go2-{name}")]
        cells += [f'%%stream "question -> answer"\nShort {shorts + i}.' for i in range(shorts)]
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": s,
                   "id": f"cell-{i}"} for i, s in enumerate(cells)],
    }


# ---------------------------------------------------------------------------------------- JupyterLab
def missing() -> list[str]:
    out = []
    if shutil.which("chromium") is None:
        out.append("chromium (make chromium)")
    for module in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(module) is None:
            out.append(module)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), "utf-8")


class Lab:
    """A JupyterLab server in a temp dir (as tests/browser/conftest.py starts it)."""

    def __init__(self, base: Path, windowing: str = "none") -> None:
        self.base = base
        home, self.notebooks, workspaces = base / "home", base / "notebooks", base / "workspaces"
        for d in (home, self.notebooks, workspaces):
            d.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "OPENAI_", "IPYTHON", "XDG_"))}
        env.update(
            HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_DATA_DIR=str(home / "data"), JUPYTER_PLATFORM_DIRS="1", IPYTHONDIR=str(home / "ipython"),
            XDG_CONFIG_HOME=str(home / "xdg-config"), XDG_CACHE_HOME=str(home / "xdg-cache"),
            XDG_DATA_HOME=str(home / "xdg-data"), LITELLM_LOCAL_MODEL_COST_MAP="True",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        settings = home / "config" / "lab" / "user-settings" / "@jupyterlab"
        _write_json(settings / "notebook-extension" / "tracker.jupyterlab-settings", {"windowingMode": windowing})
        _write_json(settings / "apputils-extension" / "notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False})
        port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = base / "jupyterlab.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--IdentityProvider.token={self.token}",
             f"--port={port}", "--ServerApp.port_retries=0", "--ip=127.0.0.1", "--allow-root",
             f"--notebook-dir={self.notebooks}", f"--LabApp.workspaces_dir={workspaces}"],
            env=env, cwd=self.notebooks, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}: {self._tail()}")
            try:
                self.api("GET", "/api/status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"JupyterLab did not answer in 60 s: {self._tail()}")
                time.sleep(0.2)

    def _tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        try:
            for session in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{session['id']}")
        except (OSError, urllib.error.URLError, ValueError):
            pass

    def kernel_report(self, notebook: str) -> str:
        """The widgets' statuses and text lengths as the kernel of ``notebook`` holds them (for a failure)."""
        try:
            from jupyter_client import BlockingKernelClient

            [kid] = [s["kernel"]["id"] for s in self.api("GET", "/api/sessions") if s.get("path") == notebook]
            kc = BlockingKernelClient(connection_file=str(self.base / "home" / "runtime" / f"kernel-{kid}.json"))
            kc.load_connection_file()
            kc.start_channels()
            try:
                code = ("from ipywidgets.widgets.widget import _instances\n"
                        "print([(w.status, w.error[:80], [len(p.get('text') or '') for p in w.panes]) "
                        "for w in list(_instances.values()) if type(w).__name__ == 'StreamWidget'])")
                out: list[str] = []
                kc.execute_interactive(code, timeout=20, output_hook=lambda m: out.append(
                    m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
                return "".join(out).strip()
            finally:
                kc.stop_channels()
        except Exception as e:  # noqa: BLE001 - a diagnosis must not hide the failure it explains
            return f"(not read: {e!r})"

    def close(self) -> None:
        self.shutdown_kernels()
        for _ in range(2):  # the first SIGINT asks "Shutdown this Jupyter server (y/[n])?", the second confirms
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                time.sleep(0.3)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


# -------------------------------------------------------------------------------------------- a run
def _heap(cdp: Any) -> dict[str, float]:
    for _ in range(2):
        cdp.send("HeapProfiler.collectGarbage")
    return cdp.send("Runtime.getHeapUsage")


def _wait_file(path: Path, timeout: float, what: str, page: Any) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what} did not happen in {timeout:.0f} s")
        page.wait_for_timeout(100)


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))]


REC_JS = ("() => { const B = window.__bench; return {frames: B.frames, longtasks: B.longtasks, batches: B.batches, "
          "done: B.done, inView: B.inView ?? null, noLongtask: B.noLongtask || null}; }")

# (c)'s short streams, one after another: each widget scrolled into view in its lead-in (no text yet), then its text.
SHORTS_JS = """([a, b]) => {
  const ws = [...document.querySelectorAll('.jps-widget')].slice(a, b);
  for (const w of ws) if (w.dataset.status === 'running' && !w.dataset.benchSeen) {
    w.dataset.benchSeen = '1';
    w.scrollIntoView({ block: 'start' });
  }
  return [ws.filter(w => w.dataset.status === 'done').length,
          ws.map(w => (w.querySelector('.jps-pane[data-key="answer"] .jps-pane-text') || {}).textContent ?? null),
          ws.map(w => { const r = w.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })];
}"""


SHORT_SEEDS = {"before": range(200, 300), "after": range(100, 200)}
"""The seeds of (c)'s short streams' texts, before and after the long one."""


def run_shorts(lab: Lab, browser: Any, page: Any, name: str, sc: dict[str, Any], tmp: Path, say: Any,
               when: str) -> dict[str, Any]:
    """(c), `when` "before" or "after" the long stream: sc["shorts"] streams of SHORT_CHARS characters, one after
    another, traced."""
    k, n = sc["shorts"], sc["widgets"]
    barrier = "0" if when == "before" else "2"
    _wait_file(lab.notebooks / f"ready{barrier}-{name}", 90, f"{name}: the barrier before the short streams {when} "
               "the long one", page)
    page.evaluate("(n) => window.__bench.reset(n)", n)
    path = tmp / f"trace-{name}-short-{when}.json"
    browser.start_tracing(page=page, path=str(path), categories=MEASURE_CATEGORIES)
    (lab.notebooks / f"go{barrier}-{name}").write_text("1")
    say(f"  {name}: {k} short streams of {SHORT_CHARS:,} characters {when} the long one")
    deadline = time.monotonic() + k * (SHORT_CHARS / (4 * sc["per"] * sc["rate"]) + SHORT_LEAD_S + 10) + 30
    in_view: set[int] = set()
    first = 1 if when == "before" else 1 + k + n  # the warm-up's widget, the shorts before, the long one
    while True:
        done, texts, shown = page.evaluate(SHORTS_JS, [first, first + k])
        in_view |= {i for i, v in enumerate(shown) if v and texts[i]}
        if done >= k:
            break
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{name}: {done} of {k} short streams done")
        page.wait_for_timeout(100)
    page.wait_for_timeout(500)
    browser.stop_tracing()
    done, texts, _ = page.evaluate(SHORTS_JS, [first, first + k])
    rec = page.evaluate(REC_JS)
    want = [answer(SHORT_CHARS // 4, sc["per"], seed=i)[0] for i in SHORT_SEEDS[when][:k]]
    if texts != want:
        raise BenchmarkError(f"{name}: a short stream's text is wrong (lengths {[len(t or '') for t in texts]})")
    return {"trace": str(path), "batches": [b for b in rec["batches"] if b[3] > 0], "in_view": len(in_view)}


def run_scenario(lab: Lab, browser: Any, name: str, sc: dict[str, Any], say: Any, setup_extra: str = "",
                 profile: str | None = None, page_css: str = "", tmp: Path | None = None) -> dict[str, Any]:
    tmp = tmp or lab.base
    nb = f"browser-{name}.ipynb"
    _write_json(lab.notebooks / nb, notebook(name, sc, setup_extra))
    ready, go = lab.notebooks / f"ready-{name}", lab.notebooks / f"go-{name}"
    for f in (ready, go, *(lab.notebooks / f"{x}{b}-{name}" for x in ("ready", "go") for b in "02")):
        f.unlink(missing_ok=True)
    n = sc["widgets"]
    expected = [answer(sc["tokens"], sc["per"], seed=i)[0] for i in range(n)]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    context.add_init_script(PROBE_JS)
    if page_css:  # an experiment: a stylesheet added to the page
        context.add_init_script("document.addEventListener('DOMContentLoaded', () => { const s = "
                                "document.createElement('style'); s.textContent = " + json.dumps(page_css)
                                + "; document.head.appendChild(s); })")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{lab.url}/lab/tree/{nb}?token={lab.token}&reset")
        page.get_by_text(IDLE, exact=True).wait_for(timeout=90_000)
        cdp = context.new_cdp_session(page)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        before = None
        if sc.get("shorts"):  # (c): short streams first (after the warm-up), then the long one
            page.evaluate("(k) => { window.__bench.first = 1 + k; }", sc["shorts"])
            before = run_shorts(lab, browser, page, name, sc, tmp, say, "before")
        _wait_file(ready, 90, f"{name}: the warm-up stream", page)
        page.wait_for_timeout(1000)  # the warm-up's last frames and its end
        if not page.evaluate(SCROLL_END_JS):
            raise BenchmarkError(f"{name}: no notebook scroller (.jp-WindowedPanel-outer) in the page")
        page.wait_for_timeout(300)
        heap0 = _heap(cdp)
        page.evaluate("(n) => window.__bench.reset(n)", n)
        t_go = time.monotonic()
        # Always a Chrome trace (the main thread's tasks, their wall and CPU time): with --profile --trace, kept.
        trace_path = profile if profile and profile.endswith(".json") else str(tmp / f"trace-{name}.json")
        browser.start_tracing(page=page, path=trace_path, categories=MEASURE_CATEGORIES)
        if profile and not profile.endswith(".json"):
            cdp.send("Profiler.enable")
            cdp.send("Profiler.setSamplingInterval", {"interval": 500})
            cdp.send("Profiler.start")
        go.write_text("1")
        say(f"  {name}: streaming ({sc['label']})")
        deadline = t_go + (sc["seconds"] + sc["lead_s"]) * 4 + 60
        marked = False
        heap_mid, chars_mid, g0, g1 = None, 0, 0.0, 0.0
        t_seen = None  # when the poll saw every measured widget done (if the observer missed one turning done)
        while True:
            state = page.evaluate(DONE_JS)
            if heap_mid is None and page.evaluate(RUNNING_JS, n):
                if sc.get("shorts"):  # (c): its short streams' cells follow it: scrolled into view (no text yet)
                    page.evaluate(f"() => ({MEASURED_JS})()[0].scrollIntoView({{ block: 'start' }})")
                # Every widget shown and running (in the lead-in: no text yet): the heap again, to tell the fixed
                # cost of each widget shown from the growth per character.
                chars_mid, g0 = page.evaluate(SHOWN_JS)
                heap_mid = _heap(cdp)
                g1 = page.evaluate(SHOWN_JS)[1]
            if not marked:
                marked = page.evaluate(MARK_JS, n)
            if state[0] >= n or state[1] >= n:
                t_seen = state[2]
                break
            if time.monotonic() > deadline:
                statuses = page.evaluate(f"() => ({MEASURED_JS})().map(w => [w.dataset.status, "
                                         "(w.querySelector('.jps-pane-text') || {}).textContent?.length ?? null, "
                                         "w.querySelector('.jps-title')?.textContent ?? null])")
                raise BenchmarkError(f"{name}: {state[0]} of {n} widgets seen turning done after "
                                     f"{time.monotonic() - t_go:.0f} s; statuses in the page {statuses}, in the "
                                     f"kernel {lab.kernel_report(nb)}")
            page.wait_for_timeout(100 if heap_mid is None else 500)
        wall = time.monotonic() - t_go
        page.wait_for_timeout(SETTLE_S * 1000)
        browser.stop_tracing()
        if profile and not profile.endswith(".json"):
            Path(profile).write_text(json.dumps(cdp.send("Profiler.stop")["profile"]))
        heap1 = _heap(cdp)
        rec = page.evaluate(REC_JS)
        end = page.evaluate(END_JS)  # scrolls: after the records and the heap
        after = run_shorts(lab, browser, page, name, sc, tmp, say, "after") if sc.get("shorts") else None
    finally:
        context.close()
        lab.shutdown_kernels()

    # ---- checks
    if len(end["texts"]) != n:
        raise BenchmarkError(f"{name}: {len(end['texts'])} measured widgets in the page, expected {n}")
    # Streams started at once may take the scripted replies in any order: each text must be one of them.
    for i, (got, want) in enumerate(zip(sorted(t or "" for t in end["texts"]), sorted(expected))):
        if got != want:
            k = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]), min(len(got), len(want)))
            a, b = got[max(0, k - 20):k + 20], want[max(0, k - 20):k + 20]
            raise BenchmarkError(f"{name}: a pane's text is wrong (length {len(got)} vs {len(want)}, first "
                                 f"difference at {k}: {a!r} vs {b!r})")
    if any(s != "done" for s in end["statuses"]):
        raise BenchmarkError(f"{name}: widget statuses {end['statuses']}")
    if rec["noLongtask"]:
        raise BenchmarkError(f"{name}: no longtask observer in this browser: {rec['noLongtask']}")

    # ---- figures
    batches = [b for b in rec["batches"] if b[3] > 0]
    if not batches:
        raise BenchmarkError(f"{name}: the widget reported no batch (is the probe in the built widget.js?)")
    t_first = batches[0][0]
    t_done = max(rec["done"]) if len(rec["done"]) >= n else t_seen
    t_end = t_done + SETTLE_S * 1000
    # The benchmark's own forced GC (the heap read once every widget streams, from g0 to g1) is left out: the
    # long tasks that overlap it, the frame interval(s) and batches around it.
    def gc(a: float, b: float) -> bool:
        return heap_mid is not None and a <= g1 and b >= g0

    tasks = [(s, d) for s, d in rec["longtasks"] if t_first - 1 <= s <= t_end]
    longs = [d for s, d in tasks if not gc(s, s + d)]
    frames = [t for t in rec["frames"] if t_first <= t <= t_done]
    gaps = [b - a for a, b in zip(frames, frames[1:]) if not gc(a, b)]
    applied = [b for b in batches if b[2] > 0 and b[0] <= t_done and not gc(b[0], b[2])]
    chars = sum(len(t) for t in expected)

    # From the trace: the long tasks by wall and by CPU time, and each batch's CPU (the task its frame ran in).
    tr = read_trace(trace_path)
    lt = trace_long_tasks(tr["tasks"], t_first, t_end, gc)
    cpus = cpu_per_batch(tr["tasks"], applied)
    for b, c in zip(applied, cpus):
        b.append(c)
    cpu_c = None
    if before is not None and after is not None:  # (c): CPU per batch near 10k (shorts, long stream) and near the end
        lo = [b for b in applied if NEAR_10K[0] <= b[4] <= NEAR_10K[1]]
        sides = {}
        for when, short in (("before", before), ("after", after)):
            s_lo = [b for b in short["batches"] if b[2] > 0 and NEAR_10K[0] <= b[4] <= NEAR_10K[1]]
            sides[when] = (s_lo, cpu_per_batch(read_trace(short["trace"])["tasks"], s_lo))
            Path(short["trace"]).unlink(missing_ok=True)
        hi = [b for b in applied if b[4] >= NEAR_END * chars]
        cpu_c = {"lo": cpu_window([b[5] for b in lo] + sides["before"][1] + sides["after"][1],
                                  lo + sides["before"][0] + sides["after"][0]),
                 "lo_before": cpu_window(sides["before"][1], sides["before"][0]),
                 "lo_after": cpu_window(sides["after"][1], sides["after"][0]),
                 "lo_long": cpu_window([b[5] for b in lo], lo),
                 "shorts": sc["shorts"], "shorts_in_view": before["in_view"] + after["in_view"],
                 "hi": cpu_window([b[5] for b in hi], hi), "hi_from": int(NEAR_END * chars)}
    if trace_path != profile:
        Path(trace_path).unlink(missing_ok=True)

    per_size = by_size(applied)
    overflowing = [p for p in end["panes"] if p and p[0] > p[2] + 1]
    at_bottom = [p for p in overflowing if p[0] - p[1] - p[2] < 8]
    heap_growth = heap1["usedSize"] - heap0["usedSize"]
    # Per character: from the read once every widget streams to the end (the characters shown in between); the
    # rest of the growth up to that read, less those characters' share, is the fixed cost of each widget shown.
    if heap_mid is not None and chars - chars_mid > 0.25 * chars:
        per_char = (heap1["usedSize"] - heap_mid["usedSize"]) / (chars - chars_mid)
        fixed = (heap_mid["usedSize"] - heap0["usedSize"] - per_char * chars_mid) / n
    else:
        per_char, fixed = None, None
    return {
        "name": name, "label": sc["label"], "widgets": n, "chars": chars, "wall_s": wall,
        "warm_chars": 4 * sc.get("warm_tokens", 0),
        "stream_s": (t_done - t_first) / 1000,
        "long_tasks": len(longs), "long_max_ms": max(longs, default=0.0), "long_total_ms": sum(longs),
        "trace_long_wall": lt["wall"], "trace_long_cpu": lt["cpu"], "trace_cpu_max_ms": lt["cpu_max_ms"],
        "trace_cpu_max_after_end_s": (lt["cpu_max_at"] - t_done) / 1000,
        "trace_long_list": lt["cpu_of_wall"], "main_busy_pct": 100 * lt["busy_ms"] / 1000 / max(1e-9, lt["span_s"]),
        "cpu_c": cpu_c,
        "frames": len(frames), "fps": (len(frames) - 1) / max(1e-9, (t_done - t_first) / 1000),
        "frame_p50_ms": _pct(gaps, 50), "frame_p95_ms": _pct(gaps, 95), "frame_max_ms": max(gaps, default=0.0),
        "batches": len(applied), "apply_ms": statistics.median(b[2] - b[0] for b in applied),
        "apply_p95_ms": _pct([b[2] - b[0] for b in applied], 95), "per_size": per_size,
        "heap0": heap0, "heap1": heap1, "heap_growth": heap_growth, "heap_total_per_char": heap_growth / chars,
        "heap_mid": heap_mid, "chars_mid": chars_mid, "heap_per_char": per_char, "heap_fixed_per_widget": fixed,
        "gc_ms": g1 - g0 if heap_mid is not None else None,
        "long_tasks_in_gc": [[round(s - t_first), round(d)] for s, d in tasks if gc(s, s + d)],
        "long_task_list": [[round(st - t_first), round(d)] for st, d in rec["longtasks"] if t_first - 1 <= st <= t_end],
        "series": [[b[4], round(b[2] - b[0], 2), round(b[1] - b[0], 2), b[3],
                    None if b[5] is None else round(b[5], 2)] for b in applied],
        "in_view": rec["inView"], "marked": end["marked"], "kept": end["markedConnected"], "overflowing": len(overflowing),
        "at_bottom": len(at_bottom), "end_panes": end["panes"], "page_errors": errors,
    }


def read_trace(path: str) -> dict[str, Any]:
    """The page's main thread in a Chrome trace: its top-level tasks as (start, wall ms, CPU ms), start in the page's
    clock (`performance.now()`): the probe's marks (one a batch) give the trace's clock against the page's. CPU is
    the task's thread time (`tdur`): what the main thread computed, not the time it waited for a core."""
    data = json.loads(Path(path).read_text("utf-8"))
    events = data["traceEvents"] if isinstance(data, dict) else data
    marks = [e for e in events if e.get("name") == "jps-batch" and e.get("cat") == "blink.user_timing"]
    if not marks:
        raise BenchmarkError(f"no batch marks in the trace {path} (is the probe in the page?)")
    main = (marks[0]["pid"], marks[0]["tid"])
    offset = statistics.median(e["ts"] / 1000 - e["args"]["data"]["startTime"] for e in marks)
    runs = sorted((e for e in events if e.get("ph") == "X" and e.get("name") == "RunTask"
                   and (e.get("pid"), e.get("tid")) == main), key=lambda e: e["ts"])
    tasks: list[tuple[float, float, float]] = []
    end = -1.0
    for e in runs:  # top level only (a task run inside another is in its time)
        if e["ts"] < end:
            continue
        end = e["ts"] + e.get("dur", 0)
        tasks.append((e["ts"] / 1000 - offset, e.get("dur", 0) / 1000, e.get("tdur", e.get("dur", 0)) / 1000))
    return {"tasks": tasks, "marks": len(marks)}


def trace_long_tasks(tasks: list[tuple[float, float, float]], a: float, b: float,
                     skip: Any = lambda s, e: False) -> dict[str, Any]:
    """The main-thread tasks over LONG_TASK_MS from `a` to `b` (page clock) in a trace: by wall time (as the
    `longtask` observer counts them: waiting for a core counts) and by CPU time (the main thread busy)."""
    win = [t for t in tasks if a - 1 <= t[0] <= b and not skip(t[0], t[0] + t[1])]
    wall = [t for t in win if t[1] > LONG_TASK_MS]
    busy = [t for t in win if t[2] > LONG_TASK_MS]
    top = max(win, key=lambda t: t[2], default=(float("nan"), 0.0, 0.0))
    return {"wall": len(wall), "cpu": len(busy), "cpu_max_ms": top[2], "cpu_max_at": top[0],
            "cpu_of_wall": [[round(t[1]), round(t[2], 1)] for t in wall],
            "busy_ms": sum(t[2] for t in win), "span_s": (b - a) / 1000}


def cpu_per_batch(tasks: list[tuple[float, float, float]], batches: list[list[float]]) -> list[float | None]:
    """Each batch's main-thread CPU: the thread time of the task its frame ran in (the animation frame: the widget's
    writes, then style, layout, paint of that frame), found by the batch's start in the page's clock."""
    starts = [t[0] for t in tasks]
    import bisect

    out = []
    for b in batches:
        i = bisect.bisect_right(starts, b[0]) - 1
        ok = i >= 0 and tasks[i][0] <= b[0] <= tasks[i][0] + tasks[i][1] + 0.01
        out.append(tasks[i][2] if ok else None)
    return out


def cpu_window(cpus: list[float | None], batches: list[list[float]]) -> dict[str, Any]:
    """The CPU per batch of a window of batches (those found in the trace): median, mean, and their sizes."""
    got = [(c, b) for c, b in zip(cpus, batches) if c is not None]
    if not got:
        return {"batches": 0, "cpu_ms": float("nan"), "cpu_mean_ms": float("nan"), "chars_per_batch": 0,
                "wall_ms": float("nan"), "of": len(batches)}
    return {"batches": len(got), "of": len(batches), "cpu_ms": statistics.median(c for c, _ in got),
            "cpu_mean_ms": statistics.fmean(c for c, _ in got),
            "chars_per_batch": statistics.median(b[3] for _, b in got),
            "wall_ms": statistics.median(b[2] - b[0] for _, b in got if b[2] > 0)}


def by_size(applied: list[list[float]]) -> list[dict[str, Any]]:
    """The apply time per batch at 10k, 100k and 1M characters (and the largest length reached): the batches within
    10% of each length, at least the BUCKET nearest to it."""
    def at(size: int) -> dict[str, Any] | None:
        near = sorted(applied, key=lambda b: abs(b[4] - size))
        win = [b for b in near if abs(b[4] - size) <= 0.1 * size]
        win = win if len(win) >= BUCKET else near[:BUCKET]
        if len(win) < 3:
            return None
        return {"size": size, "batches": len(win), "apply_ms": statistics.median(b[2] - b[0] for b in win),
                "apply_p95_ms": _pct([b[2] - b[0] for b in win], 95),
                "js_ms": statistics.median(b[1] - b[0] for b in win),
                "cpu_ms": statistics.median([b[5] for b in win if len(b) > 5 and b[5] is not None] or [float("nan")]),
                "chars_per_batch": statistics.median(b[3] for b in win)}

    biggest = max(b[4] for b in applied)
    sizes = [s for s in (10_000, 100_000, 1_000_000) if s <= biggest * 1.02]
    if not sizes or biggest * 0.95 > sizes[-1] * 1.5:
        sizes.append(int(biggest * 0.95))  # the largest size reached
    return [r for r in (at(s) for s in sizes) if r]


# ------------------------------------------------------------------------------------ the widget alone
# The built widget (jupyter_stream/static) in a page of its own, fed by a stand-in model: no JupyterLab, kernel, LM or
# server sharing the machine's two cores, and no forced GC just before the text starts. A first widget streams
# a fifth of the length (the code warm, the heap in its steady state), then ALONE_SHORT widgets of 20k characters, one
# of the measured length, and ALONE_SHORT more of 20k, each a new widget fed one delta of ALONE_DELTA characters (the
# benchmark's answer text) every 16 ms, as (c) gets them.
ALONE_DELTA = 1_600
ALONE_SHORT = 5
"""Widgets of 20,000 characters streamed before the long one, and as many after it."""
ALONE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>body { margin: 0; font-family: sans-serif }
#out { width: 1100px; margin: 20px; display: flex; flex-direction: column }</style></head>
<body><div id="out"></div><script type="module">
import widget, { useStylesheet } from "./widget.js";
useStylesheet(await (await fetch("./widget.css")).text());
class Model {
  constructor(uid) {
    this.attrs = { _uid: uid, title: "question -> answer", model_name: "demo", status: "running", status_message: "",
      status_log: [], error: "", markdown: false, started_at: Date.now(), stats: {}, panes: [], snapshot_seq: 0,
      prediction: {}, lm_calls: [] };
    this.handlers = new Map();
  }
  get(n) { return this.attrs[n]; }
  set(n, v) { this.attrs[n] = v; this.trigger("change:" + n); }
  on(n, cb) { if (!this.handlers.has(n)) this.handlers.set(n, new Set()); this.handlers.get(n).add(cb); }
  off(n, cb) { if (!n) this.handlers.clear(); else if (!cb) this.handlers.delete(n); else this.handlers.get(n)?.delete(cb); }
  send() {}
  trigger(n, ...a) { for (const cb of [...(this.handlers.get(n) ?? [])]) cb(...a); }
}
let n = 0, text = "", cur = null;
window.setText = (t) => { text = t; };
// A new widget in the page (the last one goes).
window.open = () => {
  const el = document.createElement("div");
  document.getElementById("out").replaceChildren(el);
  const model = new Model("w" + ++n);
  widget.initialize({ model });
  widget.render({ model, el });
  cur = { model, el, seq: 0 };
};
// text[from:to] to the current widget, one delta of `per` characters every 16 ms; then the pane's length.
window.feed = (from, to, per) => new Promise((resolve) => {
  let i = from;
  const step = () => {
    cur.model.trigger("msg:custom", { type: "deltas", seq: ++cur.seq, items: [["answer", text.slice(i, Math.min(i + per, to)), false]] }, []);
    i += per;
    if (i < to) setTimeout(step, 16);
    else setTimeout(() => resolve(cur.el.querySelector(".jps-pane-text").textContent.length), 300);
  };
  step();
});
window.stream = (length, per) => { window.open(); return window.feed(0, length, per); };
window.ready = true;
</script></body></html>"""


def _cpu_window(browser: Any, page: Any, a: int, b: int, *, new: bool) -> tuple[float, int]:
    """(main-thread CPU ms, deltas) while the widget (a new one: first fed text[:a] untraced) gets text[a:b]."""
    if new:
        page.evaluate("() => window.open()")
        page.evaluate("([a, b, per]) => window.feed(a, b, per)", [0, a, ALONE_DELTA])
    n0 = page.evaluate("() => window.__bench.batches.length")
    with tempfile.TemporaryDirectory(prefix="jps-alone-") as tmp:
        path = Path(tmp) / "trace.json"
        browser.start_tracing(page=page, path=str(path), categories=["devtools.timeline", "disabled-by-default-devtools.timeline"])
        page.evaluate("([a, b, per]) => window.feed(a, b, per)", [a, b, ALONE_DELTA])
        browser.stop_tracing()
        data = json.loads(path.read_text("utf-8"))
    n1 = page.evaluate("() => window.__bench.batches.length")
    events = data["traceEvents"] if isinstance(data, dict) else data
    mains = {(e["pid"], e["tid"]) for e in events
             if e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"}
    per_thread: dict[Any, float] = {}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if e.get("name") == "RunTask" and e.get("ph") == "X" and key in mains:
            per_thread[key] = per_thread.get(key, 0.0) + e.get("tdur", e.get("dur", 0)) / 1000
    if not per_thread or n1 <= n0:
        names = sorted({e.get("name") for e in events})[:30]
        raise BenchmarkError(f"the widget alone: no main-thread tasks or batches in the trace ({n0}-{n1}, "
                             f"{len(mains)} main threads, {len(events)} events: {names})")
    return max(per_thread.values()), -(-(b - a) // ALONE_DELTA)


def run_alone(browser: Any, chars: int, warm: int) -> dict[str, Any]:
    static = Path(__file__).resolve().parent.parent / "jupyter_stream" / "static"
    files = {"/index.html": (ALONE_PAGE.encode(), "text/html"),
             "/widget.js": ((static / "widget.js").read_bytes(), "text/javascript"),
             "/widget.css": ((static / "widget.css").read_bytes(), "text/css")}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(PROBE_JS)
    context.route("http://widget.invalid/**", lambda route: route.fulfill(
        body=files[route.request.url.split("widget.invalid", 1)[1]][0],
        content_type=files[route.request.url.split("widget.invalid", 1)[1]][1]))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto("http://widget.invalid/index.html")
        page.wait_for_function("window.ready === true")
        text = answer(chars // 4 + 1)[0][:chars]
        page.evaluate("(t) => window.setText(t)", text)
        stream = "([n, per]) => window.stream(n, per)"
        page.evaluate(stream, [warm, ALONE_DELTA])
        page.evaluate("() => window.__bench.reset()")
        # Short widgets before and after the long one (the same conditions on average), for enough batches at 10k.
        short = 2 * 10_000
        shorts = [page.evaluate(stream, [short, ALONE_DELTA]) for _ in range(ALONE_SHORT)]
        shown = page.evaluate(stream, [chars, ALONE_DELTA])
        shorts += [page.evaluate(stream, [short, ALONE_DELTA]) for _ in range(ALONE_SHORT)]
        batches = page.evaluate("() => window.__bench.batches")
        # Main-thread CPU time per batch (thread time, not wall time: the same whatever else runs on the machine),
        # from a Chrome trace of the batches around 10k (ALONE_SHORT new widgets) and those before the end.
        cpu_10k = [_cpu_window(browser, page, 6_000, 14_000, new=True) for _ in range(ALONE_SHORT)]
        page.evaluate("() => window.open()")
        page.evaluate("([a, b, per]) => window.feed(a, b, per)", [0, chars - 40_000, ALONE_DELTA])
        cpu_end = _cpu_window(browser, page, chars - 40_000, chars, new=False)
    finally:
        context.close()
    if errors or shown != chars or any(x != short for x in shorts):
        raise BenchmarkError(f"the widget alone: {shown} of {chars} characters shown; page errors {errors}")
    applied = [b for b in batches if b[2] > 0 and b[3] > 0]
    cpu_lo = sum(ms for ms, _ in cpu_10k) / sum(k for _, k in cpu_10k)
    return {"chars": chars, "warm": warm, "batches": len(applied), "per_size": by_size(applied),
            "cpu_10k_ms": cpu_lo, "cpu_10k_deltas": sum(k for _, k in cpu_10k),
            "cpu_end_ms": cpu_end[0] / cpu_end[1], "cpu_end_deltas": cpu_end[1], "cpu_end_from": chars - 40_000,
            "series": [[b[4], round(b[2] - b[0], 2), round(b[1] - b[0], 2), b[3]] for b in applied]}


# ------------------------------------------------------------------------------------------- section
def _skipped(why: str) -> dict[str, Any]:
    return {"markdown": ["## 11. The browser's own cost", "", f"Skipped: {why}."], "targets": [],
            "raw": {"skipped": why}}


def run(*, quick: bool, smoke: bool = False, only: list[str] | None = None, setup_extra: str = "",
        profile: str | None = None, trace: bool = False, page_css: str = "", windowing: str = "none",
        log: Any = None) -> dict[str, Any]:
    """Section 11: the widget's main-thread cost in JupyterLab in Chromium, scenarios (a)-(c) (``--smoke``: (a))."""
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    gone = missing()
    if gone:
        return _skipped("needs " + ", ".join(gone))
    from playwright.sync_api import sync_playwright

    scs = scenarios(quick, smoke)
    names = only or (["a"] if smoke else [*scs, "w"])
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="jps-browser-bench-") as tmp:
        lab = Lab(Path(tmp), windowing)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                version = browser.version
                try:
                    for name in names:
                        if name == "w":
                            say("  w: the widget alone")
                            chars = 250_000 if quick else 1_000_000
                            results[name] = run_alone(browser, chars, warm=chars // 5)
                            continue
                        out = f"{profile}-{name}{'.json' if trace else '.cpuprofile'}" if profile else None
                        results[name] = run_scenario(lab, browser, name, scs[name], say, setup_extra, out, page_css)
                finally:
                    browser.close()
        finally:
            lab.close()
    import jupyterlab

    load1 = os.getloadavg()
    return report(results, quick=quick, smoke=smoke, chromium=version, jupyterlab=jupyterlab.__version__,
                  seconds=time.perf_counter() - t0, load=(load0, load1), windowing=windowing)


def _when(after_end_s: float) -> str:
    """A task's time against the stream's end (the last widget's ``done``), in words."""
    if after_end_s >= 0:
        return f"{after_end_s:.1f} s after the end"
    return f"{-after_end_s:.1f} s before the end"


def _per_char(r: dict[str, Any]) -> str:
    return "" if r["heap_per_char"] is None else f"{r['heap_per_char']:.1f}"


def _ms(x: float) -> str:
    return f"{x:.1f}"


def report(results: dict[str, dict[str, Any]], *, quick: bool, smoke: bool, chromium: str, jupyterlab: str,
           seconds: float, load: tuple[Any, Any], windowing: str = "none") -> dict[str, Any]:
    md: list[str] = []
    emit = md.append
    alone = results.get("w")
    results = {k: v for k, v in results.items() if k != "w"}
    emit("## 11. The browser's own cost")
    emit("")
    cells = "every cell laid out" if windowing == "none" else f"windowingMode {windowing}"
    emit(f"JupyterLab {jupyterlab} in headless Chromium {chromium} (1280x900, {cells}), showing only "
         "the scenario's notebook; the kernel's demo LM streams a scripted `answer` at a set rate (`benchmarks/"
         "_browser.py`). Measured from the first delta applied to the last widget's `done` (frames, batches), "
         f"long tasks (main-thread tasks over 50 ms, `PerformanceObserver`) until {SETTLE_S:g} s after it. "
         "Apply: from the start of the widget's update of a frame to the end of that frame's rendering "
         "(style, layout, paint: the batch's whole main-thread cost); JS: the widget's own code in it. "
         "Heap: CDP `usedSize` after two forced GCs (see below). Same machine as above, shared by server, kernel, LM and browser.")
    emit("")
    rows = []
    for r in results.values():
        rows.append([r["label"], f"{r['in_view']}/{r['widgets']}", f"{r['chars']:,}", f"{r['stream_s']:.1f}",
                     str(r["long_tasks"]),
                     _ms(r["long_max_ms"]), f"{r['trace_long_wall']} / {r['trace_long_cpu']}", _ms(r["trace_cpu_max_ms"]),
                     f"{r['main_busy_pct']:.0f}", f"{r['fps']:.0f}", _ms(r["frame_p95_ms"]), _ms(r["frame_max_ms"]),
                     str(r["batches"]), _ms(r["apply_ms"]), _ms(r["apply_p95_ms"]),
                     f"{r['heap_growth'] / 1e6:+.1f}", f"{r['heap_total_per_char']:.1f}", _per_char(r),
                     "" if r["heap_fixed_per_widget"] is None else f"{r['heap_fixed_per_widget'] / 1e3:.0f}",
                     f"{r['kept']}/{r['marked']}", f"{r['at_bottom']}/{r['overflowing']}"])
    emit(table(["scenario", "widgets in view", "characters", "stream s", "long tasks", "longest ms",
                "trace: tasks > 50 ms wall / CPU", "most CPU in a task ms", "main thread busy %", "fps", "frame p95 ms",
                "frame max ms", "batches", "apply ms (median)", "apply p95 ms", "heap MB", "heap B/char (all)",
                "heap B/char (text)", "heap kB per widget", "panes kept at the end",
                "panes at the end of their text"], rows, "lrrrrrrrrrrrrrrrrrrrr"))
    emit("")
    emit("Long tasks: \"long tasks\" and \"longest\" are the target's count (`PerformanceObserver` `longtask`: a task's wall "
         "time, so a task that waited for one of the two cores, busy with the kernel, the server, the LM or another job, "
         "counts as long though the page did little). The trace (a Chrome trace of every scenario, recorded while it "
         "streams) tells load from work: its tasks over 50 ms of wall time, and those over 50 ms of CPU (thread) time, "
         "which the page itself computed; \"most CPU in a task\" the largest; \"busy\" the main thread's CPU over the "
         "window. Tracing costs the page a little itself. The largest task by CPU: "
         + "; ".join(f"{r['label'].split(')')[0]}) {r['trace_cpu_max_ms']:.0f} ms, {_when(r['trace_cpu_max_after_end_s'])}"
                     for r in results.values()) + ". "
         "At the end of a stream, the widget's static snapshot (the result as HTML in an output of its own, for viewers "
         "without widgets; hidden where the widget shows) arrives in one output update, and JupyterLab parses every HTML "
         "output for its table of contents (its sanitizer, then a DOM), open or not: linear in the text, about 45 ms of a "
         "50 ms task at 1,000,000 characters in a CPU profile (`_browser.py --only c --profile PREFIX`).")
    emit("")
    size_rows = []
    for r in results.values():
        for s in r["per_size"]:
            size_rows.append([r["label"], f"{s['size']:,}", str(s["batches"]), f"{s['chars_per_batch']:,.0f}",
                              _ms(s["apply_ms"]), _ms(s["apply_p95_ms"]), _ms(s["js_ms"]), f"{s['cpu_ms']:.2f}"])
    if size_rows:
        emit("Time to apply one delta batch by the pane's length (batches within 10% of it; medians):")
        emit("")
        emit(table(["scenario", "pane characters", "batches", "characters per batch", "apply ms", "apply p95 ms",
                    "JS ms", "CPU ms"], size_rows, "lrrrrrrr"))
        emit("")
    starts = []
    for r in results.values():
        ser = r["series"]  # [pane length, apply ms, JS ms, characters] per batch, in order
        if r["widgets"] == 1 and len(ser) >= 3 * START_BATCHES:
            first, then = ser[:START_BATCHES], ser[START_BATCHES:2 * START_BATCHES]
            starts.append(f"{r['label'].split(')')[0]}) {statistics.median(x[1] for x in first):.1f} ms over "
                          f"{first[0][0]:,}-{first[-1][0]:,} characters, then {statistics.median(x[1] for x in then):.1f} "
                          f"ms over {then[0][0]:,}-{then[-1][0]:,}")
    if starts:
        emit(f"The start of a stream: the apply time of its first {START_BATCHES} batches, then of the next "
             f"{START_BATCHES} (about the same pane length: both overflow the pane, both within its first chunks): "
             + "; ".join(starts) + ". The 10k figures above fall at the start of each stream"
             + "".join(f"; in {r['label'].split(')')[0]}) after a warm-up stream of {r['warm_chars']:,} characters (the "
                       "same deltas at the same rate) in the same page, so that they are the start of a pane and not the "
                       "first batches the page applies (see `_browser.py`)" for r in results.values() if r.get("warm_chars"))
             + ".")
        emit("")
    for r in results.values():
        cc = r.get("cpu_c")
        if not cc:
            continue
        lo, hi = cc["lo"], cc["hi"]
        emit(f"Main-thread CPU per batch in {r['label'].split(')')[0]}) (the target's figure): the thread time of the "
             "task each batch's frame ran in (the widget's writes, then that frame's style, layout, paint and commit), "
             "from the trace; thread time does not count the waits for a core, so it does not change with the load. "
             f"Near 10k: the batches at {NEAR_10K[0]:,}-{NEAR_10K[1]:,} characters of {cc['shorts']} short streams of "
             f"{SHORT_CHARS:,} characters run before the long one and {cc['shorts']} after it in the same page (same "
             "deltas, same rate, a new widget each, scrolled into view before its text: "
             f"{cc['shorts_in_view']}/{2 * cc['shorts']} seen in view) and of the long one, pooled (the load of the "
             "machine drifts over a run: the shorts on both sides weigh on the 10k figure as it weighs on the long "
             f"stream, on average); near the end: the long stream's batches from {cc['hi_from']:,} characters on:")
        emit("")

        def row(what: str, w: dict[str, Any]) -> list[str]:
            return [what, str(w["batches"]), f"{w['chars_per_batch']:,.0f}", f"{w['cpu_ms']:.2f}",
                    f"{w['cpu_mean_ms']:.2f}", _ms(w["wall_ms"])]
        near = f"{NEAR_10K[0]:,}-{NEAR_10K[1]:,}"
        emit(table(["window", "batches", "characters per batch", "CPU ms (median)", "CPU ms (mean)", "apply ms (wall, median)"],
                   [row(f"{near} (all)", lo), row(f"{near}: the shorts before", cc["lo_before"]),
                    row(f"{near}: the long stream", cc["lo_long"]), row(f"{near}: the shorts after", cc["lo_after"]),
                    row(f"{cc['hi_from']:,}-{r['chars']:,}", hi)], "lrrrrr"))
        emit("")
    if alone:
        emit(f"The widget alone (`run_alone`): the same built `widget.js`/`widget.css` in a page of its own in the same "
             "Chromium, fed by a stand-in model one delta of "
             f"{ALONE_DELTA:,} characters every 16 ms (as (c) gets them) after a first widget streamed "
             f"{alone['warm']:,} characters (code warm, heap in its steady state); {ALONE_SHORT} widgets of 20,000 "
             f"characters stream before the long one and {ALONE_SHORT} after it (the batches near 10k pooled from "
             "them and the long one, under the same conditions on average): no JupyterLab, kernel, LM or server "
             "on the two cores, no forced GC just before the text. What grows with the text shows here; what changes "
             "in the run around the widget does not:")
        emit("")
        emit(table(["pane characters", "batches", "characters per batch", "apply ms", "apply p95 ms", "JS ms"],
                   [[f"{x['size']:,}", str(x["batches"]), f"{x['chars_per_batch']:,.0f}", _ms(x["apply_ms"]),
                     _ms(x["apply_p95_ms"]), _ms(x["js_ms"])] for x in alone["per_size"]], "rrrrrr"))
        emit("")
        emit(f"Main-thread CPU time (thread time from a Chrome trace: the same whatever else runs on the machine) per "
             f"delta of {ALONE_DELTA:,} characters, the widget alone: {alone['cpu_10k_ms']:.2f} ms from 6,000 to "
             f"14,000 characters ({alone['cpu_10k_deltas']} deltas, {ALONE_SHORT} new widgets), "
             f"{alone['cpu_end_ms']:.2f} ms from {alone['cpu_end_from']:,} to {alone['chars']:,} "
             f"({alone['cpu_end_deltas']} deltas): "
             f"{alone['cpu_end_ms'] / alone['cpu_10k_ms']:.2f}x. Everything on the page's main thread counts (the "
             "stand-in model's timers too, alike at both lengths).")
        emit("")
    rebuilt = [r["label"].split(")")[0] + ")" for r in results.values() if r["kept"] < r["marked"]]
    if rebuilt:
        emit(f"Panes not kept at the end ({', '.join(rebuilt)}): JupyterLab made a new view of the widget and dropped "
             "the old one's elements. It does that when the widget's output is updated (`update_display_data`, "
             "sent at the end by `jupyter_stream/notebook/display.py`): its widget renderer clears its node and "
             "renders the model again. The new view starts at the end of each pane's text.")
        emit("")
    gcs = [f"{r['label'].split(')')[0]})" + f" {r['gc_ms']:.0f} ms" for r in results.values() if r["gc_ms"] is not None]
    emit("Heap: \"all\" is the growth from the read after the warm-up to the end over every character shown; \"text\" "
         "the growth per character from a second read, once every measured widget is shown and running (each reply "
         f"first streams {LEAD_S:g} s of empty deltas where there are several widgets, 1 s otherwise: all cells have "
         "run, no text yet), to the end (the characters shown in between); \"per widget\" the growth up to that second read, less its characters' "
         "share at the \"text\" rate, per widget: what each widget shown costs whatever its length (its output, "
         "view, model and their state in JupyterLab). The second read forces two GCs in the page "
         f"({', '.join(gcs)}): the long tasks, frame intervals and batches that overlap them are left out.")
    emit("")
    emit(f"Section time {seconds:.0f} s; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after.")
    targets: list[tuple[str, str, bool]] = []
    for r in results.values():
        key = r["label"].split(")")[0] + ")"
        targets.append((f"browser {key}: no long task over {LONG_TASK_MS:.0f} ms from the first delta to "
                        f"{SETTLE_S:g} s after the end",
                        f"{r['long_tasks']} long tasks, longest {r['long_max_ms']:.0f} ms (trace: "
                        f"{r['trace_long_wall']} over 50 ms wall, {r['trace_long_cpu']} over 50 ms CPU; most CPU in "
                        f"a task {r['trace_cpu_max_ms']:.0f} ms, {_when(r['trace_cpu_max_after_end_s'])})",
                        r["long_tasks"] == 0))
        targets.append((f"browser {key}: the end keeps the panes (no rebuild) and their scroll (no jump to the top)",
                        f"{r['kept']}/{r['marked']} kept, {r['at_bottom']}/{r['overflowing']} at the end",
                        r["kept"] == r["marked"] > 0 and r["at_bottom"] == r["overflowing"]))
        per_char = r["heap_per_char"] if r["heap_per_char"] is not None else r["heap_total_per_char"]
        fixed = ("" if r["heap_fixed_per_widget"] is None else
                 f"; {r['heap_fixed_per_widget'] / 1e3:.0f} kB per widget shown, whatever its length")
        targets.append((f"browser {key}: JS heap growth <= {HEAP_BYTES_PER_CHAR:g} bytes per character shown",
                        f"{per_char:.1f} B/char (all: {r['heap_total_per_char']:.1f}, {r['heap_growth'] / 1e6:+.1f} MB "
                        f"for {r['chars']:,}{fixed})", per_char <= HEAP_BYTES_PER_CHAR))
    c = results.get("c")
    if c and c.get("cpu_c") and c["cpu_c"]["lo"]["batches"] and c["cpu_c"]["hi"]["batches"]:
        lo, hi = c["cpu_c"]["lo"], c["cpu_c"]["hi"]
        ratio = hi["cpu_ms"] / lo["cpu_ms"]
        targets.append((f"browser (c): main-thread CPU per batch at {c['cpu_c']['hi_from']:,}-{c['chars']:,} "
                        f"characters within 25% of {NEAR_10K[0]:,}-{NEAR_10K[1]:,} (medians, from a trace)",
                        f"{ratio:.2f}x ({hi['cpu_ms']:.2f} vs {lo['cpu_ms']:.2f} ms; {hi['batches']} and {lo['batches']} "
                        f"batches; wall: {hi['wall_ms']:.1f} vs {lo['wall_ms']:.1f} ms)", ratio <= FLAT))
    if alone:
        ratio = alone["cpu_end_ms"] / alone["cpu_10k_ms"]
        targets.append((f"browser, the widget alone: main-thread CPU per delta batch at {alone['chars']:,} characters "
                        "within 25% of 10,000 (CPU time, not wall time)", f"{ratio:.2f}x ({alone['cpu_end_ms']:.2f} vs {alone['cpu_10k_ms']:.2f} ms)",
                        ratio <= FLAT))
    raw = {k: {kk: vv for kk, vv in v.items()} for k, v in results.items()}
    if alone:
        raw["w"] = alone
    return {"markdown": md, "targets": targets, "raw": raw}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--smoke", action="store_true", help="scenario (a) only, tiny")
    ap.add_argument("--only", help="scenarios, comma-separated: a,b,c,w (w: the widget alone, no JupyterLab)")
    ap.add_argument("--setup-extra", default="", help="code appended to each notebook's first cell (experiments)")
    ap.add_argument("--profile", metavar="PREFIX", help="also record a CPU profile of each stream: PREFIX-a.cpuprofile")
    ap.add_argument("--trace", action="store_true", help="with --profile: a Chrome trace instead (PREFIX-a.json)")
    ap.add_argument("--page-css", default="", help="a stylesheet added to the page (experiments)")
    ap.add_argument("--windowing", default="none", help="JupyterLab's windowingMode (JupyterLab's default: "
                                                         "contentVisibility; here: none, every cell laid out)")
    ap.add_argument("--json", help="also write the raw numbers to this file")
    args = ap.parse_args(argv)
    res = run(quick=args.quick or args.smoke, smoke=args.smoke, only=args.only.split(",") if args.only else None,
              setup_extra=args.setup_extra, profile=args.profile, trace=args.trace, page_css=args.page_css,
              windowing=args.windowing)
    print_section(res, args.json)
    return 0


if __name__ == "__main__":
    from run import exit_with

    exit_with(main)
