"""Run history: every run of a program, kept with what went in and what came out, to look at and diff.

Every stream is one run: ``stream()`` and ``streamify`` (and through them ``%%stream``, ``show`` and
``serve``). When a stream is created, :func:`capture` decides whether its run is kept: in the history
(:data:`runs`, on by default) and/or by the recordings in force (``with js.record(path):``). The stream's
driver (``jupyter_stream/streaming/drive.py:drive``) then opens a :class:`Tape` for the run and ends it with
the prediction, the error or the stop; each LM call of the run reports to the tape at its start and end
(``jupyter_stream/streaming/call.py:CallWatch``). Nothing is done per token unless a recording is active:
then each event and each raw LM delta is kept with its time (O(1) each).

A run holds its inputs, the settings in force (model, adapter, sampling options; never an API key), each
LM call's exact messages, raw reply, usage and timings, and the prediction or the error with its partial
text. The history is bounded by a count and by bytes (``js.runs.limit(max_runs=..., max_bytes=...)``),
dropping the oldest runs; a run enters it when it ends (a run still streaming is not in it).

Example::

    >>> import jupyter_stream as js
    >>> from jupyter_stream.demo import DemoServer
    >>> server = DemoServer().start()
    >>> server.script("[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]")
    >>> js.configure(lm=js.LM("demo", base_url=server.url, api_key="demo", cache=False))
    >>> js.runs.clear()
    >>> final = list(js.stream(js.Predict("question -> answer"), None, {"question": "Capital of France?"}))[-1]
    >>> run = js.runs[-1]
    >>> run.inputs, run.status, run.prediction.answer, run.lm_calls[0].raw.splitlines()[1]
    ({'question': 'Capital of France?'}, 'ok', 'Paris', 'Paris')
    >>> js.configure(lm=None); server.stop()
"""

from __future__ import annotations

import contextvars
import re
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._exceptions import UsageError
from ._prediction import is_prediction

__all__ = [
    "Capture",
    "LMCall",
    "Recorder",
    "Run",
    "Runs",
    "Tape",
    "capture",
    "keeping",
    "recording",
    "runs",
    "scrub",
    "settings_of",
    "size_of",
    "title_of",
]

DEFAULT_MAX_RUNS = 100
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(eq=False)
class LMCall:
    """One LM call of a run: what was sent, what came back, and when (seconds since the run began)."""

    call_id: int
    """The call's number within its run (the ``call_id`` of its events)."""
    predict_name: str
    """The predictor that made the call."""
    model: str
    messages: list[dict[str, Any]]
    """The exact messages sent."""
    params: dict[str, Any] = field(default_factory=dict)
    """The request parameters sent with them (model, temperature...; never a key)."""
    started: float = 0.0
    """When the call began, in seconds since the run began."""
    ttft: float | None = None
    """Seconds from the call's start to its first delta (None: nothing streamed)."""
    duration: float = 0.0
    raw: str = ""
    """The reply as the model wrote it (adapter markers included); on an error, what had arrived."""
    reasoning: str = ""
    """Native reasoning (``reasoning_content``), if the model sent any."""
    usage: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    error: str | None = None
    """``"LMError: ..."`` when the call failed."""
    deltas: list[tuple[float, str]] | None = None
    """Recorded runs only: each content delta as ``(seconds since the run began, text)``."""
    reasoning_deltas: list[tuple[float, str]] | None = None
    """Recorded runs only: each native reasoning delta, the same way."""

    def reply(self) -> Any:
        """This call's reply as a :class:`jupyter_stream.demo.Reply`, for the demo server to serve again (a
        regression fixture of your own): the recorded deltas exactly when the run was recorded, else the raw
        reply cut by the demo tokenizer.

        >>> LMCall(1, "predict", "m", [], raw="Paris", deltas=[(0.1, "Pa"), (0.2, "ris")]).reply().chunks[:2]
        [{'choices': [{'index': 0, 'delta': {'content': 'Pa'}, 'finish_reason': None}]}, {'choices': [{'index': 0, 'delta': {'content': 'ris'}, 'finish_reason': None}]}]
        """
        from .demo.server import Reply

        if self.deltas is None:
            return Reply(content=self.raw, reasoning=self.reasoning, usage=self.usage or None)
        timed = sorted([(t, "reasoning_content", s) for t, s in self.reasoning_deltas or ()]
                       + [(t, "content", s) for t, s in self.deltas], key=lambda d: d[0])
        chunks: list[Any] = [{"choices": [{"index": 0, "delta": {kind: text}, "finish_reason": None}]}
                             for _t, kind, text in timed]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if self.usage:
            chunks.append({"choices": [], "usage": dict(self.usage)})
        return Reply(chunks=chunks)


