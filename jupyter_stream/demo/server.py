"""An OpenAI-compatible demo LM server on loopback: real HTTP, real SSE, scripted or automatic replies.

:class:`DemoServer` speaks enough of the OpenAI HTTP API for the real ``openai`` client to use it, so the
demo notebook and the tests exercise exactly the path a hosted model takes:

* ``POST /v1/chat/completions`` with ``"stream": true`` answers ``text/event-stream`` (HTTP/1.1 chunked,
  keep-alive) of ``data: {chunk}\\n\\n`` lines ending with ``data: [DONE]\\n\\n``; without ``stream`` it
  answers one ``chat.completion`` JSON object;
* ``GET /v1/models`` lists the model ``demo``.

Replies come from a FIFO script (:meth:`DemoServer.script`: plain strings, :class:`Reply` objects,
recorded chunk lists, or :class:`Fault` misbehaviours; ``model=`` queues them for the requests of one model
name only, so concurrent requests to several models each get their own) and, when the script is empty, from
the automatic responder (:func:`jupyter_stream.demo.responder.auto_reply`), which fills in any signature's outputs.

The HTTP layer is tornado's (request parsing, chunked encoding, keep-alive); this module adds the routes,
the pacing and the faults. The server runs its own asyncio event loop in a daemon thread, so it works
from synchronous code, from pytest-asyncio tests and from a Jupyter kernel alike. It is fast: chunks are
built from pre-built byte templates and written many at a time (one write, one HTTP chunk), so 50,000
deltas take a few tens of milliseconds of server time when no token rate is set.

Example::

    >>> from openai import OpenAI
    >>> from jupyter_stream.demo import DemoServer, Reply, Fault
    >>> with DemoServer() as server:
    ...     server.script("Hello there!", Reply(content="Done.", reasoning="Think first."))
    ...     client = OpenAI(base_url=server.url, api_key="demo")
    ...     stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
    ...                                             stream=True)
    ...     "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    'Hello there!'
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.httputil import responses
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from .responder import auto_reply, chunk_text, count_tokens, message_text, tokenize

__all__ = [
    "DEFAULT_TOKEN_RATE",
    "DemoServer",
    "Fault",
    "Reply",
    "default_token_rate",
    "serve_forever",
    "shared_server",
]

DEFAULT_TOKEN_RATE = 150.0
"""Tokens per second of the interactive demo when ``JUPYTER_STREAM_DEMO_RATE`` is not set."""

_FAULT_KINDS = ("drop", "stall", "status", "malformed", "error_event", "refuse")
_MODEL = "demo"
_FLUSH_BYTES = 256 * 1024  # one write (and HTTP chunk) carries about this much


def default_token_rate() -> float | None:
    """The demo's token rate: ``$JUPYTER_STREAM_DEMO_RATE`` tokens/s, else 150; ``0`` means as fast as possible.

        >>> import os
        >>> os.environ["JUPYTER_STREAM_DEMO_RATE"] = "40"
        >>> default_token_rate()
        40.0
        >>> del os.environ["JUPYTER_STREAM_DEMO_RATE"]
    """
    raw = os.environ.get("JUPYTER_STREAM_DEMO_RATE", "").strip()
    if not raw:
        return DEFAULT_TOKEN_RATE
    try:
        rate = float(raw)
    except ValueError:
        return DEFAULT_TOKEN_RATE
    return rate if rate > 0 else None


# --------------------------------------------------------------------------------------------------
# What can be scripted
# --------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A scripted misbehaviour, for reliability tests. ``kind`` is one of:

    * ``"drop"``: close the connection after ``after`` deltas, without ``[DONE]`` or the end of the body;
    * ``"stall"``: send ``after`` deltas, then nothing, keeping the socket open until the client leaves
      (counted in :attr:`DemoServer.stream_closed_early`) or the server stops;
    * ``"status"``: answer HTTP ``status`` (default 500) with an OpenAI-style JSON error (``body``: a dict
      sent as JSON, a str sent as is, or None for OpenAI's wording) for the next ``times`` chat requests,
      then fall through to the next script item; ``retry_after`` seconds go out as ``retry-after-ms``
      (None: no header, so the openai client uses its own back-off of about a second);
    * ``"malformed"``: after ``after`` deltas send a ``data:`` line that is not valid JSON, then go on;
    * ``"error_event"``: after ``after`` deltas send ``data: {"error": {"message": message, "type":
      "server_error"}}`` and then ``data: [DONE]``;
    * ``"refuse"``: read the request and close the connection without answering (``times`` requests).

    Deltas are counted over reasoning and content deltas alike (for a recorded chunk list: chunks).
    A fault on its own streams the automatic responder's reply; wrap it in a :class:`Reply` to choose the
    text. Without streaming, ``drop`` sends half the JSON body, ``malformed`` an invalid body and
    ``error_event`` a 500 error.

        >>> server.script(Fault("status", status=429, times=2), "then this")   # doctest: +SKIP
        >>> server.script(Reply(content="cut short", fault=Fault("drop", after=2)))  # doctest: +SKIP
    """

    kind: str
    after: int = 0
    status: int = 500
    times: int = 1
    body: Any = None
    message: str = "The server had an error while processing your request. Sorry about that!"
    retry_after: float | None = 0.01

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(_FAULT_KINDS)}")
        if self.after < 0 or self.times < 1:
            raise ValueError("Fault needs after >= 0 and times >= 1")


