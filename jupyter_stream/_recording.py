"""Recordings: runs written to a JSON Lines file with their timing, read back, and played again.

``with js.record(path):`` records every run of the streams created inside the block (a stream created
inside and read later is recorded too: the recording is bound when the stream is created, like its
settings). Each run is written whole when it ends: its metadata, its LM calls (exact messages, raw
reply, every raw delta with its time), every event the consumer received with its time, and its end.
``js.replay(path, speed=1.0)`` streams a recorded run again, with its timing scaled, with no LM and no
network; ``js.load_recording(path)`` reads the runs (to diff them, or to serve their replies from the demo
server). The format, versioned, is described in ``docs/recording.md``. No API key is ever written.

Example::

    >>> import os, tempfile, jupyter_stream as js
    >>> from jupyter_stream.demo import DemoServer
    >>> server = DemoServer().start()
    >>> server.script("[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]")
    >>> js.configure(lm=js.LM("demo", base_url=server.url, api_key="demo", cache=False))
    >>> path = os.path.join(tempfile.mkdtemp(), "capital.jsonl")
    >>> with js.record(path):
    ...     _ = list(js.stream(js.Predict("question -> answer"), None, {"question": "Capital of France?"}))
    >>> js.configure(lm=None); server.stop()
    >>> replay = js.replay(path, speed=0)        # no LM, no server: the recorded events again
    >>> "".join(e.chunk for e in replay if isinstance(e, js.StreamResponse)), replay.prediction.answer
    ('Paris', 'Paris')
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
from json.encoder import encode_basestring
import threading
import time
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

from jiter import from_json  # an openai dependency: parses bytes, no str round trip
from pydantic_core import to_jsonable_python

from . import _runs
from ._exceptions import (
    AdapterParseError,
    LMError,
    RecordingError,
    StreamError,
    StreamTimeoutError,
    UsageError,
)
from ._prediction import Prediction, is_prediction
from .streaming.events import LMRequest, LMResponse, StatusMessage, StreamResponse
from .streaming.streamify import apply_sync_streaming

__all__ = ["FORMAT", "SCHEMA_VERSION", "RecordingFile", "Replay", "load", "record", "replay"]

FORMAT = "jupyter_stream.recording"
SCHEMA_VERSION = 1
"""The version of the recording schema this package writes and reads (``docs/recording.md``)."""


# ----------------------------------------------------------------------------------------------- writing
class RecordingFile:
    """The recording :func:`record` writes to (its ``with`` block's value): ``path``, and ``runs``, the number
    of runs written so far. Runs are appended whole as they end, under a lock (from any thread)."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        self.runs = 0
        self._lock = threading.Lock()
        self._token: contextvars.Token[Any] | None = None
        self._recording: Any = None
        try:
            if append and self.path.exists() and self.path.stat().st_size:
                self.runs = sum(1 for r in load(self.path, partial_ok=True))
                return
            self.path.write_text(_line({"type": "header", "format": FORMAT, "version": SCHEMA_VERSION,
                                        "created": time.time(), "jupyter_stream": _version()}), "utf-8")
        except OSError as e:
            raise RecordingError(f"cannot write the recording {str(path)!r}: {e.strerror or e}") from None

    def write(self, run: _runs.Run) -> None:
        """Append one ended run (the history's :class:`~jupyter_stream._runs.Recorder` duty)."""
        with self._lock:
            text = "".join(obj if type(obj) is str else _line(obj) for obj in _run_lines(run, self.runs))
            with self.path.open("a", encoding="utf-8") as f:
                f.write(text)
            self.runs += 1

    def __enter__(self) -> RecordingFile:
        self._recording = _runs.recording(self)
        self._recording.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._recording.__exit__(*exc)

    def __repr__(self) -> str:
        return f"<RecordingFile {str(self.path)!r}: {self.runs} run{'' if self.runs == 1 else 's'}>"


def record(path: str | os.PathLike[str], *, append: bool = False) -> RecordingFile:
    """Record every run of the streams created inside ``with js.record(path):`` to ``path`` (JSON Lines).

    The file is created (replaced) at once with its header; ``append=True`` adds to an existing recording.
    A stream created inside the block and read after it is recorded too. The format: ``docs/recording.md``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"js.record() takes a file path, got {type(path).__name__}")
    return RecordingFile(path, append=append)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jupyter_stream")
    except PackageNotFoundError:  # run from a source tree
        return "unknown"


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, default=_jsonable) + "\n"


def _jsonable(value: Any) -> Any:
    """A value JSON does not take, in a form it does (a model as a dict, an LM as its settings, else its repr)."""
    if is_prediction(value):
        return dict(value.items())
    if hasattr(value, "request_params"):  # an LM passed with the inputs: its settings, never its key
        return {"lm": {"model": getattr(value, "model", None), **_runs.scrub(value.request_params())}}
    try:  # models, dataclasses, sets, bytes... as pydantic writes them
        return to_jsonable_python(value, fallback=repr)
    except Exception:  # noqa: BLE001 - a model that cannot dump itself: its repr
        return repr(value)


def _run_lines(run: _runs.Run, index: int) -> Generator[dict[str, Any] | str, None, None]:
    yield {"type": "run", "run": index, "label": run.label, "kind": run.kind, "title": run.title,
           "started_at": run.started_at, "inputs": run.inputs, "settings": run.settings}
    for c in run.lm_calls:
        yield {"type": "lm_call", "run": index, "call": c.call_id, "predict": c.predict_name, "model": c.model,
               "params": c.params, "messages": c.messages, "started": c.started, "ttft": c.ttft,
               "duration": c.duration, "raw": c.raw, "reasoning": c.reasoning, "usage": c.usage, "cached": c.cached,
               "error": c.error, "deltas": c.deltas or [], "reasoning_deltas": c.reasoning_deltas or []}
    chunk_line = _chunk_line(index)
    for t, event in run.events or ():
        if type(event) is StreamResponse:
            yield chunk_line(t, event)  # the most frequent line, written without a dict
        else:
            yield {"type": "event", "run": index, "t": t, **_event_fields(event)}
    error = None
    if run.error is not None:
        e = run.error
        error = {"type": type(e).__name__, "message": str(e), "partial": getattr(e, "partial", None) or {},
                 "raw": getattr(e, "raw", "") or "", "predict_name": getattr(e, "predict_name", None)}
        if isinstance(e, StreamTimeoutError):
            error.update(limit=e.limit, seconds=e.seconds)
    yield {"type": "end", "run": index, "status": run.status, "duration": run.duration,
           "prediction": _prediction_fields(run.prediction), "error": error}


def _chunk_line(index: int) -> Any:
    """``chunk_line(t, event)``: a chunk event's line, as ``json.dumps`` of its dict would write it."""
    head = f'{{"type": "event", "run": {index}, "t": '
    esc = encode_basestring
    names: dict[str, str] = {}

    def chunk_line(t: float, e: StreamResponse) -> str:
        p = names.get(e.predict_name) or names.setdefault(e.predict_name, esc(e.predict_name))
        f = names.get(e.signature_field_name) or names.setdefault(e.signature_field_name, esc(e.signature_field_name))
        return (f'{head}{float(t)!r}, "kind": "chunk", "predict": {p}, "field": {f}, "chunk": {esc(e.chunk)}, '
                f'"last": {"true" if e.is_last_chunk else "false"}, "call": {int(e.call_id)}}}\n')

    return chunk_line


def _prediction_fields(p: Any) -> dict[str, Any] | None:
    if p is None or not is_prediction(p):
        return None
    usage = p.get_lm_usage() if callable(getattr(p, "get_lm_usage", None)) else None
    return {"fields": dict(p.items()), "usage": usage or {}}


def _event_fields(e: Any) -> dict[str, Any]:
    if type(e) is StreamResponse:
        return {"kind": "chunk", "predict": e.predict_name, "field": e.signature_field_name, "chunk": e.chunk,
                "last": e.is_last_chunk, "call": e.call_id}
    if type(e) is StatusMessage:
        return {"kind": "status", "message": e.message}
    if type(e) is LMRequest:
        return {"kind": "lm_request", "predict": e.predict_name, "model": e.model, "messages": e.messages,
                "call": e.call_id}
    if type(e) is LMResponse:
        return {"kind": "lm_response", "predict": e.predict_name, "model": e.model, "raw": e.raw,
                "reasoning": e.reasoning, "usage": e.usage, "ttft": e.ttft, "duration": e.duration,
                "cached": e.cached, "call": e.call_id}
    if is_prediction(e):
        return {"kind": "prediction", **(_prediction_fields(e) or {})}
    if type(e).__name__ == "ChatCompletionChunk":  # streamify without listeners passes the raw chunks
        return {"kind": "raw_chunk", "data": e.model_dump(mode="json", exclude_unset=True)}
    return {"kind": "other", "class": type(e).__name__, "repr": repr(e)}


# ----------------------------------------------------------------------------------------------- reading
class _Reader:
    """Reads one recording, naming the line of any problem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n = 0

    def fail(self, what: str) -> RecordingError:
        return RecordingError(f"{str(self.path)!r}, line {self.n}: {what}")

    def need(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in obj:
            if optional:
                return None
            raise self.fail(f"a {obj.get('type')!r} line without {key!r}")
        value = obj[key]
        if optional and value is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            names = " or ".join(k.__name__ for k in _tuple(kind))
            raise self.fail(f"{key!r} of a {obj.get('type')!r} line should be {names}, not {type(value).__name__}")
        return value

    def runs(self, *, partial_ok: bool) -> list[_runs.Run]:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            raise RecordingError(f"no recording at {str(self.path)!r}: the file does not exist "
                                 f"(make one with `with js.record({str(self.path)!r}):`)") from None
        except OSError as e:
            raise RecordingError(f"cannot read the recording {str(self.path)!r}: {e.strerror or e}") from None
        out: list[_runs.Run] = []
        open_run: _runs.Run | None = None
        opened_at = 0
        calls: dict[int, _runs.LMCall] = {}
        with f:
            for text in f:
                self.n += 1
                try:
                    obj = from_json(text)
                except ValueError:
                    obj = self.slow_json(text)
                if not isinstance(obj, dict):
                    raise self.fail(f"a JSON {type(obj).__name__}, not an object")
                if self.n == 1:
                    self.header(obj)
                    continue
                kind = obj.get("type")
                if kind == "run":
                    if open_run is not None:
                        raise self.fail(f"a new run begins, but the run of line {opened_at} has no 'end' line")
                    open_run, opened_at, calls = self.run(obj), self.n, {}
                    continue
                if kind not in ("lm_call", "event", "end"):
                    raise self.fail(f"unknown line type {kind!r} (expected 'run', 'lm_call', 'event' or 'end')")
                if open_run is None:
                    raise self.fail(f"a {kind!r} line outside a run (no 'run' line before it)")
                if kind == "lm_call":
                    c = self.lm_call(obj)
                    calls[c.call_id] = c
                    open_run.lm_calls.append(c)
                elif kind == "event":
                    t, event = self.chunk(obj) if obj.get("kind") == "chunk" else (None, None)
                    if event is None:  # another kind, or a chunk line with a problem to name
                        event, t = self.event(obj), self.need(obj, "t", (int, float))
                    if event is not None:
                        open_run.events.append((t, event))  # type: ignore[union-attr]
                else:
                    self.end(obj, open_run)
                    out.append(open_run)
                    open_run = None
        if self.n == 0:
            raise RecordingError(f"{str(self.path)!r} is empty: not a recording (its first line is the header)")
        if open_run is not None and not partial_ok:
            raise RecordingError(
                f"{str(self.path)!r}: the file ends inside the run of line {opened_at} (it has no 'end' line): "
                "the file is truncated (was the process writing it stopped?)"
            )
        return out

    def slow_json(self, text: bytes) -> Any:
        """A line the fast parser refused, parsed again to say what is wrong with it."""
        try:
            return json.loads(text.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise self.fail(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        except ValueError as e:
            if not text.endswith(b"\n"):
                raise self.fail("the line is cut short: the file is truncated "
                                "(was the process writing it stopped?)") from None
            raise self.fail(f"not JSON ({getattr(e, 'msg', e)}); a recording holds one JSON object a line") from None

    def chunk(self, obj: dict[str, Any]) -> tuple[Any, StreamResponse | None]:
        """A ``chunk`` event line, the most frequent, checked in one pass; ``(None, None)`` if anything is off."""
        try:
            t, e = obj["t"], StreamResponse(obj["predict"], obj["field"], obj["chunk"], obj["last"], obj["call"])
        except KeyError:
            return None, None
        if (type(t) not in _NUMBERS or type(e.chunk) is not str or type(e.predict_name) is not str
                or type(e.signature_field_name) is not str or type(e.is_last_chunk) is not bool
                or type(e.call_id) is not int):
            return None, None
        return t, e

    def header(self, obj: dict[str, Any]) -> None:
        if obj.get("type") != "header" or obj.get("format") != FORMAT:
            raise self.fail(f"not a jupyter_stream recording: the first line must be the header "
                            f'{{"type": "header", "format": "{FORMAT}", "version": {SCHEMA_VERSION}, ...}}')
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise self.fail(f"the header's version should be an int, not {version!r}")
        if version > SCHEMA_VERSION:
            raise self.fail(f"recording schema version {version} is newer than this jupyter_stream reads "
                            f"(up to {SCHEMA_VERSION}): upgrade jupyter_stream (pip install -U jupyter_stream)")

    def run(self, obj: dict[str, Any]) -> _runs.Run:
        index = self.need(obj, "run", int)
        return _runs.Run(
            label=f"{self.path.name}[{index}]", kind=self.need(obj, "kind", str), title=self.need(obj, "title", str),
            inputs=self.need(obj, "inputs", dict), settings=self.need(obj, "settings", dict),
            started_at=self.need(obj, "started_at", (int, float)), events=[],
        )

    def lm_call(self, obj: dict[str, Any]) -> _runs.LMCall:
        return _runs.LMCall(
            call_id=self.need(obj, "call", int), predict_name=self.need(obj, "predict", str),
            model=self.need(obj, "model", str), messages=self.need(obj, "messages", list),
            params=self.need(obj, "params", dict), started=self.need(obj, "started", (int, float)),
            ttft=self.need(obj, "ttft", (int, float), optional=True), duration=self.need(obj, "duration", (int, float)),
            raw=self.need(obj, "raw", str), reasoning=self.need(obj, "reasoning", str),
            usage=self.need(obj, "usage", dict), cached=self.need(obj, "cached", bool),
            error=self.need(obj, "error", str, optional=True),
            deltas=self.deltas(obj, "deltas"), reasoning_deltas=self.deltas(obj, "reasoning_deltas"),
        )

    def deltas(self, obj: dict[str, Any], key: str) -> list[tuple[float, str]]:
        raw = self.need(obj, key, list)
        try:
            pairs = [(t, text) for t, text in raw]
        except (TypeError, ValueError):
            pairs = None
        if pairs is not None and all(type(t) in _NUMBERS and type(text) is str for t, text in pairs):
            return pairs
        out = []  # name the first bad one
        for d in raw:
            if not (isinstance(d, list) and len(d) == 2 and isinstance(d[0], (int, float)) and isinstance(d[1], str)):
                raise self.fail(f"each of {key!r} should be [seconds, text], got {d!r:.60}")
            out.append((d[0], d[1]))
        return out

    def event(self, obj: dict[str, Any]) -> Any:
        kind = self.need(obj, "kind", str)
        if kind == "chunk":
            return StreamResponse(self.need(obj, "predict", str), self.need(obj, "field", str),
                                  self.need(obj, "chunk", str), self.need(obj, "last", bool), self.need(obj, "call", int))
        if kind == "status":
            return StatusMessage(self.need(obj, "message", str))
        if kind == "lm_request":
            return LMRequest(self.need(obj, "predict", str), self.need(obj, "model", str),
                             self.need(obj, "messages", list), self.need(obj, "call", int))
        if kind == "lm_response":
            return LMResponse(
                self.need(obj, "predict", str), self.need(obj, "model", str), self.need(obj, "raw", str),
                self.need(obj, "reasoning", str), self.need(obj, "usage", dict),
                self.need(obj, "ttft", (int, float), optional=True), self.need(obj, "duration", (int, float)),
                self.need(obj, "cached", bool), self.need(obj, "call", int),
            )
        if kind == "prediction":
            return self.prediction(obj)
        if kind == "raw_chunk":
            from openai.types.chat import ChatCompletionChunk

            return ChatCompletionChunk.model_validate(self.need(obj, "data", dict))
        if kind == "other":
            return None
        raise self.fail(f"unknown event kind {kind!r}")

    def prediction(self, obj: dict[str, Any]) -> Prediction:
        return Prediction.from_dict(self.need(obj, "fields", dict), usage=self.need(obj, "usage", dict, optional=True))

    def end(self, obj: dict[str, Any], run: _runs.Run) -> None:
        status = self.need(obj, "status", str)
        if status not in ("ok", "error", "stopped"):
            raise self.fail(f"status {status!r} should be 'ok', 'error' or 'stopped'")
        run.status, run.duration = status, self.need(obj, "duration", (int, float))
        p = self.need(obj, "prediction", dict, optional=True)
        run.prediction = self.prediction({"type": "end", **p}) if p is not None else None
        e = self.need(obj, "error", dict, optional=True)
        run.error = _error(e) if e is not None else None


_NUMBERS = frozenset({int, float})


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _error(d: dict[str, Any]) -> StreamError:
    """A recorded error as a :class:`StreamError` kind again (other exceptions as a ``StreamError``)."""
    name, message = str(d.get("type", "Error")), str(d.get("message", ""))
    kw = {"partial": d.get("partial") or {}, "raw": d.get("raw") or "", "predict_name": d.get("predict_name")}
    if name == "StreamTimeoutError":
        return StreamTimeoutError(message, limit=str(d.get("limit") or "timeout"), seconds=d.get("seconds"), **kw)
    kinds: dict[str, type[StreamError]] = {"StreamError": StreamError, "LMError": LMError,
                                           "AdapterParseError": AdapterParseError}
    if name in kinds:
        return kinds[name](message, **kw)
    return StreamError(f"{name}: {message}", **kw)


def load(path: str | os.PathLike[str], *, partial_ok: bool = False) -> list[_runs.Run]:
    """The runs of a recording, in the order they ended, each with its LM calls, deltas and events.

    Raises :class:`~jupyter_stream.RecordingError` naming the file, the line and what is wrong (a missing
    file, a malformed or truncated line, a newer schema version). ``partial_ok``: a last run without its
    end is left out instead.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"a recording is a file path, got {type(path).__name__}")
    return _Reader(Path(path)).runs(partial_ok=partial_ok)


