"""The notebook wire and kernel responsiveness, measured in a real ipykernel (benchmark items 5 and 6).

    .venv/bin/python benchmarks/_notebook.py            # full sizes (about 2.5 min), prints the markdown
    .venv/bin/python benchmarks/_notebook.py --quick    # smoke sizes (about 15 s)

``run(quick=...)`` returns ``{"markdown": [...], "targets": [(name, measured, met)], "raw": {...}}``.

Set-up: a real kernel (``jupyter_client.KernelManager``, as ``tests/notebook/_kernel.py`` starts it) whose
``js.LM`` points at the benchmark LM server (``_server.ServerProcess``: a ``DemoServer`` in its own process).
Before each cell the server is scripted (``POST /v1/demo/script``) with one chat-adapter reply of exactly
N ``answer`` deltas (4-character tokens) and a token rate (2,000 tokens/s, or 0 = as fast as it can write).

The wire: this process subscribes its own ZMQ SUB socket (no high-water mark, so nothing is dropped on our
side) to the kernel's iopub port and records every multipart message with its receive time. "Bytes" are
raw wire bytes: the sum of the lengths of all frames of a message (topic, ``<IDS|MSG>``, HMAC signature,
header, parent header, metadata, content, buffers). The per-message envelope is everything but the content
frame and buffers; it is the same few hundred bytes for every message.

Every run checks its output and raises :class:`BenchmarkError` on a mismatch: for ``%%stream`` the delta
batches on the wire must have consecutive ``seq`` numbers and join to the start of the expected text, the
one ``panes`` snapshot on the wire (the final update, at the last batch's ``seq``; by reference when the
stand-in front end's ``hello`` came first: the batches plus its ``tail``, and its length) and the widget in
the kernel must hold all of it, the snapshot's own output must be updated with the HTML snapshot unless ``--no-snapshot`` (the widget's output never), the final ``prediction`` and the inspector's raw reply (sent by reference to
the pane) must resolve to the text and to the exact reply, and ``--out`` must hold the prediction; for the
naive baseline every token must have produced one ``value`` update, the last one the full text.

Compare with 4 variants streaming at once (issue 14: the widget at most 30 messages/s in total, the kernel
round trip p50 under 50 ms meanwhile): ``%%stream "question -> answer" --compare model=m1,m2,m3,m4
--background``, the server scripted per model (``POST /v1/demo/script`` with ``"model"``) so each variant
gets its own reply of N tokens at a rate per variant (2,000 tokens/s, and 150 tokens/s: the kernel gets 4x
that in total). Recorded: every message of the ONE widget (delta batches and trait updates alike), peak over
sliding 1-s windows; the probes (``1`` every 100 ms, as for ``--background`` above) from the cell's reply
until the widget's final update, split at the moment the last variant's stream ended (its
``time.perf_counter()`` in the kernel, from ``_.stats``: CLOCK_MONOTONIC, the same clock as ours), so the end
of the comparison (the word diff of the predictions, in the kernel) is measured too; the kernel's CPU; and,
to name what the kernel does at the end, the word diff of the same texts timed alone in a fresh interpreter. Checked:
one widget, consecutive ``seq``, each variant's batches join to the start of its text and the final snapshot
(by reference) to all of it, every variant in ``vstats``, the final ``variants`` trait says done for all
four with each prediction, each LM call's raw reply resolves to its reply, and in the kernel ``_`` is the
``--out`` dict of 4 predictions holding the texts. N is 2,000 (2,000 tokens/s, 3 runs) and 1,500 tokens
(150 tokens/s) per variant (the section's time budget).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _server import ServerProcess
from run import QUESTION, BenchmarkError, print_section

__all__ = ["BenchmarkError", "run"]

RATE = 2_000.0
"""Tokens per second of the paced runs (a fast hosted model)."""

VARIANT_SEP = "\x1f"
"""Between a comparison variant's label and the pane group in a pane key (``jupyter_stream.notebook.wire``'s,
restated so that the check does not trust the code it checks)."""

# jupyter_server's defaults (ZMQChannelsWebsocketConnection, jupyter_server 2.x)
JS_MSG_RATE = 1_000.0
JS_DATA_RATE = 1_000_000.0
JS_WINDOW = 3.0


# ------------------------------------------------------------------------------------------ workload
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_UPPER = _LOWER.upper()


def make_answer(n_tokens: int, seed: int = 0) -> tuple[str, list[str]]:
    """``(text, deltas)``: an ``answer`` of exactly ``n_tokens`` 4-char tokens (" abc", ". Ab", ".\\nAb") and
    the chat-adapter reply carrying it, cut into deltas (the markup in 4-char pieces, then the tokens)."""
    rng = random.Random(seed)
    toks = ["Th" + rng.choice(_LOWER) + rng.choice(_LOWER)]
    for i in range(1, n_tokens):
        if i % 64 == 63:
            toks.append(".\n" + rng.choice(_UPPER) + rng.choice(_LOWER))
        elif i % 16 == 15:
            toks.append(". " + rng.choice(_UPPER) + rng.choice(_LOWER))
        else:
            toks.append(" " + rng.choice(_LOWER) + rng.choice(_LOWER) + rng.choice(_LOWER))
    text = "".join(toks)
    head, tail = "[[ ## answer ## ]]\n", "\n\n[[ ## completed ## ]]"
    deltas = [head[i:i + 4] for i in range(0, len(head), 4)] + toks + [tail[i:i + 4] for i in range(0, len(tail), 4)]
    return text, deltas


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def check(label: str, got: Any, want: Any) -> None:
    if got != want:
        g, w = str(got), str(want)
        i = next((k for k in range(min(len(g), len(w))) if g[k] != w[k]), min(len(g), len(w)))
        raise BenchmarkError(
            f"{label}: wrong output (lengths {len(g)} vs {len(w)}; first difference at {i}: "
            f"{g[max(0, i - 20):i + 20]!r} vs {w[max(0, i - 20):i + 20]!r})"
        )


def script(server: ServerProcess, deltas: list[str], rate: float, *, model: str | None = None,
           pending: int = 1) -> None:
    """The next chat request (``model``: the next one naming that model) gets exactly these deltas at ``rate``
    tokens/s (0: as fast as possible); the server must then hold ``pending`` scripted replies."""
    doc = {"replies": [{"chunks": deltas, "token_rate": rate}], "model": model}
    req = urllib.request.Request(server.url + "/demo/script", data=json.dumps(doc).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        got = json.loads(r.read())
    if got.get("pending") != pending:
        raise BenchmarkError(f"the server has {got.get('pending')} scripted replies queued, expected {pending}")


def server_pending(server: ServerProcess) -> int:
    with urllib.request.urlopen(server.url + "/demo/stats", timeout=30) as r:
        return int(json.loads(r.read())["pending"])


# ------------------------------------------------------------------------------------------ the wire
@dataclass
class Msg:
    t: float
    """Receive time (``time.perf_counter()`` of this process)."""
    nbytes: int
    """Wire bytes: the sum of the lengths of all frames."""
    content_bytes: int
    """The content frame plus buffers."""
    msg_type: str
    parent: str
    content: dict[str, Any]

    @property
    def envelope(self) -> int:
        return self.nbytes - self.content_bytes

    @property
    def comm_id(self) -> str | None:
        return self.content.get("comm_id") if self.msg_type.startswith("comm_") else None


class Wire:
    """Our own SUB socket on the kernel's iopub port: every message, its frames' lengths and receive time.

    It also stands in for JupyterLab's widget manager where that matters to the wire: when a
    ``jupyter_stream`` widget opens and ``front_end`` is true, it says ``hello`` to it on the shell channel
    at once (what the widget's front end does when its model comes up), so the kernel knows a view follows
    the deltas."""

    def __init__(self, km: Any) -> None:
        import zmq

        self.session = km.session
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # never drop on our side
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(km._make_url("iopub"))
        self.shell = self.ctx.socket(zmq.DEALER)  # used by the wire thread only
        self.shell.setsockopt(zmq.LINGER, 0)
        self.shell.connect(km._make_url("shell"))
        self.front_end = True
        self.hellos = 0
        self.raw: list[tuple[float, list[bytes]]] = []
        self._parsed: list[Msg | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iopub-wire", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        sock, raw, clock = self.sock, self.raw, time.perf_counter
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                raw.append((clock(), frames))
                if self.front_end:
                    self._hello(frames)

    def _hello(self, frames: list[bytes]) -> None:
        try:
            k = frames.index(b"<IDS|MSG>")
        except ValueError:
            return
        if len(frames) < k + 6 or b'"comm_open"' not in frames[k + 2] or b'"AnyModel"' not in frames[k + 5]:
            return
        content = json.loads(frames[k + 5])  # parse() checks the signature later (once: it keeps a history)
        if content.get("data", {}).get("state", {}).get("_model_name") == "AnyModel":
            self.session.send(self.shell, "comm_msg", {
                "comm_id": content["comm_id"], "data": {"method": "custom", "content": {"type": "hello"}},
            })
            self.hellos += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close(0)
        self.shell.close(0)
        self.ctx.term()

    def __len__(self) -> int:
        return len(self.raw)

    def parse(self, i: int) -> Msg:
        """Message ``i`` (parsed once, signature checked)."""
        while len(self._parsed) <= i:
            self._parsed.append(None)
        m = self._parsed[i]
        if m is None:
            t, frames = self.raw[i]
            _idents, msg_list = self.session.feed_identities(frames, copy=True)
            d = self.session.deserialize(msg_list, content=True, copy=True)
            content_bytes = len(msg_list[4]) + sum(len(b) for b in msg_list[5:])
            m = Msg(t, sum(len(f) for f in frames), content_bytes, d["header"]["msg_type"],
                    d["parent_header"].get("msg_id", ""), d["content"])
            self._parsed[i] = m
            self.raw[i] = (t, [])  # keep the memory of the naive runs (tens of MB) bounded
        return m

    def quick_idle(self, i: int, parent: str) -> bool:
        """Is raw message ``i`` the ``status: idle`` of ``parent`` (without parsing the big ones)?"""
        if i < len(self._parsed) and self._parsed[i] is not None:
            m = self._parsed[i]
            return m.msg_type == "status" and m.parent == parent and m.content.get("execution_state") == "idle"
        frames = self.raw[i][1]
        try:
            k = frames.index(b"<IDS|MSG>")
        except ValueError:
            return False
        if len(frames) < k + 6 or len(frames[k + 5]) > 100 or b"idle" not in frames[k + 5]:
            return False
        return parent.encode() in frames[k + 3] and b'"status"' in frames[k + 2]

    def messages(self, start: int, end: int, parent: str | None = None) -> list[Msg]:
        out = []
        for i in range(start, end):
            m = self.parse(i)
            if parent is None or m.parent == parent:
                out.append(m)
        return out


# -------------------------------------------------------------------------------------------- kernel
def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@dataclass
class Cell:
    msg_id: str
    t_send: float
    t_reply: float
    t_idle: float
    reply: dict[str, Any]
    start: int
    """Index of the first wire message that may belong to this cell."""
    end: int
    msgs: list[Msg] = field(default_factory=list)
    kernel_cpu: float = float("nan")

    def stdout(self) -> str:
        return "".join(m.content.get("text", "") for m in self.msgs
                       if m.msg_type == "stream" and m.content.get("name") == "stdout")


class Kernel:
    """A real ipykernel whose jupyter_stream LM points at ``url``; our own iopub subscription."""

    def __init__(self, url: str) -> None:
        import jupyter_client

        self.km = jupyter_client.KernelManager(kernel_name="python3")
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        env["JUPYTER_STREAM_DEMO_RATE"] = "0"
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
            self.kc.iopub_channel.stop()  # we read iopub through our own socket (no high-water mark)
            self.pid = self.km.provisioner.process.pid
            self.wire = Wire(self.km)
            # PUB/SUB: wait until our subscription sees the kernel's messages.
            deadline = time.monotonic() + 30
            while True:
                cell = self.execute("1", timeout=10, need_idle=False)
                if self._wait_idle(cell, 1.0):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("our iopub subscription receives nothing from the kernel")
            setup = (
                "%load_ext jupyter_stream\n"
                "import jupyter_stream as js, ipywidgets, hashlib, json\n"
                f"js.configure(lm=js.LM('bench', base_url={url!r}, api_key='k', cache=False))\n"
            )
            self.run_ok(setup)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        wire = getattr(self, "wire", None)
        if wire is not None:
            wire.close()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def cpu(self) -> float:
        return _proc_cpu(self.pid)

    def _wait_idle(self, cell: Cell, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        wire = self.wire
        i = cell.start
        while True:
            n = len(wire)
            while i < n:
                if wire.quick_idle(i, cell.msg_id):
                    cell.t_idle = wire.raw[i][0]
                    cell.end = i + 1
                    return True
                i += 1
            if time.perf_counter() > deadline:
                return False
            time.sleep(0.002)

    def send(self, code: str) -> Cell:
        start = len(self.wire) if hasattr(self, "wire") else 0
        t = time.perf_counter()
        msg_id = self.kc.execute(code, store_history=False)
        return Cell(msg_id, t, float("nan"), float("nan"), {}, start, start)

    def wait_reply(self, cell: Cell, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchmarkError(f"no execute_reply within {timeout:.0f} s") from None
            if reply["parent_header"].get("msg_id") == cell.msg_id:
                cell.t_reply = time.perf_counter()
                cell.reply = reply
                return

    def execute(self, code: str, *, timeout: float = 120.0, need_idle: bool = True, collect: bool = True) -> Cell:
        """Run ``code``: execute_reply received and (``need_idle``) its ``status: idle`` seen on the wire."""
        c0 = self.cpu()
        cell = self.send(code)
        self.wait_reply(cell, timeout)
        if need_idle:
            if not self._wait_idle(cell, timeout):
                raise BenchmarkError(f"no status idle on iopub within {timeout:.0f} s for {code[:40]!r}")
            cell.kernel_cpu = self.cpu() - c0
            if collect:
                cell.msgs = self.wire.messages(cell.start, cell.end, cell.msg_id)
        return cell

    def run_ok(self, code: str, timeout: float = 120.0) -> Cell:
        cell = self.execute(code, timeout=timeout)
        if cell.reply["content"]["status"] != "ok":
            c = cell.reply["content"]
            raise BenchmarkError(f"cell failed: {c.get('ename')}: {c.get('evalue')}\n{code[:200]}")
        return cell

    def eval_json(self, code: str) -> Any:
        """Run ``code`` whose last line prints one JSON document; return it."""
        out = self.run_ok(code).stdout().strip().splitlines()
        if not out:
            raise BenchmarkError(f"no output from {code[:60]!r}")
        return json.loads(out[-1])


# ------------------------------------------------------------------------------------------ analysis
def peak_in_window(times: list[float], window: float, weights: list[float] | None = None) -> float:
    """The largest count (or sum of ``weights``) of events in any interval ``[t, t + window)``."""
    if not times:
        return 0.0
    w = weights if weights is not None else [1.0] * len(times)
    best = acc = 0.0
    j = 0
    for i, t in enumerate(times):
        acc += w[i]
        while times[j] <= t - window:
            acc -= w[j]
            j += 1
        best = max(best, acc)
    return best


def jupyter_server_limit(msgs: list[Msg], *, all_bytes: bool = False) -> dict[str, float]:
    """Replay jupyter_server's iopub rate limit (``ZMQChannelsWebsocketConnection._limit_rate``, defaults
    1,000 msgs/s and 1 MB/s over a 3 s window) over these messages, with our receive times standing in for
    the server's. jupyter_server 2.x counts the bytes of ``stream`` messages only; ``all_bytes=True`` counts
    every message's bytes (a stricter limit, for reference). Returns the peak rates and the messages it drops."""
    q: list[tuple[float, int]] = []
    head = 0
    count = nbytes = 0
    msgs_exceeded = data_exceeded = False
    dropped = 0
    peak_msgs = peak_data = 0.0
    for m in msgs:
        if m.msg_type == "status" and m.content.get("execution_state") == "idle":
            q, head, count, nbytes = [], 0, 0, 0
            msgs_exceeded = data_exceeded = False
        if m.msg_type in ("status", "comm_open", "execute_input"):
            continue
        now = m.t
        while head < len(q) and now >= q[head][0]:
            nbytes -= q[head][1]
            count -= 1
            head += 1
        bc = m.nbytes if (all_bytes or m.msg_type == "stream") else 0
        count += 1
        nbytes += bc
        q.append((now + JS_WINDOW, bc))
        msg_rate, data_rate = count / JS_WINDOW, nbytes / JS_WINDOW
        peak_msgs, peak_data = max(peak_msgs, msg_rate), max(peak_data, data_rate)
        if msg_rate > JS_MSG_RATE:
            msgs_exceeded = True
        elif msgs_exceeded and msg_rate < 0.8 * JS_MSG_RATE:
            msgs_exceeded = False
        if data_rate > JS_DATA_RATE:
            data_exceeded = True
        elif data_exceeded and data_rate < 0.8 * JS_DATA_RATE:
            data_exceeded = False
        if msgs_exceeded or data_exceeded:
            count -= 1
            nbytes -= bc
            q.pop()
            dropped += 1
    return {"peak_msg_rate": peak_msgs, "peak_data_rate": peak_data, "dropped": dropped}