@dataclass
class Reply:
    """One scripted reply with control over how it streams.

    ``content`` is the reply text, cut into deltas by the tokenizer, or by ``chunk_chars`` (Gemini-style
    pieces of about that many characters), or given exactly as ``chunks`` (a list of str deltas; a list of
    dicts is sent verbatim as recorded chunks). ``reasoning`` streams first as ``delta.reasoning_content``.
    ``token_rate`` (tokens/s; ``0`` = as fast as possible) overrides the server's rate for this reply,
    ``usage`` overrides numbers of the usage chunk, and ``fault`` makes the reply misbehave.

        >>> Reply(content="Paris", reasoning="The capital of France.", chunks=["Pa", "ris"])  # doctest: +ELLIPSIS
        Reply(content='Paris', reasoning='The capital of France.', chunks=['Pa', 'ris'], ...)
    """

    content: str = ""
    reasoning: str = ""
    chunks: Sequence[Any] | None = None
    token_rate: float | None = None
    chunk_chars: int | None = None
    usage: Mapping[str, int] | None = None
    fault: Fault | None = None


# --------------------------------------------------------------------------------------------------
# Building the bytes of one response
# --------------------------------------------------------------------------------------------------


def _enc(text: str) -> bytes:
    """A JSON string literal as UTF-8 bytes (raw non-ASCII like OpenAI; ASCII escapes for lone surrogates)."""
    try:
        return encode_basestring(text).encode("utf-8")
    except UnicodeEncodeError:
        return encode_basestring_ascii(text).encode("ascii")


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


_DONE = b"data: [DONE]\n\n"


@dataclass
class _PreparedAnswer:
    """Everything needed to answer one chat request, streamed or not."""

    events: list[bytes] = field(default_factory=list)  # complete SSE events, ending with [DONE]
    timed_start: int = 0  # events[timed_start:timed_stop] are paced by the token rate
    timed_stop: int = 0
    fault: Fault | None = None
    fault_pos: int = 0  # index in events where the fault strikes
    rate: float | None = None
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = "stop"
    usage: dict[str, int] | None = None
    completion_id: str = ""
    created: int = 0
    model: str = _MODEL