# ------------------------------------------------------------------------------------------------ replay
class Replay:
    """A recorded run streamed again (made by :func:`replay`): iterate it with ``for`` or ``async for``, as
    a :class:`~jupyter_stream.Stream`, or feed a sink from it (``pour``); ``js.show(replay)`` displays it.

    The events come at their recorded times divided by ``speed`` (0: all at once); a run that failed
    raises its error again at the end (a ``StreamError`` kind with its partial text). Nothing calls an LM.
    It can be played any number of times.
    """

    def __init__(self, run: _runs.Run, *, speed: float = 1.0) -> None:
        if run.events is None:
            raise UsageError(f"run {run.label} kept no events (runs keep them inside `with js.record(path):`, or "
                             "all of them after js.runs.limit(events=True)): record it, then replay the file")
        self.run = run
        self.speed = speed
        self.title = run.title
        self.model = run.model
        self.prediction = run.prediction

    def __repr__(self) -> str:
        return f"<Replay of {self.run.label}: {self.title}, {len(self.run.events or ())} events, speed {self.speed:g}>"

    async def _events(self) -> AsyncIterator[Any]:
        events = self.run.events or []
        speed = self.speed
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        for t, event in events:
            if speed:
                delay = start + t / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                n += 1
                if not n & 1023:
                    await asyncio.sleep(0)  # at once, but the loop stays responsive (a Stop button)
            yield event
        if self.run.status == "error" and self.run.error is not None:
            raise _copy_error(self.run.error)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    def __iter__(self) -> Generator[Any, None, None]:
        return apply_sync_streaming(self._events())