@dataclass(eq=False)
class Run:
    """One run of a program: its inputs, settings, LM calls and outcome. ``repr`` says which in one line."""

    label: str
    """``"#12"`` for the 12th run of this process, ``"file.jsonl[0]"`` for a run read from a recording."""
    kind: str
    """``"stream"`` (``stream()``, the magic, ``show``, ``serve``) or ``"streamify"``."""
    title: str
    """What ran: a signature or a program's name."""
    inputs: dict[str, Any]
    settings: dict[str, Any]
    """The settings in force: ``model``, ``base_url``, ``adapter``, sampling options (never a key)."""
    started_at: float
    """When it began (seconds since the epoch)."""
    duration: float = 0.0
    status: str = "running"
    """``"ok"``, ``"error"`` or ``"stopped"`` (cancelled, or the consumer left early)."""
    prediction: Any = None
    error: BaseException | None = None
    """The exception that ended the run (a ``StreamError`` carries ``.partial``, the text each field had)."""
    lm_calls: list[LMCall] = field(default_factory=list)
    events: list[tuple[float, Any]] | None = None
    """Recorded runs (and all runs after ``js.runs.limit(events=True)``): every event the consumer received, as
    ``(seconds since the run began, event)``; else None."""
    size: int = 0
    """The memory the run holds, in bytes (see :func:`size_of`), measured when it ended (0 for a run read from
    a recording: it is in no history; ``size_of(run)`` measures it)."""

    @property
    def ttft(self) -> float | None:
        """Seconds from the run's start to the first streamed delta of any of its LM calls."""
        firsts = [c.started + c.ttft for c in self.lm_calls if c.ttft is not None]
        return min(firsts) if firsts else None

    @property
    def model(self) -> str:
        """The model(s) the run's LM calls went to, else the configured one."""
        models = list(dict.fromkeys(c.model for c in self.lm_calls))
        return ", ".join(models) if models else str(self.settings.get("model", ""))

    def outputs(self) -> dict[str, str]:
        """The output fields as text: the prediction's, or on an error what each field had received."""
        if self.prediction is not None and is_prediction(self.prediction):
            return {k: v if isinstance(v, str) else repr(v) for k, v in self.prediction.items()}
        partial = getattr(self.error, "partial", None)
        return dict(partial) if isinstance(partial, Mapping) else {}

    def __repr__(self) -> str:
        calls = len(self.lm_calls)
        what = f"error {type(self.error).__name__}" if self.status == "error" and self.error is not None else self.status
        model = f" to {self.model}" if self.model else ""
        return (f"<Run {self.label} {what}: {self.title} in {self.duration:.2f} s, "
                f"{calls} LM call{'' if calls == 1 else 's'}{model}>")


class Recorder(Protocol):
    """Where a recorded run goes when it ends (``jupyter_stream/_recording.py:RecordingFile``)."""

    def write(self, run: Run) -> None:
        """Keep ``run`` (it has its events and deltas)."""