def _jlen(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _category(m: Msg, comm_id: str | None) -> str:
    if m.msg_type == "comm_open":
        return "comm_open (widget code + initial state)"
    if m.msg_type == "comm_msg" and m.comm_id == comm_id:
        data = m.content.get("data", {})
        if data.get("method") == "custom":
            return "delta batches (custom messages)"
        state = data.get("state", {})
        if set(state) <= {"stats"}:
            return "stats updates"
        if "value" in state:
            return "value updates (whole text)"
        if "panes" in state and state.get("status") in ("done", "stopped", "error"):
            return "final state (panes, prediction, lm_calls, status)"
        if "panes" in state:
            return "snapshots (panes) while streaming"
        return "other state updates (status, lm_calls, ...)"
    if m.msg_type in ("display_data", "update_display_data"):
        return "display_data / update_display_data (HTML snapshot)"
    return "kernel (status, execute_input, execute_result, ...)"


def wire_figures(msgs: list[Msg], comm_id: str | None, text: str) -> dict[str, Any]:
    """Counts, rates and bytes of one cell's iopub messages (``msgs``: everything with the cell as parent)."""
    msgs = sorted(msgs, key=lambda m: m.t)
    widget = [m for m in msgs if m.comm_id == comm_id and m.msg_type != "comm_open"]
    wt = [m.t for m in widget]
    span = (wt[-1] - wt[0]) if len(wt) > 1 else 0.0
    total = sum(m.nbytes for m in msgs)
    envelope = statistics.median(m.envelope for m in msgs)
    text_bytes = len(text.encode("utf-8"))
    by_type: dict[str, int] = {}
    cats: dict[str, list[int]] = {}
    for m in msgs:
        by_type[m.msg_type] = by_type.get(m.msg_type, 0) + 1
        c = cats.setdefault(_category(m, comm_id), [0, 0])
        c[0] += 1
        c[1] += m.nbytes
    # Where copies of the text travel: the content bytes of the text-carrying keys.
    keys: dict[str, int] = {}
    stats_batches = 0
    for m in widget:
        data = m.content.get("data", {})
        if data.get("method") == "update":
            for k, v in data.get("state", {}).items():
                if k in ("panes", "prediction", "lm_calls", "value"):
                    keys[k] = keys.get(k, 0) + _jlen(v)
        elif data.get("method") == "custom" and data.get("content", {}).get("type") == "deltas":
            items = data["content"].get("items", [])
            keys["deltas"] = keys.get("deltas", 0) + sum(_jlen(it[1]) for it in items)
            stats_batches += "stats" in data["content"]
    for m in msgs:
        if m.msg_type in ("display_data", "update_display_data"):
            keys["text/html"] = keys.get("text/html", 0) + _jlen(m.content.get("data", {}).get("text/html", ""))
    return {
        "messages": len(msgs),
        "by_type": by_type,
        "widget_messages": len(widget),
        "widget_span_s": span,
        "peak_per_s": peak_in_window(wt, 1.0),
        "avg_per_s": (len(widget) / span) if span > 0 else float(len(widget)),
        "bytes": total,
        "text_bytes": text_bytes,
        "envelope": envelope,
        "ratio": total / (text_bytes + envelope * len(msgs)),
        "ratio_without_widget_code": (total - sum(m.nbytes for m in msgs if m.msg_type == "comm_open"))
        / (text_bytes + envelope * sum(1 for m in msgs if m.msg_type != "comm_open")),
        "peak_bytes_per_s_1s": peak_in_window([m.t for m in msgs], 1.0, [m.nbytes for m in msgs]),
        "categories": {k: {"messages": v[0], "bytes": v[1]} for k, v in cats.items()},
        "text_copies_bytes": keys,
        "batches_with_stats": stats_batches,
        "jupyter_server": jupyter_server_limit(msgs),
        "jupyter_server_all_bytes": jupyter_server_limit(msgs, all_bytes=True),
    }


def resolve(value: Any, panes: list[dict[str, Any]]) -> Any:
    """A text in the widget's synced form (a string, ``{"$pane": key, "end"?: n}``, or a list of them) as
    text, from the panes of the same state (``jupyter_stream.notebook.wire.resolve_text``, restated here
    so that the check does not trust the code it checks)."""
    texts = {p["key"]: p["text"] for p in panes}

    def one(part: Any) -> str:
        if isinstance(part, str):
            return part
        if isinstance(part, dict) and set(part) <= {"$pane", "end"} and part.get("$pane") in texts:
            t = texts[part["$pane"]]
            if "end" not in part:
                return t
            return t.encode("utf-16-le")[: 2 * part["end"]].decode("utf-16-le")
        raise BenchmarkError(f"not a text in the synced form: {part!r:.200}")

    return "".join(one(p) for p in value) if isinstance(value, list) else one(value)


def _widget_batches(label: str, msgs: list[Msg]) -> tuple[str, list[Msg], list[dict[str, Any]], list[int]]:
    """The cell's one ``jupyter_stream`` widget: (comm_id, its comm messages by receive time, its delta
    batches, their ``seq`` numbers, checked consecutive)."""
    opens = [m for m in msgs if m.msg_type == "comm_open"
             and m.content.get("data", {}).get("state", {}).get("_model_name") == "AnyModel"]
    if len(opens) != 1:
        raise BenchmarkError(f"{label}: expected one widget comm_open, got {len(opens)}")
    comm_id = opens[0].content["comm_id"]
    mine = sorted((m for m in msgs if m.comm_id == comm_id and m.msg_type == "comm_msg"), key=lambda m: m.t)
    batches = [m.content["data"]["content"] for m in mine if m.content["data"].get("method") == "custom"
               and m.content["data"]["content"].get("type") == "deltas"]
    seqs = [b["seq"] for b in batches]
    if not seqs or seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise BenchmarkError(f"{label}: delta batches are not consecutive (a message lost?): {seqs[:20]}...")
    return comm_id, mine, batches, seqs


def check_ours_wire(
    label: str, msgs: list[Msg], text: str, reply: str, rate: float, *, by_ref: bool, snapshot: bool,
) -> tuple[str, int]:
    """The ``%%stream`` widget's messages reassemble to ``text``, its inspector to ``reply``: returns
    (comm_id, last seq). ``rate``: the server's tokens/s (0: full speed); ``by_ref``: a front end said
    hello before the end (the final snapshot comes by reference); ``snapshot``: the cell's display ends
    with the HTML snapshot (else without one)."""
    comm_id, mine, batches, seqs = _widget_batches(label, msgs)
    keys = {it[0] for b in batches for it in b["items"]}
    if keys != {"answer"}:
        raise BenchmarkError(f"{label}: expected one pane, got {sorted(keys)}")
    # The batches carry the text up to the last flush; the final snapshot carries it all (the rest: what
    # arrived after the last flush). Paced, that is at most a flush interval (1/25 s) of tokens, with room
    # for scheduling (0.1 s); at full speed a short stream may end before its second flush.
    joined = "".join(it[1] for b in batches for it in b["items"])
    check(f"{label}: delta batches joined", joined, text[:len(joined)])
    if not joined or (rate and len(text) - len(joined) > 4 * rate * 0.1):
        raise BenchmarkError(f"{label}: the batches carried only {len(joined)} of {len(text)} characters")
    dones = sum(1 for b in batches for it in b["items"] if it[2])
    if dones > 1:
        raise BenchmarkError(f"{label}: the pane was marked done {dones} times in the deltas")
    if not any("stats" in b for b in batches):
        raise BenchmarkError(f"{label}: no batch carried the stats")
    updates = [m.content["data"]["state"] for m in mine if m.content["data"].get("method") == "update"]
    if any(set(u) <= {"stats"} for u in updates):
        raise BenchmarkError(f"{label}: a separate stats update")
    snaps = [u for u in updates if "panes" in u]
    if len(snaps) != 1 or snaps[0] is not updates[-1]:
        raise BenchmarkError(f"{label}: expected one panes snapshot, the final update; got {len(snaps)}")
    last = snaps[0]
    panes = last.get("panes") or []
    if len(panes) != 1 or not panes[0].get("done"):
        raise BenchmarkError(f"{label}: the last panes snapshot is {panes!r:.200}")
    if by_ref:
        # The front end said hello: the final snapshot goes by reference (the text no batch carried and
        # the length in UTF-16 code units); a view fills it in from the batches, as done here.
        pane = panes[0]
        if "text" in pane or not isinstance(pane.get("tail"), str):
            raise BenchmarkError(f"{label}: the final snapshot is not by reference: {pane!r:.200}")
        if pane.get("len") != len(text.encode("utf-16-le")) // 2:
            raise BenchmarkError(f"{label}: the final snapshot's length {pane.get('len')} is not the text's")
        panes = [{**pane, "text": joined + pane["tail"]}]
    check(f"{label}: last panes snapshot", panes[0]["text"], text)
    if last.get("snapshot_seq") != seqs[-1]:
        raise BenchmarkError(f"{label}: last snapshot_seq {last.get('snapshot_seq')} != last delta seq {seqs[-1]}")
    if last.get("status") != "done":
        raise BenchmarkError(f"{label}: the widget's last status is {last.get('status')!r}")
    fields = (last.get("prediction") or {}).get("fields") or {}
    if fields != {"answer": {"$pane": "answer"}}:
        raise BenchmarkError(f"{label}: the final prediction is {fields!r:.200}")
    check(f"{label}: final prediction (resolved)", resolve(fields["answer"], panes), text)
    calls = [u["lm_calls"] for u in updates if "lm_calls" in u][-1]
    if len(calls) != 1 or not calls[0].get("done"):
        raise BenchmarkError(f"{label}: the inspector's LM calls are {calls!r:.300}")
    check(f"{label}: the inspector's raw reply (resolved)", resolve(calls[0]["raw"], panes), reply)
    # Only the snapshot's own output is updated at the end (an update of the widget's output makes JupyterLab
    # build a new view); with --no-snapshot nothing is.
    displays = [m.content["data"] for m in msgs if m.msg_type == "update_display_data"]
    if any("application/vnd.jupyter.widget-view+json" in d for d in displays):
        raise BenchmarkError(f"{label}: the widget's own output was updated")
    if snapshot and (not displays or "text/html" not in displays[-1]):
        raise BenchmarkError(f"{label}: the final display lacks the HTML snapshot")
    if not snapshot and any("text/html" in d for d in displays):
        raise BenchmarkError(f"{label}: an HTML snapshot was sent with --no-snapshot")
    return comm_id, seqs[-1]


def check_ours_kernel(k: Kernel, label: str, comm_id: str, out_var: str, text: str, last_seq: int) -> dict[str, Any]:
    """The prediction and the widget's state in the kernel hold ``text``; then the widget is closed."""
    got = k.eval_json(
        "from ipywidgets.widgets.widget import _instances as _bench_inst\n"
        f"_bench_w = _bench_inst[{comm_id!r}]\n"
        "_bench_h = lambda s: hashlib.sha256(s.encode()).hexdigest()\n"
        f"print(json.dumps({{'answer': _bench_h({out_var}.answer), "
        "'panes': [[p['key'], _bench_h(p['text']), p['done']] for p in _bench_w.panes], "
        "'status': _bench_w.status, 'last_seq': _bench_w.last_seq, 'snapshot_seq': _bench_w.snapshot_seq, "
        "'messages_sent': _bench_w.messages_sent, 'state_updates_sent': _bench_w.state_updates_sent}))\n"
        f"_bench_w.close(); del _bench_w, {out_var}\n"
    )
    want = _sha(text)
    check(f"{label}: --out prediction in the kernel", got["answer"], want)
    if [p[1:] for p in got["panes"]] != [[want, True]] or got["status"] != "done":
        raise BenchmarkError(f"{label}: widget state in the kernel: {got}")
    if got["last_seq"] != last_seq or got["snapshot_seq"] != last_seq:
        raise BenchmarkError(f"{label}: the kernel sent {got['last_seq']} batches, the wire has {last_seq}")
    return got


# -------------------------------------------------------------------------------------------- runs
def stream_ours(k: Kernel, server: ServerProcess, n: int, rate: float, *, snapshot: bool = True) -> dict[str, Any]:
    """``%%stream`` of an ``answer`` of ``n`` tokens at ``rate`` tokens/s (0: full speed), checked;
    ``snapshot=False`` runs it with ``--no-snapshot``."""
    label = f"%%stream{'' if snapshot else ' --no-snapshot'} {n:,} tokens at {rate:g}/s"
    text, deltas = make_answer(n)
    script(server, deltas, rate)
    hellos = k.wire.hellos
    option = "" if snapshot else " --no-snapshot"
    cell = k.execute(f'%%stream "question -> answer" --out _bench_r{option}\n{QUESTION}',
                     timeout=60 + 3 * n / (rate or 1_000))
    if cell.reply["content"]["status"] != "ok":
        raise BenchmarkError(f"{label}: the cell failed: {cell.reply['content'].get('evalue')}")
    if server_pending(server):
        raise BenchmarkError(f"{label}: the scripted reply was not used")
    if k.wire.hellos != hellos + 1:
        raise BenchmarkError(f"{label}: the stand-in front end said hello {k.wire.hellos - hellos} times")
    by_ref = "text" not in (_final_panes(cell.msgs) or [{"text": ""}])[0]
    comm_id, last_seq = check_ours_wire(label, cell.msgs, text, "".join(deltas), rate, by_ref=by_ref, snapshot=snapshot)
    check_ours_kernel(k, label, comm_id, "_bench_r", text, last_seq)
    fig = wire_figures(cell.msgs, comm_id, text)
    fig.update(duration=cell.t_idle - cell.t_send, kernel_cpu=cell.kernel_cpu, batches=last_seq, by_ref=by_ref)
    return fig


def _final_panes(msgs: list[Msg]) -> list[dict[str, Any]] | None:
    """The ``panes`` of the widget's last update that has them."""
    for m in reversed(msgs):
        if m.msg_type == "comm_msg" and m.content["data"].get("method") == "update" and "panes" in m.content["data"]["state"]:
            return m.content["data"]["state"]["panes"]
    return None


NAIVE_CELL = """\
_bench_w = ipywidgets.HTML()
display(_bench_w)
_bench_v, _bench_n = "", 0
async for _bench_ev in js.stream(js.Predict("question -> answer"), None, {{"question": {q!r}}}, listen=["answer"]):
    if type(_bench_ev) is js.StreamResponse and _bench_ev.chunk:
        _bench_v += _bench_ev.chunk
        _bench_n += 1
        _bench_w.value = _bench_v
"""


def stream_naive(k: Kernel, server: ServerProcess, n: int, rate: float) -> dict[str, Any]:
    """The naive baseline: the same stream, an ``ipywidgets.HTML`` whose ``value`` is re-set per token."""
    label = f"naive HTML.value {n:,} tokens at {rate:g}/s"
    text, deltas = make_answer(n)
    script(server, deltas, rate)
    cell = k.execute(NAIVE_CELL.format(q=QUESTION), timeout=120 + n / 50)
    if cell.reply["content"]["status"] != "ok":
        raise BenchmarkError(f"{label}: the cell failed: {cell.reply['content'].get('evalue')}")
    if server_pending(server):
        raise BenchmarkError(f"{label}: the scripted reply was not used")
    opens = [m for m in cell.msgs if m.msg_type == "comm_open"
             and m.content["data"]["state"].get("_model_name") == "HTMLModel"]
    if len(opens) != 1:
        raise BenchmarkError(f"{label}: expected one HTML widget, got {len(opens)}")
    comm_id = opens[0].content["comm_id"]
    values = [m.content["data"]["state"]["value"] for m in sorted(cell.msgs, key=lambda m: m.t)
              if m.comm_id == comm_id and m.msg_type == "comm_msg"
              and "value" in m.content["data"].get("state", {})]
    got = k.eval_json(
        "print(json.dumps({'n': _bench_n, 'value': hashlib.sha256(_bench_w.value.encode()).hexdigest()}))\n"
        "_bench_w.close(); del _bench_w, _bench_v\n"
    )
    check(f"{label}: the widget's value in the kernel", got["value"], _sha(text))
    # At full speed a few of the naive updates may never reach this reader: ZMQ's PUB socket drops what
    # exceeds its queue (1,000 messages) when the reader falls behind. Counted, and every update that
    # did arrive must be a longer prefix of the text than the one before.
    lost = got["n"] - len(values)
    if lost < 0 or (lost and rate != 0):
        raise BenchmarkError(f"{label}: {got['n']} tokens in the kernel but {len(values)} value updates on the wire")
    if any(len(a) >= len(b) for a, b in itertools.pairwise(values)) or not all(map(text.startswith, values)):
        raise BenchmarkError(f"{label}: the value updates do not grow token by token")
    if not lost:
        check(f"{label}: last value update", values[-1] if values else "", text)
    fig = wire_figures(cell.msgs, comm_id, text)
    # Per update: wire bytes minus the JSON-escaped value (for the extrapolation to bigger sizes).
    ups = sorted((m for m in cell.msgs if m.comm_id == comm_id and m.msg_type == "comm_msg"), key=lambda m: m.t)
    fixed = [m.nbytes - (len(json.dumps(v)) - 2) for m, v in zip(ups, values)]
    fig.update(duration=cell.t_idle - cell.t_send, kernel_cpu=cell.kernel_cpu, updates=len(values), lost=lost,
               per_update_fixed=statistics.median(fixed),
               other_bytes=fig["bytes"] - sum(m.nbytes for m in ups), other_messages=fig["messages"] - len(ups))
    return fig


def naive_extrapolated(measured: dict[str, Any], n: int) -> dict[str, Any]:
    """The naive baseline's wire at ``n`` tokens computed from a measured run: one update per token, each
    the measured fixed part plus the JSON-escaped text so far (not measured: arithmetic)."""
    text, _ = make_answer(n)
    toks = make_answer(n)[1]
    # The answer tokens are the deltas between the header and the tail pieces.
    head = len("[[ ## answer ## ]]\n") // 4 + (1 if len("[[ ## answer ## ]]\n") % 4 else 0)
    toks = toks[head:head + n]
    if "".join(toks) != text:
        raise BenchmarkError("extrapolation: could not recover the answer tokens")
    total = esc = 0
    for t in toks:
        esc += len(t) + t.count("\n")
        total += esc
    updates = n
    nbytes = measured["per_update_fixed"] * updates + total + measured["other_bytes"]
    msgs = updates + measured["other_messages"]
    text_bytes = len(text.encode())
    return {"messages": msgs, "bytes": nbytes, "text_bytes": text_bytes,
            "ratio": nbytes / (text_bytes + measured["envelope"] * msgs),
            "rate_msgs": RATE, "bytes_per_s_at_end": RATE * (measured["per_update_fixed"] + len(text)),
            "kernel_cpu": measured["kernel_cpu"] * nbytes / measured["bytes"]}


# ---------------------------------------------------------------------------------- responsiveness
def probe(k: Kernel, seconds: float, interval: float = 0.1, *, until: Callable[[], bool] | None = None,
          reply_timeout: float = 30.0) -> list[Cell]:
    """Execute ``1`` every ``interval`` s for ``seconds`` s (or until ``until()`` is true, at most ``seconds``);
    each probe waits for its execute_reply (a late probe delays the next one, never two in flight)."""
    cells: list[Cell] = []
    t_end = time.perf_counter() + seconds
    t_next = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now < t_next:
            time.sleep(t_next - now)
        if time.perf_counter() >= t_end or (until is not None and until()):
            break
        cell = k.send("1")
        k.wait_reply(cell, reply_timeout)
        if cell.reply["content"]["status"] != "ok":
            raise BenchmarkError(f"probe cell failed: {cell.reply['content']}")
        cells.append(cell)
        t_next = max(t_next + interval, time.perf_counter())
    for cell in cells:  # the reply came first; now their status idle, from the wire
        if not k._wait_idle(cell, 10):
            raise BenchmarkError("a probe's status idle never arrived")
    return cells


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))]


