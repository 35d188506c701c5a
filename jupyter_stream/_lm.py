"""LM: a chat model behind any OpenAI-compatible server, called through the ``openai`` client.

Every call streams (``stream=True``), so time to first token and usage are always recorded and a
stream can show tokens as they arrive. The SSE lines are read through the ``openai`` client's raw
streaming response (its auth, base URL, retries and timeouts apply) and decoded with one JSON parse
per line: building the client's typed chunk objects costs several times the transport itself.

Example::

    >>> import jupyter_stream as js
    >>> lm = js.LM("openai/gpt-4o-mini", api_key="sk-test", temperature=0.2)
    >>> lm.model, lm.temperature
    ('gpt-4o-mini', 0.2)
    >>> "sk-test" in repr(lm)
    False
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from jiter import from_json as _loads  # an openai dependency: parses the SSE payload bytes, no str round trip

from . import _observer as observer
from ._exceptions import ConfigurationError, LMError

__all__ = ["LM", "LMRecord"]

_log = logging.getLogger("jupyter_stream")


@dataclass(slots=True)
class LMRecord:
    """What one LM call sent and received. Filled in while the reply streams."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    received: bytearray = field(default_factory=bytearray)
    """The content received so far, UTF-8 encoded, in one buffer that grows in place (a long reply
    holds one block of memory, not a million strings, and gives it back whole when the call ends),
    but for the last deltas, in ``parts``; both emptied when the call ends (see ``text``)."""
    parts: list[str] = field(default_factory=list)
    """The deltas not yet moved into ``received`` (at most 1,024)."""
    reasoning_parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    ttft: float | None = None
    started: float = 0.0
    duration: float = 0.0
    finish_reason: str | None = None
    cached: bool = False
    text: str = ""
    """The whole content, set when the call ends."""
    reasoning: str = ""

    def content_so_far(self) -> str:
        """The content received so far (joined on demand; the record itself never re-joins)."""
        if self.text:
            return self.text
        return self.received.decode("utf-8", "surrogatepass") + "".join(self.parts)


ContentHook = Callable[[str], Any]