def _message_usage(body: Mapping[str, Any], content: str, reasoning: str,
                   override: Mapping[str, int] | None) -> dict[str, int]:
    messages = body.get("messages") or []
    prompt = sum(count_tokens(message_text(m)) + 4 for m in messages if isinstance(m, Mapping))
    completion = count_tokens(content) + count_tokens(reasoning)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if override:
        usage.update({k: int(v) for k, v in override.items()})
        if "total_tokens" not in override:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def _include_usage(body: Mapping[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, Mapping) and bool(opts.get("include_usage"))


def _prepare_reply(reply: Reply, body: Mapping[str, Any], *, cid: str, created: int, model: str,
                rate: float | None, chunk_chars: int | None) -> _PreparedAnswer:
    if reply.chunks is not None and any(isinstance(c, Mapping) for c in reply.chunks):
        prepared = _prepare_raw(list(reply.chunks), body, cid=cid, created=created, model=model, rate=rate)
        prepared.fault = reply.fault
        prepared.fault_pos = min(reply.fault.after, len(prepared.events) - 1) if reply.fault else 0
        return prepared

    content = reply.content if reply.chunks is None else "".join(str(c) for c in reply.chunks)
    cc = reply.chunk_chars if reply.chunk_chars is not None else chunk_chars
    if reply.chunks is not None:
        deltas = [str(c) for c in reply.chunks]
    elif cc:
        deltas = chunk_text(content, cc)
    else:
        deltas = tokenize(content)
    rdeltas = (chunk_text(reply.reasoning, cc) if cc else tokenize(reply.reasoning)) if reply.reasoning else []

    inc = _include_usage(body)
    head = (
        b'data: {"id":' + _enc(cid) + b',"object":"chat.completion.chunk","created":' + str(created).encode()
        + b',"model":' + _enc(model) + b',"system_fingerprint":"fp_demo","choices":[{"index":0,"delta":'
    )
    tail_usage = b',"usage":null' if inc else b""
    suffix = b'},"logprobs":null,"finish_reason":null}]' + tail_usage + b"}\n\n"
    cprefix = head + b'{"content":'
    rprefix = head + b'{"reasoning_content":'

    events: list[bytes] = [head + b'{"role":"assistant","content":""' + suffix]
    events += [rprefix + _enc(t) + suffix for t in rdeltas]
    events += [cprefix + _enc(t) + suffix for t in deltas]
    timed_stop = len(events)
    events.append(head + b'{},"logprobs":null,"finish_reason":"stop"}]' + tail_usage + b"}\n\n")
    usage = _message_usage(body, content, reply.reasoning, reply.usage)
    if inc:
        events.append(
            b'data: {"id":' + _enc(cid) + b',"object":"chat.completion.chunk","created":' + str(created).encode()
            + b',"model":' + _enc(model) + b',"system_fingerprint":"fp_demo","choices":[],"usage":'
            + _dumps(usage) + b"}\n\n"
        )
    events.append(_DONE)
    fault = reply.fault
    return _PreparedAnswer(
        events=events, timed_start=1, timed_stop=timed_stop, fault=fault,
        fault_pos=min(1 + fault.after, timed_stop) if fault else 0,
        rate=rate, content=content, reasoning=reply.reasoning, usage=usage,
        completion_id=cid, created=created, model=model,
    )


def _prepare_raw(chunks: list[Any], body: Mapping[str, Any], *, cid: str, created: int, model: str,
              rate: float | None) -> _PreparedAnswer:
    """A recorded chunk list, sent verbatim (dicts as compact JSON, str items as the raw data payload)."""
    events = [b"data: " + (c.encode("utf-8") if isinstance(c, str) else _dumps(c)) + b"\n\n" for c in chunks]
    content: list[str] = []
    reasoning: list[str] = []
    finish: str | None = None
    usage = None
    for c in chunks:
        if not isinstance(c, Mapping):
            continue
        if isinstance(c.get("usage"), Mapping):
            usage = dict(c["usage"])
        for choice in c.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            r = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(r, str):
                reasoning.append(r)
            finish = choice.get("finish_reason") or finish
    if usage is None:
        usage = _message_usage(body, "".join(content), "".join(reasoning), None)
    if not (events and events[-1] == _DONE):
        events.append(_DONE)
    return _PreparedAnswer(
        events=events, timed_start=1, timed_stop=max(1, len(events) - 1), rate=rate,
        content="".join(content), reasoning="".join(reasoning), finish_reason=finish or "stop", usage=usage,
        completion_id=str(next((c.get("id") for c in chunks if isinstance(c, Mapping) and c.get("id")), cid)),
        created=created, model=model,
    )


def _reply_from_json(item: Any) -> Any:
    """A script item from its JSON form (see ``POST /v1/demo/script``)."""
    if isinstance(item, (str, list)):
        return item
    if isinstance(item, Mapping):
        if "kind" in item:
            return Fault(**item)
        kw = dict(item)
        if isinstance(kw.get("fault"), Mapping):
            kw["fault"] = Fault(**kw["fault"])
        return Reply(**kw)
    raise TypeError(f"cannot script {item!r}")


def _completion_body(prepared: _PreparedAnswer) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": prepared.content, "refusal": None}
    if prepared.reasoning:
        message["reasoning_content"] = prepared.reasoning
    return _dumps({
        "id": prepared.completion_id, "object": "chat.completion", "created": prepared.created, "model": prepared.model,
        "system_fingerprint": "fp_demo",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": prepared.finish_reason}],
        "usage": prepared.usage,
    })


def _error_body(status: int, body: Any = None, message: str | None = None) -> bytes:
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Mapping):
        return _dumps(body)
    if status == 429:
        err = {"message": message or "Rate limit reached for demo in organization org-demo on requests per min "
               "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20ms.",
               "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    elif status >= 500:
        err = {"message": message or "The server had an error while processing your request. Sorry about that!",
               "type": "server_error", "param": None, "code": None}
    else:
        err = {"message": message or responses.get(status, "Unknown"), "type": "invalid_request_error",
               "param": None, "code": None}
    return _dumps({"error": err})


def _faulted_events(prepared: _PreparedAnswer) -> tuple[list[bytes], int, int]:
    """The SSE events a streamed answer sends with its fault applied.

    Returns ``(events, stop_at, timed_stop)``: send ``events[:stop_at]`` (``drop`` and ``stall`` stop at
    the fault and then misbehave), pacing ``events[prepared.timed_start:timed_stop]``.
    """
    events, fault, pos = prepared.events, prepared.fault, prepared.fault_pos
    if fault is None:
        return events, len(events), prepared.timed_stop
    if fault.kind == "malformed":
        bad = (b'data: {"id":"' + prepared.completion_id.encode()
               + b'","choices":[{"index":0,"delta":{"content":"oo\n\n')  # cut short: not JSON
        events = events[:pos] + [bad] + events[pos:]
        return events, len(events), prepared.timed_stop + (prepared.timed_stop > pos)
    if fault.kind == "error_event":
        err = _dumps({"error": {"message": fault.message, "type": "server_error", "param": None, "code": None}})
        events = events[:pos] + [b"data: " + err + b"\n\n", _DONE]
        return events, len(events), prepared.timed_stop
    return events, pos, prepared.timed_stop  # drop / stall


# --------------------------------------------------------------------------------------------------
# HTTP, on tornado
# --------------------------------------------------------------------------------------------------


@dataclass
class _Request:
    """A request as :meth:`DemoServer._control` sees it (a subclass adds control endpoints there)."""

    method: str
    path: str  # without the ``/v1`` prefix, e.g. ``"/demo/stats"``
    body: bytes
    keep_alive: bool = True  # for ``_send_json(..., keep_alive=)``; tornado honours the client's Connection header


class _Handler(RequestHandler):
    """What every route shares: JSON by default, OpenAI-style JSON errors, no ETag."""

    @property
    def demo(self) -> DemoServer:
        return self.application.settings["demo"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def compute_etag(self) -> None:
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(_error_body(status_code))

    def send_json(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer ``status`` with the JSON ``body`` (tornado adds Content-Length and keeps the connection)."""
        self.set_status(status)
        for name, value in headers:
            self.set_header(name, value)
        self.finish(body)


class _NotFound(_Handler):
    """Any path without a route: 404 with an OpenAI-style error."""

    def prepare(self) -> None:
        req = self.request
        self.send_json(404, _error_body(404, message=f"no route for {req.method} {req.path}"))


class _HealthHandler(_Handler):
    """``GET /``, ``/health``, ``/v1``: ``{"status":"ok"}``."""

    def get(self) -> None:
        self.finish(b'{"status":"ok"}')

    head = get


class _ModelsHandler(_Handler):
    """``GET /v1/models`` lists the model ``demo``; ``GET /v1/models/{id}`` describes any id."""

    def get(self, model: str | None = None) -> None:
        card = {"id": model or _MODEL, "object": "model", "created": int(time.time()), "owned_by": "jupyter_stream"}
        self.finish(_dumps(card if model else {"object": "list", "data": [card]}))


class _ControlHandler(_Handler):
    """``/v1/demo/...``: scripting and statistics for another process, see :meth:`DemoServer._control`."""

    async def get(self, path: str) -> None:
        await self.demo._control(self, _Request(self.request.method or "GET", path, self.request.body), path)

    post = get


class _ChatHandler(_Handler):
    """``POST /v1/chat/completions``: the next script item (or the automatic reply), streamed as SSE or whole.

    Faults are played here: ``refuse`` and ``drop`` hang up (:meth:`_hang_up`), ``stall`` waits for the
    client to leave. tornado tells :meth:`on_connection_close` when the client goes away while the answer
    is produced; a write to a closed connection shows it too.
    """

    def initialize(self) -> None:
        self._left = asyncio.Event()  # the client closed the connection

    def prepare(self) -> None:
        self.demo._track(asyncio.current_task())
        if self.request.connection.stream.closed():  # type: ignore[union-attr]  # gone before tornado listened
            self._left.set()

    def on_connection_close(self) -> None:
        self._left.set()

    def _hang_up(self) -> None:
        """Close the connection at once: no (more) response bytes, no chunked terminator."""
        self.request.connection.close()  # type: ignore[union-attr]

    def _still_there(self) -> bool:
        return not self._left.is_set() and not self.request.connection.stream.closed()  # type: ignore[union-attr]

    async def post(self) -> None:
        demo = self.demo
        try:
            body = json.loads(self.request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            return self.send_json(400, _error_body(400, message=f"invalid JSON body: {e}"))
        demo.requests.append(body)
        item = demo._next_script_item(str(body.get("model") or _MODEL))
        if isinstance(item, Fault) and item.kind == "refuse":
            return self._hang_up()
        if isinstance(item, Fault) and item.kind == "status":
            headers = [] if item.retry_after is None else [
                ("retry-after-ms", str(max(0, int(round(item.retry_after * 1000)))))]
            return self.send_json(item.status, _error_body(item.status, item.body), headers)
        prepared = demo._prepare(item, body)
        if body.get("stream"):
            await self._stream(prepared)
        else:
            await self._answer_whole(prepared)

    async def _answer_whole(self, prepared: _PreparedAnswer) -> None:
        """A ``chat.completion`` JSON answer; faults: stall, half a body (drop), invalid JSON, a 500."""
        fault = prepared.fault
        if fault is None:
            return self.send_json(200, _completion_body(prepared))
        if fault.kind == "stall":
            await self._left.wait()
            return self._hang_up()
        if fault.kind == "drop":
            body = _completion_body(prepared)
            self.set_header("Content-Length", str(len(body)))
            await self._send(body[: len(body) // 2])
            return self._hang_up()
        if fault.kind == "malformed":
            return self.send_json(200, _completion_body(prepared)[:-7] + b',"oops')
        err = _dumps({"error": {"message": fault.message, "type": "server_error", "param": None, "code": None}})
        return self.send_json(500, err)  # error_event

    async def _stream(self, prepared: _PreparedAnswer) -> None:
        """The SSE answer (HTTP/1.1 chunked), counted in flight until it ends or its connection is closed."""
        demo = self.demo
        events, stop_at, timed_stop = _faulted_events(prepared)
        kind = prepared.fault.kind if prepared.fault is not None else None
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("x-request-id", prepared.completion_id)
        demo._stream_started()
        here = await self._pump(events, stop_at, prepared.rate, prepared.timed_start, timed_stop)
        if here and kind == "stall":
            await self._left.wait()
            here = False
        if here and kind != "drop":
            try:
                await self.finish()  # the chunked terminator; the connection stays open for the next request
                demo._stream_finished()
                return
            except StreamClosedError:
                here = False
        if not here and not demo._stopping:
            demo.stream_closed_early += 1
        stream = self.request.connection.stream  # type: ignore[union-attr]
        self._hang_up()  # drop: without the terminator; early: the client has gone already
        demo._after_close(stream, demo._stream_finished)  # so that after wait_idle() the counters are final

    async def _pump(self, events: list[bytes], stop_at: int, rate: float | None, timed_start: int,
                    timed_stop: int) -> bool:
        """Send ``events[:stop_at]``, many per HTTP chunk; False if the client left.

        Without a rate, as fast as the client reads. With one, event ``k`` of the paced range is due
        ``k / rate`` seconds after the first; events already due go out together.
        """
        if not rate:
            step = _batch_len(events)
            for i in range(0, stop_at, step):
                if not await self._send(b"".join(events[i:min(i + step, stop_at)])):
                    return False
            return True
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        batch: list[bytes] = []
        size = 0
        for i in range(stop_at):
            if timed_start <= i < timed_stop:
                delay = t0 + (i - timed_start) * interval - loop.time()
                if delay > 0:
                    if not (await self._send(b"".join(batch)) and await self._pause(delay)):
                        return False
                    batch, size = [], 0
            batch.append(events[i])
            size += len(events[i])
            if size >= _FLUSH_BYTES:
                if not await self._send(b"".join(batch)):
                    return False
                batch, size = [], 0
        return await self._send(b"".join(batch))

    async def _send(self, data: bytes) -> bool:
        """Write ``data`` as one HTTP chunk and wait until the socket took it; False if the client left."""
        if data:
            self.write(data)
            try:
                await self.flush()
            except StreamClosedError:
                return False
        return self._still_there()

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False if the client left meanwhile."""
        try:
            await asyncio.wait_for(self._left.wait(), delay)
        except asyncio.TimeoutError:
            return self._still_there()
        return False


def _batch_len(events: Sequence[bytes]) -> int:
    """How many events make about ``_FLUSH_BYTES`` (one write, one HTTP chunk), judged by a sample."""
    sample = events[1:65] or events
    return max(1, _FLUSH_BYTES * len(sample) // max(1, sum(map(len, sample))))


class _HTTPServer(HTTPServer):
    """tornado's HTTP/1.1 server, telling the :class:`DemoServer` when a connection opens and closes."""

    def initialize(self, demo: DemoServer, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.demo = demo
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        self.demo._connection_opened(stream)
        super().handle_stream(stream, address)

    def on_close(self, server_conn: Any) -> None:  # the connection's request loop ended: it is closed
        super().on_close(server_conn)
        self.demo._connection_closed(server_conn.stream)


def _application(demo: DemoServer) -> Application:
    """The routes, with or without the ``/v1`` prefix (and a trailing slash)."""
    v1 = r"(?:/v1)?"
    return Application(
        [
            (v1 + r"/chat/completions/?", _ChatHandler),
            (v1 + r"/models/?", _ModelsHandler),
            (v1 + r"/models/(.+?)/?", _ModelsHandler),
            (v1 + r"(/demo/.*?)/?", _ControlHandler),
            (r"/(?:health|v1)?/?", _HealthHandler),
        ],
        default_handler_class=_NotFound, demo=demo,
        log_function=lambda handler: None,  # no access log: a scripted 429 must not print into the notebook
    )


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class DemoServer:
    """A loopback OpenAI-compatible chat server for demos and tests, running in a background thread.

    ``token_rate`` paces streamed deltas in tokens per second (None or 0: as fast as possible);
    ``chunk_chars`` makes every reply stream in Gemini-style pieces of about that many characters.

    Example::

        >>> import openai
        >>> server = DemoServer().start()
        >>> server.script("Paris is the capital.")
        >>> client = openai.OpenAI(base_url=server.url, api_key="demo")
        >>> client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "?"}]
        ...                                ).choices[0].message.content
        'Paris is the capital.'
        >>> server.requests[-1]["messages"][0]["content"], server.connections_opened
        ('?', 1)
        >>> server.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token_rate: float | None = None,
                 chunk_chars: int | None = None) -> None:
        self.host = host
        self.port = port
        self.token_rate = token_rate if token_rate else None
        self.chunk_chars = chunk_chars
        self.requests: list[dict[str, Any]] = []
        """The JSON bodies of the chat requests received, in order (faulted requests included)."""
        self.connections_opened = 0
        self.connections_closed = 0
        self.stream_closed_early = 0
        """Streamed responses whose client went away before the last byte was sent."""
        self._script: collections.deque[Any] = collections.deque()
        self._by_model: dict[str, collections.deque[Any]] = {}
        self._script_lock = threading.Lock()
        self._idle = threading.Condition()
        self._inflight = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: _HTTPServer | None = None
        self._open: dict[IOStream, list[Callable[[], None]]] = {}  # open connection -> run when it closes
        self._tasks: set[asyncio.Task[Any]] = set()  # chat handlers at work
        self._stopping = False
        self._start_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        """The OpenAI ``base_url`` of the running server, e.g. ``"http://127.0.0.1:54321/v1"``."""
        if not self.running:
            raise RuntimeError("the demo server is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> DemoServer:
        """Bind the socket and serve from a daemon thread; returns ``self``. Calling it again does nothing."""
        with self._start_lock:
            if self.running:
                return self
            ready = threading.Event()
            failure: list[BaseException] = []

            def run() -> None:
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                self._loop = loop
                try:
                    io_loop = loop.run_until_complete(self._listen())
                except BaseException as e:  # noqa: BLE001 - reported to start()'s caller
                    failure.append(e)
                    ready.set()
                    loop.close()
                    return
                ready.set()
                try:
                    loop.run_forever()
                finally:
                    try:
                        loop.run_until_complete(loop.shutdown_asyncgens())
                    finally:
                        io_loop.close()  # tornado's wrapper; closes the asyncio loop too

            self._stopping = False
            self._thread = threading.Thread(target=run, name=f"jupyter-stream-demo-lm:{self.port}", daemon=True)
            self._thread.start()
            ready.wait()
            if failure:
                self._thread.join()
                self._thread = None
                raise failure[0]
            return self

    async def _listen(self) -> IOLoop:
        """Bind (``port`` 0: a free one) and serve on this thread's loop; returns tornado's view of the loop."""
        sockets = bind_sockets(self.port, address=self.host)
        self._http = _HTTPServer(self, _application(self), max_body_size=1 << 30)
        self._http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        return IOLoop.current()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening socket and every connection, and end the thread. Safe to call twice."""
        with self._start_lock:
            loop, thread = self._loop, self._thread
            if thread is None or loop is None or not thread.is_alive():
                self._thread = None
                return
            self._stopping = True
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(timeout)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None
            with self._idle:
                self._inflight = 0
                self._idle.notify_all()

    async def _shutdown(self) -> None:
        """Stop listening, close every connection (so its handler sees the client leave), let handlers end."""
        if self._http is not None:
            self._http.stop()
            try:
                await asyncio.wait_for(self._http.close_all_connections(), 2.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=1.0)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"DemoServer({where}, token_rate={self.token_rate}, chunk_chars={self.chunk_chars})"

    # -- scripting and inspection -------------------------------------------------------------------

    def script(self, *replies: Any, model: str | None = None) -> None:
        """Queue replies for the next chat requests, one per request, first in first out.

        Each is a ``str`` (streamed through the tokenizer), a :class:`Reply`, a list of raw chunk dicts (or
        a fixture dict with a ``"chunks"`` list) replayed verbatim, or a :class:`Fault`. When the queue is
        empty the automatic responder answers. ``model``: queue them for the requests naming that model
        only (they go before the shared queue), so requests made at once to several models (a comparison)
        each get their own replies whatever order they arrive in.

            >>> server.script("first reply", Fault("status", status=500), "after the error")  # doctest: +SKIP
            >>> server.script("Paris.", model="small"); server.script("Paris, France.", model="large")  # doctest: +SKIP
        """
        for r in replies:
            if isinstance(r, Fault):
                r = Fault(**r.__dict__)  # own the countdown of `times`
            elif isinstance(r, Mapping) and "chunks" in r:
                r = list(r["chunks"])
            elif not isinstance(r, (str, Reply, list, tuple)):
                raise TypeError(f"cannot script a {type(r).__name__}; use str, Reply, a chunk list or Fault")
            with self._script_lock:
                queue = self._script if model is None else self._by_model.setdefault(model, collections.deque())
                queue.append(r)

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._script_lock:
            return len(self._script) + sum(map(len, self._by_model.values()))

    def reset(self) -> None:
        """Forget the script, the recorded requests and the counters (for a server shared across tests)."""
        with self._script_lock:
            self._script.clear()
            self._by_model.clear()
        self.requests.clear()
        self.connections_opened = self.connections_closed = self.stream_closed_early = 0

    def wait_idle(self, timeout: float | None = 5.0) -> bool:
        """Block until no streamed response is in flight; True if so within ``timeout`` seconds.

        A stream the client abandoned counts as in flight until the server has noticed and closed the
        connection, so after ``wait_idle()`` the counters are up to date.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def _next_script_item(self, model: str) -> Any:
        """The next reply for a request naming ``model``: its own queue first, then the shared one."""
        with self._script_lock:
            queue = self._by_model.get(model) or self._script
            if not queue:
                return None
            item = queue[0]
            if isinstance(item, Fault) and item.kind in ("status", "refuse") and item.times > 1:
                item.times -= 1
                return Fault(**{**item.__dict__, "times": 1})
            return queue.popleft()

    def _prepare(self, item: Any, body: Mapping[str, Any]) -> _PreparedAnswer:
        """The answer to one chat request, from its script item (None: the automatic responder)."""
        n = next(self._ids)
        cid = f"chatcmpl-demo{n:06d}"
        created = int(time.time())
        model = str(body.get("model") or _MODEL)
        rate = self.token_rate
        if isinstance(item, Fault):
            item = Reply(content=self._auto(body), fault=item)
        elif item is None:
            item = Reply(content=self._auto(body))
        elif isinstance(item, str):
            item = Reply(content=item)
        elif isinstance(item, (list, tuple)):
            return _prepare_raw(list(item), body, cid=cid, created=created, model=model, rate=rate)
        if item.token_rate is not None:
            rate = item.token_rate or None
        return _prepare_reply(item, body, cid=cid, created=created, model=model, rate=rate,
                           chunk_chars=self.chunk_chars)

    @staticmethod
    def _auto(body: Mapping[str, Any]) -> str:
        messages = [m for m in (body.get("messages") or []) if isinstance(m, Mapping)]
        return auto_reply(messages, body)

    # -- bookkeeping, on the server's thread -----------------------------------------------------------

    def _stream_started(self) -> None:
        with self._idle:
            self._inflight += 1

    def _stream_finished(self) -> None:
        with self._idle:
            self._inflight = max(0, self._inflight - 1)
            self._idle.notify_all()

    def _connection_opened(self, stream: IOStream) -> None:
        """Count a connection tornado accepted (from :class:`_HTTPServer`)."""
        self.connections_opened += 1
        self._open[stream] = []

    def _connection_closed(self, stream: IOStream) -> None:
        """Count a connection tornado is done with (closed), then run what waited for that."""
        self.connections_closed += 1
        for callback in self._open.pop(stream, ()):
            callback()

    def _after_close(self, stream: IOStream, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the connection of ``stream`` is closed and counted (now if it is)."""
        if stream in self._open:
            self._open[stream].append(callback)
        else:
            callback()

    def _track(self, task: asyncio.Task[Any] | None) -> None:
        """Remember a handler's task until it ends, so that :meth:`stop` can wait for it."""
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- control endpoints ----------------------------------------------------------------------------

    async def _send_json(self, handler: _Handler, status: int, body: bytes, *, keep_alive: bool = True,
                         extra: Sequence[tuple[str, str]] = ()) -> None:
        """Answer ``status`` with the JSON ``body`` (``keep_alive``: tornado follows the client's wish)."""
        handler.send_json(status, body, extra)

    async def _control(self, handler: _Handler, req: _Request, path: str) -> None:
        """``POST /v1/demo/script`` ``{"replies": [...], "model": null}``, ``GET /v1/demo/stats``,
        ``POST /v1/demo/reset``.

        Lets another process (a benchmark, a CLI test) script a server it started with
        ``python -m jupyter_stream.demo``. A reply is a str, a list of raw chunk dicts, a dict of
        :class:`Reply` arguments (``"fault"`` a dict of :class:`Fault` arguments) or a dict with ``"kind"``
        (a :class:`Fault`). A subclass adds endpoints by overriding this (``benchmarks/_server.py``).
        """
        try:
            if path == "/demo/script" and req.method == "POST":
                payload = json.loads(req.body or b"{}")
                replies = payload.get("replies", [])
                self.script(*(_reply_from_json(r) for r in replies), model=payload.get("model"))
                body = _dumps({"queued": len(replies), "pending": self.pending})
            elif path == "/demo/stats" and req.method == "GET":
                body = _dumps({"requests": len(self.requests), "pending": self.pending,
                               "connections_opened": self.connections_opened,
                               "connections_closed": self.connections_closed,
                               "stream_closed_early": self.stream_closed_early})
            elif path == "/demo/reset" and req.method == "POST":
                self.reset()
                body = b'{"reset":true}'
            else:
                body = _error_body(404, message=f"no route for {req.method} {handler.request.path}")
                return await self._send_json(handler, 404, body)
        except (ValueError, TypeError, AttributeError) as e:
            return await self._send_json(handler, 400, _error_body(400, message=str(e)))
        await self._send_json(handler, 200, body)


# --------------------------------------------------------------------------------------------------
# Conveniences
# --------------------------------------------------------------------------------------------------

_shared: DemoServer | None = None
_shared_lock = threading.Lock()


def shared_server(token_rate: float | None | str = "env") -> DemoServer:
    """The process-wide demo server, started on first use (the package's auto-start uses this).

    ``token_rate="env"`` takes :func:`default_token_rate` for a server it starts and leaves a running
    one as it is; an explicit rate also changes the pace of an already running shared server.

        >>> from jupyter_stream.demo import shared_server
        >>> shared_server(token_rate=None).url  # doctest: +ELLIPSIS
        'http://127.0.0.1:.../v1'
    """
    global _shared
    rate = default_token_rate() if token_rate == "env" else token_rate
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = DemoServer(token_rate=rate).start()  # type: ignore[arg-type]
        elif token_rate != "env":  # only an explicit rate changes a running server's pace
            _shared.token_rate = rate or None  # type: ignore[assignment]
        return _shared


def serve_forever(host: str = "127.0.0.1", port: int = 8765, token_rate: float | None = None) -> None:
    """Run a demo server in the foreground until Ctrl-C, printing ``demo LM listening on <url>`` once.

    ``token_rate`` None takes :func:`default_token_rate` (``$JUPYTER_STREAM_DEMO_RATE`` or 150); 0 means as
    fast as possible.

        $ python -m jupyter_stream.demo --port 8765 --rate 50
        demo LM listening on http://127.0.0.1:8765/v1
    """
    rate = default_token_rate() if token_rate is None else (token_rate or None)
    server = DemoServer(host=host, port=port, token_rate=rate).start()
    print(f"demo LM listening on {server.url}", flush=True)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