def latency_figures(cells: list[Cell]) -> dict[str, Any]:
    reply = [c.t_reply - c.t_send for c in cells]
    idle = [c.t_idle - c.t_send for c in cells]
    return {
        "count": len(cells),
        "reply": {"median": statistics.median(reply), "p90": pct(reply, 0.9), "p99": pct(reply, 0.99),
                  "max": max(reply), "min": min(reply)},
        "idle": {"median": statistics.median(idle), "p90": pct(idle, 0.9), "p99": pct(idle, 0.99),
                 "max": max(idle), "min": min(idle)},
        "all_reply": reply,
        "all_idle": idle,
    }


def background_probe(k: Kernel, server: ServerProcess, seconds: float) -> dict[str, Any]:
    """A ``%%stream --background`` of ``RATE * seconds`` tokens at ``RATE`` tokens/s; probes while it runs."""
    n = int(RATE * seconds)
    label = f"%%stream --background {n:,} tokens at {RATE:g}/s"
    text, deltas = make_answer(n, seed=1)
    script(server, deltas, RATE)
    c0 = k.cpu()
    bg = k.execute(f'%%stream "question -> answer" --background --out _bench_bg\n{QUESTION}', collect=False)
    if bg.reply["content"]["status"] != "ok":
        raise BenchmarkError(f"{label}: the cell failed: {bg.reply['content'].get('evalue')}")
    cells = probe(k, max(0.5, seconds - 1.0))
    deadline = time.monotonic() + 3 * seconds + 30
    while not k.eval_json("print(json.dumps('_bench_bg' in globals()))"):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{label}: the background stream did not finish")
        time.sleep(0.2)
    cpu, t_cpu = k.cpu() - c0, time.perf_counter()
    msgs = k.wire.messages(bg.start, len(k.wire), bg.msg_id)
    by_ref = "text" not in (_final_panes(msgs) or [{"text": ""}])[0]
    comm_id, last_seq = check_ours_wire(label, msgs, text, "".join(deltas), RATE, by_ref=by_ref, snapshot=True)
    check_ours_kernel(k, label, comm_id, "_bench_bg", text, last_seq)
    fig = wire_figures(msgs, comm_id, text)
    fig["by_ref"] = by_ref
    batches = [m.t for m in msgs if m.comm_id == comm_id and m.msg_type == "comm_msg"
               and m.content["data"].get("method") == "custom"]
    during = sum(1 for c in cells if c.t_reply <= batches[-1])  # sent after the cell's reply, so during
    if during < 0.9 * len(cells):
        raise BenchmarkError(f"{label}: only {during} of {len(cells)} probes ran while the stream ran")
    return {"latency": latency_figures(cells), "during": during, "stream_s": batches[-1] - batches[0],
            "tokens": n, "wire": fig, "kernel_cpu_share": cpu / (t_cpu - bg.t_send)}