def _copy_error(e: BaseException) -> BaseException:
    """A fresh exception like ``e`` (one instance raised again and again would pile up its tracebacks)."""
    if isinstance(e, StreamError):
        d = {"type": type(e).__name__, "message": str(e), "partial": e.partial, "raw": e.raw,
             "predict_name": e.predict_name}
        if isinstance(e, StreamTimeoutError):
            d.update(limit=e.limit, seconds=e.seconds)
        return _error(d)
    return StreamError(f"{type(e).__name__}: {e}")


def replay(source: Any, *, speed: float = 1.0, run: int = 0) -> Replay:
    """Stream a recorded run again: ``source`` is a recording's path (``run``: which of its runs, 0 the
    first, -1 the last) or a recorded :class:`~jupyter_stream._runs.Run`. ``speed``: 1.0 the recorded
    pace, 2.0 twice as fast, 0 at once. No LM, no network."""
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed < 0 or speed != speed:
        raise UsageError(f"replay(speed=...) takes a number >= 0 (1.0: as recorded, 0: at once), got {speed!r}")
    if isinstance(source, _runs.Run):
        return Replay(source, speed=speed)
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"replay() takes a recording's path or a recorded run, got {type(source).__name__}")
    runs = load(source)
    if not runs:
        raise RecordingError(f"{str(source)!r} holds no run (was anything streamed inside `with js.record(...)`?)")
    if not isinstance(run, int) or not -len(runs) <= run < len(runs):
        raise UsageError(f"replay(run={run!r}): {str(source)!r} holds {len(runs)} run{'' if len(runs) == 1 else 's'} "
                         f"(run=0 to run={len(runs) - 1}, or -1 for the last)")
    return Replay(runs[run], speed=speed)