class Runs:
    """The run history (``js.runs``): the latest runs, newest last, bounded by count and by bytes.

    ``js.runs[-1]`` is the last run to end; ``len``, iteration and slices work as on a list (iteration
    and slices take a copy, so runs ending meanwhile do not disturb them). ``limit(max_runs=...,
    max_bytes=..., events=...)`` sets what it keeps: the bounds (defaults: 100 runs, 64 MiB; ``max_runs=0``
    keeps none and turns the capture off; when a run ends, the oldest runs are dropped until both hold, the
    newest run always kept, even alone over ``max_bytes``) and whether runs keep their events with their times
    (default False: a run keeps its events only when recorded; True lets ``js.replay(run)`` play any run, at
    O(1) per token and about 300 bytes a token). ``clear()`` empties it. Thread-safe.

    >>> history = Runs(max_runs=2)
    >>> history.limit(max_runs=10, max_bytes=1_000_000)
    <Runs: 0 runs (at most 10), 0 B (at most 976.6 KiB)>
    """

    def __init__(self, *, max_runs: int = DEFAULT_MAX_RUNS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._runs: deque[Run] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._count = 0
        self._max_runs, self._max_bytes = max_runs, max_bytes
        self._events = False
        self.limit(max_runs=max_runs, max_bytes=max_bytes)

    def limit(self, *, max_runs: int | None = None, max_bytes: int | None = None, events: bool | None = None) -> Runs:
        """Set the bounds and whether runs keep their events (None: unchanged), drop what exceeds the bounds now;
        returns the history. Streams created afterwards follow the new settings."""
        if events is not None and not isinstance(events, bool):
            raise UsageError(f"js.runs.limit(events=...) takes True or False, got {events!r}")
        for name, value in (("max_runs", max_runs), ("max_bytes", max_bytes)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise UsageError(f"js.runs.limit({name}=...) takes an int >= 0, got {value!r}")
        with self._lock:
            if max_runs is not None:
                self._max_runs = max_runs
            if max_bytes is not None:
                self._max_bytes = max_bytes
            if events is not None:
                self._events = events
            self._trim(keep_newest=self._max_runs > 0)
        return self

    @property
    def max_runs(self) -> int:
        return self._max_runs

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def events(self) -> bool:
        """Whether every kept run keeps its events (``limit(events=True)``), not only the recorded ones."""
        return self._events

    @property
    def bytes(self) -> int:
        """The memory the kept runs hold (the sum of their :attr:`Run.size`)."""
        return self._bytes

    def next_label(self) -> str:
        """The label of the next run of this process (``"#1"``, ``"#2"``...)."""
        with self._lock:
            self._count += 1
            return f"#{self._count}"

    def add(self, run: Run) -> None:
        """Keep a run that ended, dropping the oldest ones beyond the bounds."""
        with self._lock:
            if self._max_runs <= 0:
                return
            self._runs.append(run)
            self._bytes += run.size
            self._trim(keep_newest=True)

    def _trim(self, *, keep_newest: bool) -> None:
        runs = self._runs
        floor = 1 if keep_newest else 0
        while len(runs) > floor and (len(runs) > self._max_runs or self._bytes > self._max_bytes):
            self._bytes -= runs.popleft().size

    def clear(self) -> None:
        """Forget every run."""
        with self._lock:
            self._runs.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._runs)

    def __getitem__(self, index: int | slice) -> Any:
        with self._lock:
            if isinstance(index, slice):
                return list(self._runs)[index]
            if not isinstance(index, int):
                raise TypeError(f"js.runs takes an int index or a slice, got {type(index).__name__}")
            n = len(self._runs)
            if not -n <= index < n:
                raise IndexError(f"js.runs[{index}]: the history holds {n} run{'' if n == 1 else 's'}")
            return self._runs[index]

    def __iter__(self) -> Iterator[Run]:
        with self._lock:
            return iter(list(self._runs))

    def __repr__(self) -> str:
        n = len(self._runs)
        return (f"<Runs: {n} run{'' if n == 1 else 's'} (at most {self._max_runs}), {_human(self._bytes)} "
                f"(at most {_human(self._max_bytes)})>")


runs = Runs()
"""The process's run history (``js.runs``)."""

_keep: contextvars.ContextVar[bool] = contextvars.ContextVar("jupyter_stream_keep_runs", default=True)
_recorders: contextvars.ContextVar[tuple[Recorder, ...]] = contextvars.ContextVar("jupyter_stream_recorders", default=())


@contextmanager
def keeping(keep: bool) -> Iterator[None]:
    """Keep (or not) in the history the runs of the streams created inside (``serve`` passes False)."""
    token = _keep.set(keep)
    try:
        yield
    finally:
        _keep.reset(token)


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Hand every run of the streams created inside to ``recorder`` too (``js.record`` uses it)."""
    token = _recorders.set((*_recorders.get(), recorder))
    try:
        yield
    finally:
        _recorders.reset(token)


class Capture:
    """What a stream knows of its run when it is created (made by :func:`capture`): started once per run."""

    __slots__ = ("kind", "title", "inputs", "settings", "keep", "recorders", "events", "run")

    def __init__(self, kind: str, title: str, inputs: dict[str, Any], settings: dict[str, Any], keep: bool,
                 recorders: tuple[Recorder, ...], events: bool = False) -> None:
        self.kind, self.title, self.inputs, self.settings = kind, title, inputs, settings
        self.keep, self.recorders = keep, recorders
        self.events = events or bool(recorders)
        """Whether the run keeps its events and raw deltas with their times (a recording, or ``limit(events=True)``)."""
        self.run: Run | None = None
        """The run, once it ended."""

    def start(self) -> Tape:
        """The run begins."""
        return Tape(self)


def capture(*, kind: str, title: str, inputs: Mapping[str, Any], snapshot: Any) -> Capture | None:
    """The capture of a stream being created now, or None when nothing keeps its run (no per-run cost then).

    ``snapshot``: the settings the stream captured (``jupyter_stream.settings.Settings``).
    """
    keep = _keep.get() and runs.max_runs > 0
    recorders = _recorders.get()
    if not keep and not recorders:
        return None
    return Capture(kind, title, dict(inputs), settings_of(snapshot), keep, recorders, events=keep and runs.events)


class Tape:
    """One run in progress: its LM calls as they start and end, and (recorded runs) its events and deltas."""

    __slots__ = ("capture", "t0", "started_at", "events", "calls")

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.t0 = time.perf_counter()
        self.started_at = time.time()
        self.events: list[tuple[float, Any]] | None = [] if capture.events else None
        """Each event with its time, when the run keeps them (else None: nothing per token)."""
        self.calls: list[LMCall] = []

    def event(self, item: Any) -> None:
        """An event reached the consumer (recorded runs only)."""
        self.events.append((time.perf_counter() - self.t0, item))  # type: ignore[union-attr]

    def lm_start(self, call_id: int, predict_name: str, model: str, messages: list[dict[str, Any]]) -> LMCall:
        """An LM call of the run begins."""
        lm = LMCall(call_id, predict_name, model, messages, started=time.perf_counter() - self.t0)
        if self.events is not None:
            lm.deltas, lm.reasoning_deltas = [], []
        self.calls.append(lm)
        return lm

    def timed(self, into: list[tuple[float, str]], then: Callable[[str], Any] | None) -> Callable[[str], Any]:
        """A delta hook keeping each delta with its time in ``into``, then passing it to ``then`` (recorded runs)."""
        append, now, t0 = into.append, time.perf_counter, self.t0
        if then is None:
            def keep(text: str) -> None:
                append((now() - t0, text))
            return keep

        def keep_and_pass(text: str) -> Any:
            append((now() - t0, text))
            return then(text)
        return keep_and_pass

    def lm_end(self, lm: LMCall, record: Any, error: BaseException | None) -> None:
        """The LM call ended: ``record`` is its ``LMRecord``."""
        lm.params = scrub(getattr(record, "params", None) or {})
        lm.ttft, lm.duration, lm.cached = record.ttft, record.duration, record.cached
        lm.raw = record.text or record.content_so_far()
        lm.reasoning = record.reasoning or "".join(record.reasoning_parts)
        lm.usage = dict(record.usage or {})
        if error is not None:
            lm.error = f"{type(error).__name__}: {error}"

    def end(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> Run:
        """The run ended: keep it where it goes (the history, the recordings); returns it."""
        cap = self.capture
        settings = dict(cap.settings)
        if "model" not in settings and self.calls:  # nothing configured: the LM the program found (the demo LM)
            settings["model"] = self.calls[0].model
            settings.update((k, v) for k, v in self.calls[0].params.items() if k != "model")
        run = Run(
            label=runs.next_label(), kind=cap.kind, title=cap.title, inputs=cap.inputs, settings=settings,
            started_at=self.started_at, duration=time.perf_counter() - self.t0,
            status="stopped" if stopped else "error" if error is not None else "ok",
            prediction=prediction, error=error, lm_calls=self.calls, events=self.events,
        )
        run.size = size_of(run, events=self.events)
        cap.run = run
        if cap.keep:
            runs.add(run)
        for recorder in cap.recorders:
            try:
                recorder.write(run)
            except Exception as e:  # noqa: BLE001 - the run's own outcome must not be replaced by the recording's
                warnings.warn(f"jupyter_stream: run {run.label} was not recorded: {e}", RuntimeWarning, stacklevel=2)
        return run


# ------------------------------------------------------------------------------------------- helpers
_SECRET = re.compile(r"key|secret|password|passwd|authorization|bearer|cookie|token(?!s)", re.IGNORECASE)


def scrub(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without anything that may hold a credential (keys named like ``api_key``, ``Authorization``...).

    >>> scrub({"model": "m", "temperature": 0, "api_key": "sk-1", "max_tokens": 5, "extra_headers": {"Authorization": "x", "X-Trace": "1"}})
    {'model': 'm', 'temperature': 0, 'max_tokens': 5, 'extra_headers': {'X-Trace': '1'}}
    """
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(k, str) and _SECRET.search(k):
            continue
        out[k] = scrub(v) if isinstance(v, Mapping) else v
    return out


def settings_of(snapshot: Any) -> dict[str, Any]:
    """The settings a run records from a settings snapshot: the LM's model, server and request options,
    and the adapter (never the key)."""
    out: dict[str, Any] = {}
    lm = getattr(snapshot, "lm", None)
    if lm is not None:
        out["model"] = lm.model
        if lm.base_url:
            out["base_url"] = lm.base_url
        out.update((k, v) for k, v in scrub(lm.request_params()).items() if k != "model")
    adapter = getattr(snapshot, "adapter", None)
    out["adapter"] = getattr(adapter, "name", type(adapter).__name__) if adapter is not None else "chat"
    return out


def title_of(program: Any, predictor_name: str | None = None) -> str:
    """What a run ran, in a few words: ``"Predict(question -> answer)"``, ``"RAG"``, ``"RAG.generate"``."""
    name = type(program).__name__
    if predictor_name:
        return f"{name}.{predictor_name}"
    sig = getattr(getattr(program, "signature", None), "signature", None)
    return f"{name}({sig})" if isinstance(sig, str) else name


_ATOMS = frozenset({str, bytes, bytearray, int, float, complex, bool, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset, deque})


def size_of(obj: Any, *, events: list[tuple[float, Any]] | None = None) -> int:
    """The bytes ``obj`` holds, by ``sys.getsizeof`` over it and everything it contains: dicts, lists, tuples,
    sets, strings, and the run's own objects (events, predictions, LM calls, exceptions, the client's typed
    chunks), through their ``__slots__`` and ``__dict__``; each object counted once. Other objects (an LM or a
    user's object among the inputs) count alone, without what they refer to.

    ``events``: a recorded run's ``(time, event)`` list, which ``obj`` holds: its field chunks (nearly all of
    it, and each its own) are counted in one pass (the list, each pair, time, event and text), the rest as above.

    >>> size_of("x" * 1000) >= 1000, size_of(["x" * 1000] * 3) < 2 * size_of("x" * 1000)
    (True, True)
    """
    getsizeof = sys.getsizeof
    seen: set[int] = set()
    total = 0
    if events is not None:
        seen.add(id(events))
        total += getsizeof(events)
        others = []
        for pair in events:
            e = pair[1]
            if type(e).__name__ == "StreamResponse":
                total += getsizeof(pair) + getsizeof(pair[0]) + getsizeof(e) + getsizeof(e.chunk)
            else:
                others.append(pair)
        total += size_of(others) - getsizeof(others)
    return total + _walk(obj, seen)


def _walk(obj: Any, seen: set[int]) -> int:
    add = seen.add
    total = 0
    stack = [obj]
    getsizeof = sys.getsizeof
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        o = pop()
        i = id(o)
        if i in seen:
            continue
        add(i)
        total += getsizeof(o)
        t = type(o)
        if t in _ATOMS:
            continue
        if t is dict:
            extend(o.keys())
            extend(o.values())
        elif t in _CONTAINERS:
            extend(o)
        else:
            fields = _fields_of(t)
            if fields is None:
                continue
            d = getattr(o, "__dict__", None)
            if d is not None:
                push(d)
            for name in fields:
                v = getattr(o, name, None)
                if v is not None:
                    push(v)
            if isinstance(o, BaseException):
                push(o.args)
    return total


_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _fields_of(cls: type) -> tuple[str, ...] | None:
    """The slots :func:`size_of` follows in objects of ``cls`` (``()``: only its ``__dict__``), or None when it
    counts them alone: the run's own objects (events, predictions, records), exceptions and the client's typed
    chunks are followed; anything else (an LM, a user's object) is not."""
    try:
        return _FIELDS[cls]
    except KeyError:
        pass
    module = cls.__module__ or ""
    follows = (issubclass(cls, BaseException) or module.startswith("openai.types")
               or (module.startswith("jupyter_stream") and not hasattr(cls, "request_params")))
    fields: tuple[str, ...] | None = None
    if follows:
        names: list[str] = []
        for c in cls.__mro__:
            slots = getattr(c, "__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name not in ("__weakref__", "__dict__"):
                    names.append(name)
        fields = tuple(names)
    _FIELDS[cls] = fields
    return fields


def _human(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