# --------------------------------------------------------------------------------------- compare
COMPARE_MODELS = ("m1", "m2", "m3", "m4")
"""The variants of the comparison runs: ``--compare model=m1,m2,m3,m4``, each model scripted on its own."""


def _widget_kind(m: Msg) -> str:
    """What one of the widget's comm messages is: a delta batch, or a trait update (which traits)."""
    data = m.content.get("data", {})
    if data.get("method") == "custom":
        return "batch"
    return "update: " + ",".join(sorted(data.get("state", {})))


def check_compare_wire(label: str, msgs: list[Msg], texts: dict[str, str], replies: dict[str, str],
                       rate: float) -> tuple[str, int]:
    """The comparison widget's messages: ONE widget; per variant (label -> text), the pane's batches join to the
    start of its text and the final snapshot (by reference: batches plus ``tail``) to all of it; every
    variant's status line rode in the batches (``vstats``); the final ``variants`` trait says done for every
    variant with its prediction; each variant's LM call's raw reply resolves to its reply. Returns
    (comm_id, last seq)."""
    comm_id, mine, batches, seqs = _widget_batches(label, msgs)
    key_of = {v: f"{v}{VARIANT_SEP}.answer" for v in texts}
    keys = {it[0] for b in batches for it in b["items"]}
    if keys != set(key_of.values()):
        raise BenchmarkError(f"{label}: expected a pane per variant {sorted(key_of.values())!r}, got {sorted(keys)!r}")
    joined = {k: "".join(it[1] for b in batches for it in b["items"] if it[0] == k) for k in keys}
    for v, text in texts.items():
        j = joined[key_of[v]]
        check(f"{label}: {v}: delta batches joined", j, text[:len(j)])
        if not j or (rate and len(text) - len(j) > 4 * rate * 0.1):
            raise BenchmarkError(f"{label}: {v}: the batches carried only {len(j)} of {len(text)} characters")
        if sum(1 for b in batches for it in b["items"] if it[0] == key_of[v] and it[2]) > 1:
            raise BenchmarkError(f"{label}: {v}: the pane was marked done more than once in the deltas")
    vstats = [b["vstats"] for b in batches if "vstats" in b]
    if not vstats or set().union(*vstats) != set(texts):
        raise BenchmarkError(f"{label}: the batches' vstats name {sorted(set().union(*vstats)) if vstats else []}")
    updates = [m.content["data"]["state"] for m in mine if m.content["data"].get("method") == "update"]
    snaps = [u for u in updates if "panes" in u]
    if len(snaps) != 1 or snaps[0] is not updates[-1]:
        raise BenchmarkError(f"{label}: expected one panes snapshot, the final update; got {len(snaps)}")
    last = snaps[0]
    panes = {p["key"]: p for p in last.get("panes") or []}
    if set(panes) != set(key_of.values()) or not all(p.get("done") for p in panes.values()):
        raise BenchmarkError(f"{label}: the last panes snapshot is {last.get('panes')!r:.300}")
    for v, text in texts.items():
        p = panes[key_of[v]]
        if "text" not in p:  # by reference: the text no batch carried and the length; filled in as a view does
            if not isinstance(p.get("tail"), str) or p.get("len") != len(text.encode("utf-16-le")) // 2:
                raise BenchmarkError(f"{label}: {v}: the final snapshot by reference is {p!r:.200}")
            p["text"] = joined[key_of[v]] + p["tail"]
        check(f"{label}: {v}: last panes snapshot", p["text"], text)
    if last.get("snapshot_seq") != seqs[-1] or last.get("status") != "done":
        raise BenchmarkError(f"{label}: final snapshot_seq {last.get('snapshot_seq')} (last seq {seqs[-1]}), "
                             f"status {last.get('status')!r}")
    variants = [u["variants"] for u in updates if "variants" in u][-1]
    if [v.get("label") for v in variants] != list(texts) or any(v.get("status") != "done" for v in variants):
        raise BenchmarkError(f"{label}: the final variants trait: "
                             f"{[(v.get('label'), v.get('status'), v.get('error')) for v in variants]}")
    pane_list = list(panes.values())
    for v in variants:
        text = texts[v["label"]]
        check(f"{label}: {v['label']}: prediction in the variants trait",
              resolve((v.get("prediction") or {}).get("fields", {}).get("answer", ""), pane_list), text)
        if not v.get("stats", {}).get("tokens") or v["stats"].get("ttft") is None:
            raise BenchmarkError(f"{label}: {v['label']}: final stats {v.get('stats')}")
    calls = [u["lm_calls"] for u in updates if "lm_calls" in u][-1]
    by_variant = {c.get("variant"): c for c in calls}
    if len(calls) != len(texts) or set(by_variant) != set(texts) or not all(c.get("done") for c in calls):
        raise BenchmarkError(f"{label}: the inspector's LM calls: {[(c.get('variant'), c.get('done')) for c in calls]}")
    for v, reply in replies.items():
        check(f"{label}: {v}: the inspector's raw reply (resolved)", resolve(by_variant[v]["raw"], pane_list), reply)
    return comm_id, seqs[-1]