class LM:
    """A chat model on an OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, LM Studio...).

    Args:
        model: the model name; an ``openai/`` prefix is accepted and removed.
        base_url: the server (default: ``OPENAI_BASE_URL`` or OpenAI's); ``api_base=`` (DSPy's name) works too.
        api_key: the key (default: ``OPENAI_API_KEY``; local servers accept any string).
        temperature, max_tokens: sampling options sent with every request.
        cache: keep replies in memory keyed on the request; a hit returns at once and streams nothing.
        cache_dir: also keep them on disk in this folder (JSON files).
        num_retries: retries for 429/5xx and connection errors (the ``openai`` client's ``max_retries``).
        request_timeout: the HTTP timeout in seconds for one request.
        **kwargs: any other request parameter (``top_p``, ``stop``, ``seed``, ``extra_body``...).

    The key is kept out of ``repr``, history, errors and logs.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        num_retries: int = 2,
        request_timeout: float | None = 600.0,
        history_size: int = 100,
        include_usage: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError("LM needs a model name, e.g. LM('openai/gpt-4o-mini')")
        self.model = model.removeprefix("openai/")
        api_base = kwargs.pop("api_base", None)  # DSPy's (litellm's) name for base_url
        self.base_url = base_url or api_base or os.environ.get("OPENAI_BASE_URL")
        self._api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.num_retries = num_retries
        self.request_timeout = request_timeout
        self.include_usage = include_usage
        self.kwargs = kwargs
        self.history: collections.deque[LMRecord] = collections.deque(maxlen=history_size)
        self._memory: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._memory_max = 1024
        # One client (and connection pool) per event loop: a pool's connections belong to the loop that
        # opened them. Each entry has a keeper (see ``_keeper``) that closes the client when its loop
        # shuts down, and entries of loops closed some other way are dropped on the next call.
        self._clients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = {}
        self._keepers: dict[asyncio.AbstractEventLoop, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ surface
    def __repr__(self) -> str:
        bits = [repr(self.model)]
        if self.base_url:
            bits.append(f"base_url={self.base_url!r}")
        if self.temperature is not None:
            bits.append(f"temperature={self.temperature}")
        if self.max_tokens is not None:
            bits.append(f"max_tokens={self.max_tokens}")
        bits.append(f"cache={self.cache}")
        return f"LM({', '.join(bits)})"

    def copy(self, **changes: Any) -> LM:
        """A new LM with some options changed (``lm.copy(temperature=0.9)``); it shares no cache."""
        opts: dict[str, Any] = dict(
            base_url=self.base_url, api_key=self._api_key, temperature=self.temperature,
            max_tokens=self.max_tokens, cache=self.cache, cache_dir=self.cache_dir,
            num_retries=self.num_retries, request_timeout=self.request_timeout,
            history_size=self.history.maxlen, include_usage=self.include_usage, **self.kwargs,
        )
        opts.update(changes)
        return LM(opts.pop("model", self.model), **opts)

    def request_params(self, **overrides: Any) -> dict[str, Any]:
        """The parameters sent with a request (model and sampling options; never the key)."""
        params: dict[str, Any] = {"model": self.model}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        params.update(self.kwargs)
        params.update({k: v for k, v in overrides.items() if v is not None})
        return params

    def __call__(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **overrides: Any) -> list[str]:
        """Call synchronously: ``lm("Say hi")`` or ``lm(messages=[...])``; returns ``[reply]`` as DSPy does."""
        from ._runtime import run_sync

        return [run_sync(self.acall(prompt, messages=messages, **overrides)).text]

    async def acall(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **overrides: Any) -> LMRecord:
        """Call asynchronously and return the finished :class:`LMRecord`."""
        if messages is None:
            if prompt is None:
                raise ConfigurationError("pass a prompt string or messages=[...]")
            messages = [{"role": "user", "content": prompt}]
        return await self.astream(messages, **overrides)

    # ------------------------------------------------------------------------------------- client
    def check_key(self) -> None:
        """Raise the :class:`ConfigurationError` a request would raise for want of a key: none given, none in
        ``OPENAI_API_KEY``, and no ``base_url`` (a local server needs none). Makes no request.

        >>> LM("llama3", base_url="http://127.0.0.1:11434/v1").check_key()   # a local server: no key needed
        """
        if not (self._api_key or os.environ.get("OPENAI_API_KEY") or self.base_url):
            raise ConfigurationError(
                f"no API key for model {self.model!r}: set OPENAI_API_KEY, pass LM(..., api_key=...), "
                "or point base_url at a local server"
            )

    async def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is not None:
            return client
        self.check_key()
        key = self._api_key or os.environ.get("OPENAI_API_KEY") or "none"  # local servers ignore the key
        client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=self.num_retries, timeout=self.request_timeout
        )
        keeper = _keeper(self, loop, client)
        with self._lock:
            for old in [old for old in self._clients if old.is_closed()]:
                _abandon(self._clients.pop(old))  # its loop closed without shutting down
                self._keepers.pop(old, None)
            self._clients[loop] = client
            self._keepers[loop] = keeper
        await keeper.__anext__()  # the loop now tracks it: its shutdown_asyncgens() will close the client
        return client

    def _forget(self, loop: asyncio.AbstractEventLoop, client: openai.AsyncOpenAI) -> None:
        with self._lock:
            if self._clients.get(loop) is client:
                del self._clients[loop]
                self._keepers.pop(loop, None)

    def _take_clients(self) -> list[tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI]]:
        with self._lock:
            clients = list(self._clients.items())
            self._clients, self._keepers = {}, {}
        return clients

    async def aclose(self) -> None:
        """Close this LM's HTTP clients (their pooled connections). The LM stays usable."""
        for loop, client in self._take_clients():
            if loop is asyncio.get_running_loop():
                await client.close()
            else:
                _close_elsewhere(loop, client)

    def close(self) -> None:
        """Close this LM's HTTP clients from synchronous code. The LM stays usable."""
        for loop, client in self._take_clients():
            _close_elsewhere(loop, client)

    # --------------------------------------------------------------------------------------- cache
    def _cache_key(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        blob = json.dumps({"messages": messages, "params": params, "base_url": self.base_url}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                return hit
        if self.cache_dir is not None:
            path = self.cache_dir / f"{key}.json"
            try:
                hit = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                return None
            self._cache_put(key, hit, disk=False)
            return hit
        return None

    def _cache_put(self, key: str, entry: dict[str, Any], *, disk: bool = True) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_max:
                self._memory.popitem(last=False)
        if disk and self.cache_dir is not None:
            tmp = self.cache_dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(entry), "utf-8")
                tmp.replace(self.cache_dir / f"{key}.json")
            except OSError as e:  # a cache that cannot be written must not fail a call that succeeded
                _log.warning("jupyter_stream: cannot write the LM cache in %s: %s", self.cache_dir, e)

    def clear_cache(self) -> None:
        """Forget every cached reply (memory only; delete ``cache_dir`` to clear the disk)."""
        with self._lock:
            self._memory.clear()

    # -------------------------------------------------------------------------------------- stream
    async def astream(
        self,
        messages: list[dict[str, Any]],
        *,
        on_content: ContentHook | None = None,
        on_reasoning: ContentHook | None = None,
        on_chunk: Callable[[dict[str, Any]], Any] | None = None,
        record: LMRecord | None = None,
        cache: bool | None = None,
        **overrides: Any,
    ) -> LMRecord:
        """Stream one chat completion; call ``on_content(text)`` / ``on_reasoning(text)`` per delta.

        Returns the finished record. A cache hit returns at once without calling the hooks. Raises
        :class:`~jupyter_stream.LMError` (with ``partial``/``raw`` filled by the caller) on failure.
        """
        params = self.request_params(**overrides)
        rec = record if record is not None else LMRecord(self.model, messages, params)
        rec.params = params
        use_cache = self.cache if cache is None else cache
        key = self._cache_key(messages, params) if use_cache else ""
        rec.started = time.perf_counter()
        if use_cache:
            hit = self._cache_get(key)
            if hit is not None:
                rec.text, rec.reasoning, rec.usage = hit["text"], hit.get("reasoning", ""), {}
                rec.finish_reason, rec.cached = hit.get("finish_reason"), True
                self.history.append(rec)
                return rec
        try:
            await self._read(messages, params, rec, on_content, on_reasoning, on_chunk)
        except LMError as e:
            # A server may echo the key in its error text ("Incorrect API key provided: sk-..."): mask it.
            key = self._api_key or os.environ.get("OPENAI_API_KEY")
            if key and len(key) >= 8 and key in str(e):
                e.args = (str(e).replace(key, key[:3] + "***"),)
            # ``raise ... from None`` hides the transport's exception from tracebacks but keeps it as
            # ``__context__``, and it holds the request (``Authorization: Bearer <key>``) and the server's
            # unmasked text. The message already says what went wrong: drop it.
            e.__context__ = None
            raise
        finally:
            rec.duration = time.perf_counter() - rec.started
        if rec.parts:  # into the buffer first: decoding it and then adding the rest would copy the text twice
            rec.received += "".join(rec.parts).encode("utf-8", "surrogatepass")
        rec.text = rec.received.decode("utf-8", "surrogatepass")
        rec.received, rec.parts = bytearray(), []  # the text is kept once: LM.history holds the records
        rec.reasoning = "".join(rec.reasoning_parts)
        self.history.append(rec)
        if use_cache and rec.finish_reason in ("stop", "length", None):
            self._cache_put(key, {"text": rec.text, "reasoning": rec.reasoning, "finish_reason": rec.finish_reason})
        return rec

    async def _post(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> Any:
        """Send the request, retrying 429s, 5xx and refused connections up to ``num_retries`` times.

        The retries are ours, not the client's (its ``max_retries`` is 0 per request), so that each one is
        told: a status message in the running stream ("HTTP 429, retrying in 2.0 s (1/2)"), where every sink
        shows it, and a log line. The policy is the ``openai`` client's: the server's ``retry-after-ms`` or
        ``retry-after`` (up to 60 s) and ``x-should-retry``, else 0.5 s doubling up to 8 s, minus up to 25%.
        """
        attempt = 0
        while True:
            try:
                return await client.post(
                    "/chat/completions", body=body, cast_to=_transport_response(client),
                    options={"headers": {_RAW_STREAM_HEADER: "stream"}, "max_retries": 0},
                )
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                delay = _retry_delay(e, attempt) if attempt < self.num_retries else None
                if delay is None:
                    raise
                attempt += 1
                what = f"HTTP {e.status_code}" if isinstance(e, openai.APIStatusError) else "the connection failed"
                message = f"{self.model}: {what}, retrying in {delay:.1f} s ({attempt}/{self.num_retries})"
                _log.info(message)
                obs = observer.current()
                if obs is not None:
                    obs.status.note(message)
                await asyncio.sleep(delay)

    async def _read(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        rec: LMRecord,
        on_content: ContentHook | None,
        on_reasoning: ContentHook | None,
        on_chunk: Callable[[dict[str, Any]], Any] | None,
    ) -> None:
        client = await self._client()
        extra: dict[str, Any] = {"stream": True}
        if self.include_usage:
            extra["stream_options"] = {"include_usage": True}
        received, parts = rec.received, rec.parts
        parts_append = parts.append
        pack_mask = _PACK_MASK
        first = rec.ttft is None  # no content or reasoning yet
        reasoning_append = rec.reasoning_parts.append
        started = rec.started
        n = 0
        saw_done = False
        try:
            # The body is already plain JSON, so it goes through the client's generic ``post`` (auth,
            # base URL, retries, timeouts and error mapping all apply) without the typed-parameter
            # transform of ``chat.completions.create``, which costs about a millisecond per request.
            response = await self._post(client, {"messages": messages, **extra, **params})
            async with _closing(response), contextlib.aclosing(response.aiter_bytes()) as blocks:
                # Raw bytes split on newlines: one split per network read, no per-line decode.
                pending = b""
                async for block in blocks:
                    lines = (pending + block).split(b"\n") if pending else block.split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if line[:5] != b"data:":
                            if line[:12] == b"event: error":
                                raise LMError("the server sent an SSE error event")
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            saw_done = True  # read on to the end of the body so the connection is reused
                            continue
                        try:
                            data = _loads(payload)
                        except ValueError:
                            shown = payload[:120].decode("utf-8", "replace")
                            raise LMError(f"malformed SSE line from the server after {n} deltas: {shown!r}") from None
                        if on_chunk is not None:
                            on_chunk(data)
                        choices = data.get("choices")
                        if choices:
                            choice = choices[0]
                            delta = choice.get("delta")
                            if delta:
                                text = delta.get("content")
                                if text:
                                    n += 1
                                    parts_append(text)
                                    if not n & pack_mask:
                                        # Into one growing buffer: a str per delta kept in a list costs
                                        # ~15x the text; blocks of joined deltas fragment the heap.
                                        received += "".join(parts).encode("utf-8", "surrogatepass")
                                        parts.clear()
                                    if on_content is not None:
                                        on_content(text)
                                    if first:
                                        first = False
                                        rec.ttft = time.perf_counter() - started
                                        # Let the consumer show the first token now, before the rest of
                                        # this network read is processed.
                                        await asyncio.sleep(0)
                                else:
                                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                                    if thought:
                                        if first:
                                            first = False
                                            rec.ttft = time.perf_counter() - started
                                        reasoning_append(thought)
                                        if on_reasoning is not None:
                                            on_reasoning(thought)
                            fr = choice.get("finish_reason")
                            if fr:
                                rec.finish_reason = fr
                        elif "error" in data:
                            err = data["error"]
                            msg = err.get("message", err) if isinstance(err, dict) else err
                            raise LMError(f"the server reported an error mid-stream after {n} deltas: {msg}")
                        usage = data.get("usage")
                        if usage:
                            rec.usage = usage
                if pending.strip() == b"data: [DONE]":  # a last line without its newline
                    saw_done = True
        except openai.APIStatusError as e:
            raise LMError(
                f"{self.model}: the server answered HTTP {e.status_code}: {_server_message(e, self.base_url)}",
                status_code=e.status_code,
            ) from None
        except openai.APIConnectionError as e:
            where = self.base_url or "the OpenAI API"
            raise LMError(f"{self.model}: cannot reach {where}: {_cause(e)}") from None
        except LMError:
            raise
        except Exception as e:  # the transport's own exception types; anything else (a hook's bug) propagates
            if isinstance(e, OSError) or type(e).__module__.split(".")[0] in _TRANSPORT_MODULES:
                raise LMError(
                    f"{self.model}: the connection failed after {n} deltas ({type(e).__name__}: {_cause(e)})"
                ) from None
            raise
        if not saw_done and rec.finish_reason is None:
            raise LMError(f"{self.model}: the connection closed after {n} deltas, before the reply finished")


_PACK_MASK = 1_023  # move the deltas into the record's buffer every 1,024 of them
_RAW_STREAM_HEADER = "X-Stainless-Raw-Response"  # openai's marker: return the response unread


def _transport_response(client: openai.AsyncOpenAI) -> type:
    """The Response class of the client's HTTP transport (httpx2 for openai 3, httpx before)."""
    for klass in type(client._client).__mro__:
        root = klass.__module__.split(".")[0]
        if root in ("httpx2", "httpx"):
            return sys.modules[root].Response
    raise ConfigurationError(f"unsupported openai transport {type(client._client).__name__}")  # pragma: no cover


def _close_elsewhere(loop: asyncio.AbstractEventLoop, client: openai.AsyncOpenAI) -> None:
    """Close a client that belongs to another loop: on it when it runs, else by running it briefly."""
    if loop.is_closed():
        return
    if loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        fut = asyncio.run_coroutine_threadsafe(client.close(), loop)
        if running is None:
            fut.result(timeout=5)
    else:
        loop.run_until_complete(client.close())


async def _keeper(lm: LM, loop: asyncio.AbstractEventLoop, client: openai.AsyncOpenAI) -> Any:
    """Close ``client`` when its event loop shuts down.

    An async generator started on a loop is tracked by it, and ``asyncio.run()`` / ``Runner.close()``
    finalise every tracked generator (``loop.shutdown_asyncgens()``) before closing the loop: that is the
    last moment the client's connections can be closed on their own loop. Without it a script that calls
    ``asyncio.run()`` per request would keep one socket open per call for the life of the LM.
    """
    try:
        yield
    finally:
        lm._forget(loop, client)
        await client.close()


def _abandon(client: openai.AsyncOpenAI) -> None:
    """Let go of a client whose event loop closed without shutting down (``loop.close()`` by hand).

    Nothing can run on that loop any more, so its sockets close when the garbage collector takes their
    transports. The client is marked closed first: otherwise the ``openai`` client's ``__del__`` would
    schedule its ``aclose()`` on whichever loop is running then, which fails on the dead loop's transports
    and logs "Task exception was never retrieved".
    """
    inner = getattr(client, "_client", None)  # the httpx/httpx2 AsyncClient
    state = getattr(inner, "_state", None)
    if state is not None:
        inner._state = type(state).CLOSED


@contextlib.asynccontextmanager
async def _closing(response: Any) -> Any:
    try:
        yield response
    finally:
        await response.aclose()


_TRANSPORT_MODULES = frozenset({"httpx2", "httpx", "httpcore", "httpcore2", "h11", "anyio"})


_RETRY_STATUSES = frozenset({408, 409, 429})


def _retry_delay(e: openai.APIError, attempt: int) -> float | None:
    """Seconds to wait before retrying after ``e`` (the ``attempt``-th retry, from 0), or None: do not retry."""
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    if isinstance(e, openai.APIStatusError):
        should = headers.get("x-should-retry")
        if should == "false" or (should != "true" and e.status_code not in _RETRY_STATUSES and e.status_code < 500):
            return None
    after = _retry_after(headers)
    if after is not None:
        return after if 0 <= after <= 60 else None
    return min(0.5 * 2.0**attempt, 8.0) * (1 - 0.25 * random.random())


def _retry_after(headers: Any) -> float | None:
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None


def _server_message(e: openai.APIStatusError, base_url: str | None) -> str:
    """The server's own words for an HTTP error (OpenAI's ``error.message``, FastAPI's ``detail``, a text
    body), and for a 404 a hint at the usual cause: a ``base_url`` without its ``/v1``."""
    body = e.body
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        msg = (err.get("message") if isinstance(err, dict) else err) or body.get("message") or body.get("detail")
    elif isinstance(body, str) and body.strip():
        msg = body.strip()[:300]
    text = str(msg) if msg else str(e.message)
    if e.status_code == 404:
        text += (f" (is base_url right? OpenAI-compatible servers answer under .../v1; base_url is "
                 f"{base_url or 'the OpenAI API'})")
    return text


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    text = str(inner or e) or type(inner or e).__name__
    return text[:300]