def check_compare_kernel(k: Kernel, label: str, comm_id: str, out_var: str, texts: dict[str, str],
                         last_seq: int) -> dict[str, Any]:
    """In the kernel: ``_`` and ``--out`` are the same dict of 4 predictions (label -> prediction) holding each
    variant's text; the widget's panes and variants agree; then the widget is closed. ``ends``: when each
    variant's stream ended, ``time.perf_counter()`` in the kernel (CLOCK_MONOTONIC on Linux, the same clock
    as this process's)."""
    got = k.eval_json(
        "from ipywidgets.widgets.widget import _instances as _bench_inst\n"
        f"_bench_w = _bench_inst[{comm_id!r}]\n"
        "_bench_h = lambda s: hashlib.sha256(s.encode()).hexdigest()\n"
        f"print(json.dumps({{'underscore': _ is {out_var}, "
        f"'answers': {{l: _bench_h(p.answer) for l, p in {out_var}.items()}}, "
        "'panes': [[p['key'], _bench_h(p['text']), p['done']] for p in _bench_w.panes], "
        "'variants': [[v['label'], v['status']] for v in _bench_w.variants], "
        "'status': _bench_w.status, 'last_seq': _bench_w.last_seq, 'snapshot_seq': _bench_w.snapshot_seq, "
        "'messages_sent': _bench_w.messages_sent, 'state_updates_sent': _bench_w.state_updates_sent, "
        f"'ends': [s.started + s.seconds for s in {out_var}.stats.values()]}}))\n"
        f"_bench_w.close(); del _bench_w, {out_var}\n"
    )
    want = {v: _sha(t) for v, t in texts.items()}
    if not got["underscore"]:
        raise BenchmarkError(f"{label}: `_` is not the --out dict of predictions")
    check(f"{label}: `_` / --out predictions in the kernel", got["answers"], want)
    if ({p[0]: p[1:] for p in got["panes"]} != {f"{v}{VARIANT_SEP}.answer": [h, True] for v, h in want.items()}
            or got["variants"] != [[v, "done"] for v in texts] or got["status"] != "done"):
        raise BenchmarkError(f"{label}: widget state in the kernel: {got}")
    if got["last_seq"] != last_seq or got["snapshot_seq"] != last_seq:
        raise BenchmarkError(f"{label}: the kernel sent {got['last_seq']} batches, the wire has {last_seq}")
    return got


def _final_update_seen(k: Kernel, start: int, parent: str) -> Callable[[], bool]:
    """A test, cheap enough to run between probes, for: the cell ``parent``'s widget sent its final update (a
    ``comm_msg`` with ``panes``: in a comparison only the last update has them) since wire message ``start``."""
    cursor = [start]
    pid = parent.encode()

    def seen() -> bool:
        raw, n = k.wire.raw, len(k.wire)
        for i in range(cursor[0], n):
            frames = raw[i][1]
            try:
                d = frames.index(b"<IDS|MSG>")
            except ValueError:
                continue
            if (len(frames) > d + 5 and b'"comm_msg"' in frames[d + 2] and pid in frames[d + 3]
                    and b'"panes"' in frames[d + 5]):
                return True
        cursor[0] = n
        return False

    return seen


WORD_DIFF = """\
import json, sys, time
from jupyter_stream import Prediction
from jupyter_stream._worddiff import PredictionDiff
texts = json.load(sys.stdin)
preds = {v: Prediction(answer=t) for v, t in texts.items()}
t0 = time.perf_counter()
PredictionDiff(preds)
print(time.perf_counter() - t0)
"""


def word_diff_seconds(texts: dict[str, str]) -> float:
    """What the kernel does at the end of a comparison, alone: the word diff of these predictions
    (``PredictionDiff``, as ``CompareResult.diff``), timed in a fresh interpreter (in this process, with its
    threads and the recorded wire, the same call took up to 4x as long). Once per set of texts."""
    key = _sha(json.dumps(texts, sort_keys=True))
    if key in _word_diff_cache:
        return _word_diff_cache[key]
    proc = subprocess.run([sys.executable, "-c", WORD_DIFF], input=json.dumps(texts), capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise BenchmarkError(f"the word diff failed: {proc.stderr[-500:]}")
    seconds = _word_diff_cache[key] = float(proc.stdout.strip().splitlines()[-1])
    return seconds


_word_diff_cache: dict[str, float] = {}


def compare_probe(k: Kernel, server: ServerProcess, n: int, rate: float) -> dict[str, Any]:
    """``%%stream --compare model=m1,m2,m3,m4 --background``, each variant its own reply of ``n`` tokens at
    ``rate`` tokens/s, checked; the widget's messages counted; probes from the cell's reply until the widget's
    final update (the streaming, then the word diff of the predictions)."""
    label = f"%%stream --compare (4 variants) {n:,} tokens each at {rate:g}/s"
    texts: dict[str, str] = {}
    replies: dict[str, str] = {}
    for i, model in enumerate(COMPARE_MODELS):
        text, deltas = make_answer(n, seed=100 + i)
        texts[f"model={model}"], replies[f"model={model}"] = text, "".join(deltas)
        script(server, deltas, rate, model=model, pending=i + 1)
    samples: list[tuple[float, float]] = [(time.perf_counter(), k.cpu())]
    bg = k.execute(f'%%stream "question -> answer" --compare model={",".join(COMPARE_MODELS)} --background '
                   f"--out _bench_cmp\n{QUESTION}", collect=False)
    if bg.reply["content"]["status"] != "ok":
        raise BenchmarkError(f"{label}: the cell failed: {bg.reply['content'].get('evalue')}")
    final_seen = _final_update_seen(k, bg.start, bg.msg_id)

    def until() -> bool:
        samples.append((time.perf_counter(), k.cpu()))
        return final_seen()

    cells = probe(k, 3 * n / rate + 120, until=until, reply_timeout=300)
    deadline = time.monotonic() + 60
    while not k.eval_json("print(json.dumps('_bench_cmp' in globals()))"):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{label}: the comparison did not finish")
        time.sleep(0.1)
    if server_pending(server):
        raise BenchmarkError(f"{label}: {server_pending(server)} scripted replies were not used")
    msgs = k.wire.messages(bg.start, len(k.wire), bg.msg_id)
    comm_id, last_seq = check_compare_wire(label, msgs, texts, replies, rate)
    kern = check_compare_kernel(k, label, comm_id, "_bench_cmp", texts, last_seq)
    fig = wire_figures(msgs, comm_id, "".join(texts.values()))
    widget = sorted((m for m in msgs if m.comm_id == comm_id and m.msg_type == "comm_msg"), key=lambda m: m.t)
    batches = [m for m in widget if m.content["data"].get("method") == "custom"]
    with_text = [m.t for m in batches if any(it[1] for it in m.content["data"]["content"]["items"])]
    update_t = [m.t for m in widget if m.content["data"].get("method") == "update"]
    t_first, t_text, t_final = with_text[0], with_text[-1], update_t[-1]
    t_ended = max(kern["ends"])  # the last variant's stream ended in the kernel
    if not bg.t_send < t_ended <= t_final:
        raise BenchmarkError(f"{label}: the kernel's clock is not this process's (the variants ended "
                             f"{t_ended - bg.t_send:.3f} s after the cell was sent, final update at {t_final - bg.t_send:.3f} s)")
    kinds: dict[str, list[int]] = {}
    for m in widget:
        c = kinds.setdefault(_widget_kind(m), [0, 0])
        c[0] += 1
        c[1] += m.nbytes
    # The busiest 1-s window of the widget's messages: where it starts, and what it held.
    wt = [m.t for m in widget]
    j = best = best_i = 0
    for i, t in enumerate(wt):
        while wt[j] <= t - 1.0:
            j += 1
        if i - j + 1 > best:
            best, best_i = i - j + 1, j
    peak_window = widget[best_i:best_i + best]
    # Probes sent while the variants streamed (before the last one ended in the kernel), and after that until the
    # widget's final update (the word diff of the predictions).
    streaming = [c for c in cells if c.t_send < t_ended]
    after = [c for c in cells if c.t_send >= t_ended]
    if not streaming or sum(c.t_reply - c.t_send for c in streaming) + 0.1 * len(streaming) < 0.8 * (t_ended - bg.t_reply):
        raise BenchmarkError(f"{label}: the probes did not cover the streaming ({len(streaming)} probes in "
                             f"{t_ended - bg.t_reply:.1f} s)")

    def cpu_share(t0: float, t1: float) -> float:
        a = min(samples, key=lambda s: abs(s[0] - t0))
        b = min(samples, key=lambda s: abs(s[0] - t1))
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else float("nan")

    diff_s = word_diff_seconds(texts)
    return {
        "variants": len(texts), "tokens": n, "rate": rate, "wire": fig, "batches": last_seq,
        "latency": latency_figures(cells), "latency_streaming": latency_figures(streaming),
        "latency_after": latency_figures(after) if after else None,
        "stream_s": t_ended - t_first, "ended_to_final_s": t_final - t_ended, "last_text_to_final_s": t_final - t_text,
        "word_diff_here_s": diff_s, "cell_to_final_s": t_final - bg.t_send,
        "probes": [(c.t_send - bg.t_send, c.t_reply - c.t_send) for c in cells],
        "batch_peak_per_s": peak_in_window([m.t for m in batches], 1.0), "update_peak_per_s": peak_in_window(update_t, 1.0),
        "widget_kinds": {kk: {"messages": v[0], "bytes": v[1]} for kk, v in kinds.items()},
        "peak_window": {"start_s": peak_window[0].t - wt[0] if peak_window else 0.0, "messages": best,
                        "kinds": {kk: sum(1 for m in peak_window if _widget_kind(m) == kk)
                                  for kk in {_widget_kind(m) for m in peak_window}}},
        "kernel_counts": {"messages_sent": kern["messages_sent"], "state_updates_sent": kern["state_updates_sent"]},
        "kernel_cpu_share_streaming": cpu_share(bg.t_send, t_ended),
        "kernel_cpu_share_after": cpu_share(t_ended, t_final),
    }


# ------------------------------------------------------------------------------------------ report
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


def fmt_b(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:.2f} GB"
    if x >= 1e6:
        return f"{x / 1e6:.2f} MB"
    if x >= 1e3:
        return f"{x / 1e3:.1f} kB"
    return f"{x:.0f} B"


def fmt_ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def _rng(xs: list[float], fmt: Any) -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "-"
    med = fmt(statistics.median(xs))
    return med if len(xs) == 1 else f"{med} ({fmt(min(xs))}-{fmt(max(xs))})"


def _rate_label(rate: float) -> str:
    return f"{rate:,.0f} tokens/s" if rate else "full speed"


def _ours(snapshot: bool) -> str:
    return "`%%stream`" if snapshot else "`%%stream --no-snapshot`"


def run(*, quick: bool) -> dict[str, Any]:
    """Items 5 (the notebook wire) and 6 (kernel responsiveness): markdown, targets, raw numbers."""
    if quick:
        ours_cfg = [(300, RATE, 1, True), (300, 0.0, 1, True), (300, RATE, 1, False)]
        naive_cfg = [(300, RATE)]
        extrapolate_to = 3_000
        base_s, bg_s = 1.0, 2.0
        cmp_cfg = [(400, RATE, 1), (150, 150.0, 1)]
    else:
        ours_cfg = [(5_000, RATE, 3, True), (5_000, 0.0, 3, True), (50_000, RATE, 1, True), (50_000, 0.0, 3, True),
                    (5_000, RATE, 3, False), (50_000, RATE, 1, False), (50_000, 0.0, 3, False)]
        naive_cfg = [(5_000, RATE), (5_000, 0.0)]
        extrapolate_to = 50_000
        base_s, bg_s = 10.0, 15.0
        # The comparison: (tokens per variant, tokens/s per variant, runs).
        cmp_cfg = [(2_000, RATE, 3), (1_500, 150.0, 1)]
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    # (tokens, rate, HTML snapshot) -> runs
    ours: dict[tuple[int, float, bool], list[dict[str, Any]]] = {(n, r, snap): [] for n, r, _, snap in ours_cfg}
    naive: dict[tuple[int, float], dict[str, Any]] = {}
    with ServerProcess() as server:
        k = Kernel(server.url)
        try:
            stream_ours(k, server, 200, 0.0)  # warm-up: imports, the widget's first display, the connection
            stream_naive(k, server, 200, 0.0)
            for r in range(max(c for _, _, c, _ in ours_cfg)):  # rounds, so a change in load hits all alike
                for n, rate, count, snap in ours_cfg:
                    if r < count:
                        ours[(n, rate, snap)].append(stream_ours(k, server, n, rate, snapshot=snap))
                if r == 0:
                    for n, rate in naive_cfg:
                        naive[(n, rate)] = stream_naive(k, server, n, rate)
            base = latency_figures(probe(k, base_s))
            bg = background_probe(k, server, bg_s)
            # (tokens, rate) -> runs; the configurations alternate, as above
            cmp: dict[tuple[int, float], list[dict[str, Any]]] = {(n, r): [] for n, r, _ in cmp_cfg}
            for r in range(max(c for _, _, c in cmp_cfg)):
                for n, rate, count in cmp_cfg:
                    if r < count:
                        cmp[(n, rate)].append(compare_probe(k, server, n, rate))
        finally:
            k.close()
    naive_x = naive_extrapolated(naive[naive_cfg[0]], extrapolate_to)
    load1 = os.getloadavg()

    by_ref = sum(f["by_ref"] for runs in ours.values() for f in runs)
    n_ours = sum(len(runs) for runs in ours.values())
    md: list[str] = []
    emit = md.append
    env = statistics.median(f["envelope"] for runs in ours.values() for f in runs)
    emit("## 7. The notebook wire")
    emit("")
    emit(
        "A real ipykernel (`jupyter_client.KernelManager`) runs `%%stream \"question -> answer\"` against the "
        "benchmark LM server in its own process, scripted per cell with one chat-adapter reply whose `answer` "
        "has exactly N 4-character tokens, streamed at 2,000 tokens/s or as fast as the server writes. The "
        "naive baseline runs in the same kernel: the same `js.stream` read, and an `ipywidgets.HTML` whose "
        "`.value` is set to the whole text so far on every token. This process subscribes its own ZMQ socket "
        "(no high-water mark) to the kernel's iopub port and records every message of the cell (status, "
        "execute_input, comm_open, comm_msg, display_data, update_display_data, ...) with its receive time. "
        "Bytes are raw wire bytes: the sum of the lengths of all ZMQ frames of a message (topic, delimiter, "
        f"HMAC signature, header, parent header, metadata, content, buffers). The envelope E (everything but "
        f"the content frame) is {env:.0f} B per message (median). Ratio = total bytes / (text bytes + E × "
        "messages). Widget messages/s: the widget's comm messages, peak over sliding 1-s windows and average "
        "over the stream (first to last widget message). Every run checks its output: the delta batches "
        "have consecutive `seq` numbers and join to the start of the text, the one `panes` snapshot on the "
        "wire (the final update, at the last batch's `seq`), the widget in the kernel and the `--out` "
        "prediction hold all of it, and the final `prediction` and the inspector's raw reply, sent by "
        "reference to the pane, resolve to the text and the exact reply (the naive one: one `value` update per "
        "token, growing, the last one the full text, equal to the kernel's value). Runs of different sizes "
        "alternate. Values: median (min-max) over runs. Kernel CPU: the kernel process's CPU time for the cell. "
        "This process also stands in for JupyterLab's widget manager: when our widget opens, it says `hello` "
        "to it on the shell channel, as the widget's front end does when its model comes up; the kernel then "
        "sends the final `panes` by reference (only the text no batch carried, and the length), and the check "
        f"fills them in from the batches as a view does ({by_ref} of {n_ours} runs of ours ended by reference; "
        "a stream that ends before the hello arrives sends the text in the final update instead). "
        "`--no-snapshot` rows leave out the static HTML copy of the result that the cell's display gets at "
        "the end (for GitHub, nbviewer and nbconvert, which do not run widgets)."
    )
    emit("")
    rows = []

    def row(name: str, n: int, rate: float, runs: list[dict[str, Any]], note: str = "") -> list[str]:
        def g(key: str) -> list[float]:
            return [f[key] for f in runs]

        js_ = [f["jupyter_server"] for f in runs]
        return [name + note, f"{n:,}", _rate_label(rate), str(len(runs)),
                _rng(g("duration"), fmt_s),
                _rng(g("messages"), lambda x: f"{x:,.0f}"),
                _rng(g("peak_per_s"), lambda x: f"{x:,.0f}"),
                _rng(g("avg_per_s"), lambda x: f"{x:,.0f}"),
                _rng(g("bytes"), fmt_b),
                fmt_b(runs[0]["text_bytes"]),
                _rng(g("ratio"), lambda x: f"{x:.2f}"),
                f"{statistics.median(j['peak_msg_rate'] for j in js_):,.0f}",
                f"{max(j['dropped'] for j in js_):,}",
                _rng(g("peak_bytes_per_s_1s"), fmt_b),
                _rng(g("kernel_cpu"), fmt_s)]

    for (n, rate, snap), runs in ours.items():
        rows.append(row(f"{_ours(snap)} widget", n, rate, runs))
    for (n, rate), f in naive.items():
        rows.append(row("naive `HTML.value = text`", n, rate, [f]))
    bw = bg["wire"]
    rows.append(row("`%%stream --background` (section 7)", bg["tokens"], RATE,
                    [{**bw, "duration": float("nan"), "kernel_cpu": float("nan")}]))
    headers = ["widget", "tokens", "server", "runs", "cell time", "iopub msgs", "widget msgs/s peak (1 s)",
               "widget msgs/s avg", "bytes", "text", "bytes / (text + E×msgs)",
               "jupyter_server msgs/s (3 s window)", "jupyter_server would drop", "peak bytes/s (1 s)",
               "kernel CPU"]
    emit(table(headers, rows, "lrlr" + "r" * 11))
    emit("")
    emit(
        f"Naive at {extrapolate_to:,} tokens, *computed, not measured* (one update per token, each the measured "
        f"fixed part of {naive[naive_cfg[0]]['per_update_fixed']:.0f} B plus the JSON-escaped text so far): "
        f"{naive_x['messages']:,} messages, {fmt_b(naive_x['bytes'])} for {fmt_b(naive_x['text_bytes'])} of text "
        f"(ratio {naive_x['ratio']:.0f}), {fmt_b(naive_x['bytes_per_s_at_end'])}/s at the end at 2,000 tokens/s, "
        f"and about {fmt_s(naive_x['kernel_cpu'])} of kernel CPU (the measured CPU per byte)."
    )
    emit("")
    for (n, rate), f in naive.items():
        if f["lost"]:
            emit(f"The naive widget at {n:,} tokens ({_rate_label(rate)}) lost {f['lost']:,} of its {n:,} updates "
                 "before they reached this reader: ZMQ's PUB socket drops what exceeds its queue (1,000 messages) "
                 "when the reader falls behind (no jupyter_server involved); its figures count what arrived.")
            emit("")
    emit(
        f"The iopub rate limit exists only in jupyter_server (`ServerApp.iopub_msg_rate_limit` = "
        f"{JS_MSG_RATE:,.0f} msgs/s and `iopub_data_rate_limit` = {JS_DATA_RATE:,.0f} B/s over "
        f"`rate_limit_window` = {JS_WINDOW:g} s); a kernel driven by jupyter_client, as here, has none. The "
        "jupyter_server columns replay its `_limit_rate` (2.21) over the recorded messages with our receive "
        "times: it counts every iopub message except status, comm_open and execute_input, and its data limit "
        "counts the bytes of `stream` messages only, so widget traffic can only hit the message limit. "
        "If the data limit counted every message's bytes, it would drop "
        + ", ".join(f"{max(f['jupyter_server_all_bytes']['dropped'] for f in runs):,} messages of ours at "
                    f"{n:,} tokens ({_rate_label(rate)}{'' if snap else ', --no-snapshot'})"
                    for (n, rate, snap), runs in ours.items())
        + "; "
        + ", ".join(f"{f['jupyter_server_all_bytes']['dropped']:,} of the naive one at {n:,} "
                    f"({_rate_label(rate)})" for (n, rate), f in naive.items())
        + "."
    )
    emit("")
    # Where the bytes go
    picks = [(f"{_ours(snap)} {n:,} @ {_rate_label(r)}", runs[0]) for (n, r, snap), runs in ours.items()]
    picks += [(f"naive {n:,} @ {_rate_label(r)}", f) for (n, r), f in naive.items()][:1]
    cats = []
    for _, f in picks:
        for c in f["categories"]:
            if c not in cats:
                cats.append(c)
    # What the widget's messages are, on the longest paced run.
    (pn, pr, _), pruns = max(((key, runs) for key, runs in ours.items() if key[1] and key[2]), key=lambda kv: kv[0][0])
    pf = pruns[0]
    cat = pf["categories"]

    def per_s(c: str) -> float:
        return cat.get(c, {"messages": 0})["messages"] / pf["widget_span_s"]

    all_bytes_peak = max(f["jupyter_server_all_bytes"]["peak_data_rate"] for runs in ours.values() for f in runs)
    emit(
        f"The `%%stream` widget's messages at {pn:,} tokens and {_rate_label(pr)} "
        f"({pf['widget_span_s']:.1f} s): {cat.get('delta batches (custom messages)', {}).get('messages', 0):,} "
        f"delta batches ({per_s('delta batches (custom messages)'):.1f}/s; {pf['batches_with_stats']:,} of them "
        f"also carrying the stats), "
        f"{cat.get('stats updates', {}).get('messages', 0):,} separate `stats` updates, "
        f"{cat.get('snapshots (panes) while streaming', {}).get('messages', 0):,} `panes` snapshots while "
        f"streaming ({fmt_b(cat.get('snapshots (panes) while streaming', {}).get('bytes', 0))}), "
        f"{cat.get('other state updates (status, lm_calls, ...)', {}).get('messages', 0):,} other updates "
        f"(start, status, the prompt for the inspector), and the final state: one update with the final "
        f"snapshot, the prediction and the LM call, its text by reference to the pane. Without the one-off widget code and initial state (comm_open, "
        f"{fmt_b(cat.get('comm_open (widget code + initial state)', {}).get('bytes', 0))}), the byte ratios of "
        "ours are " + ", ".join(f"{statistics.median(f['ratio_without_widget_code'] for f in runs):.2f} "
                                f"({n:,}, {_rate_label(r)}{'' if snap else ', --no-snapshot'})"
                                for (n, r, snap), runs in ours.items())
        + f". Peak of ours over a 3-s window counting every byte: {fmt_b(all_bytes_peak)}/s."
    )
    emit("")
    emit("Where the bytes go (first run of each; messages / bytes / bytes as a multiple of the text):")
    emit("")
    brows = []
    for c in cats:
        r = [c]
        for _, f in picks:
            v = f["categories"].get(c)
            r.append(f"{v['messages']:,} / {fmt_b(v['bytes'])} / {v['bytes'] / f['text_bytes']:.2f}x" if v else "")
        brows.append(r)
    brows.append(["**total**"] + [f"{f['messages']:,} / {fmt_b(f['bytes'])} / {f['bytes'] / f['text_bytes']:.2f}x"
                                  for _, f in picks])
    copies = []
    for key, what in (("deltas", "delta batches"), ("panes", "`panes` snapshots"), ("prediction", "`prediction` trait"),
                      ("lm_calls", "`lm_calls` (inspector: raw reply)"), ("text/html", "HTML snapshot (display)"),
                      ("value", "`value`")):
        r = [f"... of which the text in {what}"]
        for _, f in picks:
            v = f["text_copies_bytes"].get(key)
            r.append(f"{v / f['text_bytes']:.2f}x" if v else "")
        copies.append(r)
    emit(table(["category"] + [p for p, _ in picks], brows + copies, "l" + "r" * len(picks)))
    emit("")

    # ---------------------------------------------------------------------------------- section 7
    lat = bg["latency"]
    emit("## 8. Kernel responsiveness")
    emit("")
    emit(
        f"While a `%%stream --background` cell streams {bg['tokens']:,} tokens at 2,000 tokens/s "
        f"({bg['stream_s']:.1f} s of deltas), this process executes the cell `1` every 100 ms (the next one "
        "after the reply, if a reply is late) and times each round trip: execute_request sent to "
        "execute_reply received on the shell channel, and to the cell's `status: idle` on iopub. "
        f"{bg['during']} of {lat['count']} probes started and ended while the stream's deltas were arriving; "
        "the stream's text was checked as in section 6. Baseline: the same probes with nothing running. "
        f"The kernel used {bg['kernel_cpu_share'] * 100:.0f}% of a core during the stream (probes included)."
    )
    emit("")
    lrows = []
    for name, f in (("no stream (baseline)", base), ("during a 2,000 tokens/s background stream", lat)):
        for kind, label in (("reply", "execute_reply"), ("idle", "status idle")):
            v = f[kind]
            lrows.append([name, label, str(f["count"]), fmt_ms(v["min"]), fmt_ms(v["median"]), fmt_ms(v["p90"]),
                          fmt_ms(v["p99"]), fmt_ms(v["max"])])
    emit(table(["kernel", "until", "probes", "min ms", "median ms", "p90 ms", "p99 ms", "max ms"], lrows, "llrrrrrr"))
    emit("")
    # ---------------------------------------------------------------------- the comparison (issue 14)
    def pooled(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
        xs = [x for f in runs if f[key] for x in f[key]["all_reply"]]
        if not xs:
            return None
        return {"count": len(xs), "median": statistics.median(xs), "p99": pct(xs, 0.99), "max": max(xs)}

    cfig = {}
    for (n, rate), runs in cmp.items():
        cfig[(n, rate)] = {
            "whole": pooled(runs, "latency"), "streaming": pooled(runs, "latency_streaming"),
            "after": pooled(runs, "latency_after"),
            "peak": max(f["wire"]["peak_per_s"] for f in runs),
            # Time the probes waited beyond 50 ms, over the time from the cell to the widget's final update: a
            # blocked kernel is one probe however long it blocks, this counts how long.
            "late_share": sum(sum(max(0.0, rt - 0.050) for _, rt in f["probes"]) for f in runs)
            / sum(f["cell_to_final_s"] for f in runs),
        }
    emit("### 4 variants at once (`%%stream --compare`, issue 14)")
    emit("")
    emit(
        "`%%stream \"question -> answer\" --compare model=m1,m2,m3,m4 --background`: the four variants stream at "
        "once into ONE widget (a column each). The server is scripted per model (`POST /v1/demo/script` with "
        "`\"model\"`), each variant with its own reply of N tokens at the given rate per variant, so the kernel "
        "receives 4x that rate in total. As above, this process records every iopub message and probes the kernel "
        "with `1` every 100 ms, here from the cell's reply until the widget's final update (so the probes also "
        "cover the end of the comparison: the word diff of the predictions, computed in the kernel). Widget "
        "msgs/s: all of the widget's comm messages (delta batches and trait updates: statuses, LM calls, "
        "`variants`, the final state), peak over sliding 1-s windows. Probes are split at the moment the last "
        "variant's stream ended (`time.perf_counter()` in the kernel, from `_.stats`: the same CLOCK_MONOTONIC "
        "as this process's). Late: the time the probes waited beyond 50 ms, as a share of the time from the "
        "cell to the final update (a kernel blocked for 5 s is one probe of 5 s; this counts the 5 s). Word "
        "diff: `PredictionDiff` of the same four texts, timed alone in a fresh interpreter. Checked per run: one widget; "
        "consecutive batch `seq`; each variant's batches join to the start of its text and the final snapshot "
        "(by reference) to all of it; every variant in `vstats`; the final `variants` trait says `done` for all "
        "four, with each prediction; each LM call's raw reply resolves to its reply; in the kernel `_` is the "
        "`--out` dict of 4 predictions holding the texts. Round trips: pooled over the runs."
    )
    emit("")
    crows = []
    for (n, rate), runs in cmp.items():
        c = cfig[(n, rate)]

        def fmt_lat(x: dict[str, Any] | None) -> str:
            return "-" if x is None else f"{x['count']}: {fmt_ms(x['median'])} / {fmt_ms(x['p99'])} / {fmt_ms(x['max'])}"

        crows.append([
            f"{n:,}", _rate_label(rate), str(len(runs)),
            _rng([f["stream_s"] for f in runs], fmt_s),
            _rng([f["wire"]["widget_messages"] for f in runs], lambda x: f"{x:,.0f}"),
            _rng([f["wire"]["peak_per_s"] for f in runs], lambda x: f"{x:,.0f}"),
            _rng([f["batch_peak_per_s"] for f in runs], lambda x: f"{x:,.0f}"),
            fmt_lat(c["whole"]), fmt_lat(c["streaming"]), fmt_lat(c["after"]),
            f"{c['late_share'] * 100:.0f}%",
            _rng([f["ended_to_final_s"] for f in runs], fmt_s),
            _rng([f["word_diff_here_s"] for f in runs], fmt_s),
            _rng([f["kernel_cpu_share_streaming"] * 100 for f in runs], lambda x: f"{x:.0f}%"),
        ])
    emit(table(["tokens per variant", "server, per variant", "runs", "streaming", "widget msgs",
                "widget msgs/s peak (1 s)", "of which batches", "round trip, cell to final update (probes: p50 / p99 / max ms)",
                "while streaming", "after the last variant ended", "late (> 50 ms)", "last end -> final update",
                "word diff here", "kernel CPU while streaming"], crows, "rlrrrrrlllrrrr"))
    emit("")
    big = max(cmp, key=lambda key: key[0])
    bf = cmp[big][0]
    emit(
        f"The end of a comparison: the widget's final update came "
        f"{', '.join(fmt_s(f['ended_to_final_s']) for f in cmp[big])} after the last variant ended ({big[0]:,} "
        f"tokens per variant), the kernel busy meanwhile with the word diff of the four predictions "
        f"(`jupyter_stream._worddiff.word_ops`: common ends, then anchors, the words each side holds once, "
        f"`difflib` only between close anchors: about linear in the text), "
        f"{fmt_s(bf['word_diff_here_s'])} for the same texts alone in a fresh interpreter; the kernel runs it on its "
        "event loop, between the last variant's end and the final update. The widget's messages of the first "
        f"run at {big[0]:,} tokens: "
        + ", ".join(f"{v['messages']} {k} ({fmt_b(v['bytes'])})" for k, v in bf["widget_kinds"].items())
        + " (each finished variant's prediction refers to its pane's text, `{$pane: key}`)."
    )
    emit("")
    emit(f"Load average at the start / end: {' / '.join(f'{x:.2f}' for x in load0)} -> "
         f"{' / '.join(f'{x:.2f}' for x in load1)} on {os.cpu_count()} cores; these sections took "
         f"{time.perf_counter() - t_start:.0f} s.")
    emit("")

    # ---------------------------------------------------------------------------------- targets
    every = [f for runs in ours.values() for f in runs] + [bw]
    peak = max(f["peak_per_s"] for f in every)
    def worst(snap: bool, key: str = "ratio") -> tuple[float, int, float]:
        return max((f[key], n, r) for (n, r, sn), runs in ours.items() if sn == snap for f in runs)

    ratio_worst = worst(True)
    bare_worst, bare_code = worst(False), worst(False, "ratio_without_widget_code")
    drops = max(f["jupyter_server"]["dropped"] for runs in ours.values() for f in runs + [bw])
    naive_drop = max(f["jupyter_server"]["dropped"] for f in naive.values())
    targets = [
        ("Wire: `%%stream` widget at most 30 messages/s (peak over 1-s windows, any run)",
         f"{peak:.0f}/s (naive: {max(f['peak_per_s'] for f in naive.values()):,.0f}/s)", peak <= 30),
        ("Wire: `%%stream` total bytes at most 1.5x (text + E x messages), as shipped (the text goes out twice: "
         "the deltas, and the HTML snapshot a saved notebook shows on GitHub)",
         (f"up to {ratio_worst[0]:.2f}x ({ratio_worst[1]:,} tokens, {_rate_label(ratio_worst[2])}; naive "
          f"{max(f['ratio'] for f in naive.values()):.1f}x at {naive_cfg[0][0]:,}, {naive_x['ratio']:.0f}x "
          f"computed at {extrapolate_to:,})"), ratio_worst[0] <= 1.5),
        ("Wire: `%%stream --no-snapshot` total bytes at most 1.5x (text + E x messages)",
         f"up to {bare_worst[0]:.2f}x ({bare_worst[1]:,} tokens, {_rate_label(bare_worst[2])})", bare_worst[0] <= 1.5),
        ("Wire: `%%stream --no-snapshot` at most 1.5x, the one-off widget code (comm_open) set aside like the envelope",
         f"up to {bare_code[0]:.2f}x ({bare_code[1]:,} tokens, {_rate_label(bare_code[2])})", bare_code[0] <= 1.5),
        ("Wire: nothing dropped by jupyter_server's iopub rate limit (every text checked; limit replayed)",
         f"{drops} dropped (naive: {naive_drop:,})", drops == 0),
        ("Responsiveness: median round trip under 50 ms during a 2,000 tokens/s stream",
         f"{lat['reply']['median'] * 1e3:.1f} ms (baseline {base['reply']['median'] * 1e3:.1f} ms)",
         lat["reply"]["median"] < 0.050),
        ("Responsiveness: p99 round trip under 200 ms during a 2,000 tokens/s stream",
         f"{lat['reply']['p99'] * 1e3:.1f} ms (baseline {base['reply']['p99'] * 1e3:.1f} ms)",
         lat["reply"]["p99"] < 0.200),
    ]
    cpeak = max(c["peak"] for c in cfig.values())
    targets.append((
        "Compare, 4 variants streaming at once: the widget at most 30 messages/s in total (batches + trait updates, "
        "peak over 1-s windows, any run)",
        ", ".join(f"{c['peak']:.0f}/s ({_rate_label(r)} per variant)" for (n, r), c in cfig.items()), cpeak <= 30))
    for (n, r), c in cfig.items():
        w, st, af = c["whole"], c["streaming"], c["after"]
        targets.append((
            f"Compare, 4 variants at {_rate_label(r)} each ({n:,} tokens each): median round trip under 50 ms, from "
            "the cell until the widget's final update",
            f"{w['median'] * 1e3:.1f} ms over {w['count']} probes (while streaming {st['median'] * 1e3:.1f} ms; p99 "
            f"{fmt_s(w['p99'])}, max {fmt_s(w['max'])}"
            + (f": after the last variant ended, the word diff, {fmt_s(af['max'])}" if af else "") + ")",
            w["median"] < 0.050))
    raw = {
        "quick": quick,
        "rate": RATE,
        "ours": [{"tokens": n, "rate": r, "html_snapshot": snap, "runs": runs} for (n, r, snap), runs in ours.items()],
        "naive": [{"tokens": n, "rate": r, "run": f} for (n, r), f in naive.items()],
        "naive_extrapolated": {"tokens": extrapolate_to, **naive_x},
        "responsiveness": {"baseline": base, "background": bg},
        "compare": [{"tokens": n, "rate": r, "runs": runs} for (n, r), runs in cmp.items()],
        "load_average": {"start": list(load0), "end": list(load1)},
    }
    return {"markdown": md, "targets": targets, "raw": json.loads(json.dumps(raw, default=float))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes (about 10 s)")
    ap.add_argument("--json", help="also write the raw numbers to this file")
    args = ap.parse_args(argv)
    res = run(quick=args.quick)
    print_section(res, args.json)
    return 0


if __name__ == "__main__":
    from run import exit_with

    exit_with(main)
