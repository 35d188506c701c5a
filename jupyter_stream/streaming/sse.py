"""streaming_response: a stream as Server-Sent Events, for an HTTP API.

DSPy's framing is kept - ``data: {"prediction": {...}}`` for the final prediction, ``data: {"chunk":
...}`` for raw LM chunks, ``data:`` strings passed through, ``data: [DONE]`` at the end - and field
chunks and status messages are framed too (DSPy raises on them)::

    data: {"stream_response": {"predict_name": "self", "signature_field_name": "answer", "chunk": "Par", "is_last_chunk": false}}
    data: {"status_message": {"message": "Calling tool search..."}}

A call that fails mid-stream ends with an error event, then ``[DONE]`` as always, so a client (a browser's
``EventSource`` included) stops instead of reconnecting and running the call again; nothing is raised into
the server and one line is logged::

    data: {"error": {"type": "LMError", "message": "...", "partial": {"answer": "Par"}}}

Example::

    >>> import asyncio, jupyter_stream as js
    >>> async def events():
    ...     yield js.StreamResponse("self", "answer", "Paris", True)
    ...     yield js.Prediction(answer="Paris")
    >>> async def main():
    ...     return [line async for line in js.streaming_response(events())]
    >>> for line in asyncio.run(main()): print(line, end="")
    data: {"stream_response": {"predict_name": "self", "signature_field_name": "answer", "chunk": "Paris", "is_last_chunk": true, "call_id": 0}}
    <BLANKLINE>
    data: {"prediction": {"answer": "Paris"}}
    <BLANKLINE>
    data: [DONE]
    <BLANKLINE>
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from .._prediction import is_prediction
from .events import LMRequest, LMResponse, StatusMessage, StreamResponse

__all__ = ["SSEEncoder", "streaming_response"]

_log = logging.getLogger("jupyter_stream")


def _default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if is_prediction(o):
        return dict(o.items())
    return str(o)


def _frame(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, default=_default)}\n\n"


async def streaming_response(streamer: AsyncIterator[Any], *, model: str | None = None) -> AsyncGenerator[str, None]:
    """Turn a stream into SSE strings (``data: ...\\n\\n``), ending with ``data: [DONE]``.

    ``model``: the name of the model answering, told in the prediction frame (``{"prediction": {...},
    "model": "..."}``), so a client knows what wrote it (``jupyter-stream serve`` always tells it).

    A failure of the stream becomes an ``error`` event (its type, message and the ``partial`` text each
    field had received) before ``[DONE]``. A client that goes away cancels this generator, which closes the
    stream (and its LM request). The frames are :class:`SSEEncoder`'s.
    """
    frames: collections.deque[str] = collections.deque()
    sse = SSEEncoder(frames.append, model=model)
    try:
        async for value in streamer:
            sse.handle(value)
            yield frames.popleft()
    except Exception as e:  # noqa: BLE001 - told to the client, logged once, never raised into the server
        _log.warning("streaming_response: the stream failed: %s: %s", type(e).__name__, e)
        sse.finish(error=e)
    else:
        sse.finish()
    finally:
        aclose = getattr(streamer, "aclose", None)
        if aclose is not None:
            await aclose()
    while frames:
        yield frames.popleft()


class SSEEncoder:
    """A :class:`~jupyter_stream.streaming.sink.Sink` writing each event as one SSE frame to ``write``;
    ``finish`` writes the error frame, if any, and ``data: [DONE]``.

    >>> frames = []
    >>> sse = SSEEncoder(frames.append)
    >>> sse.start(title="qa", model="m"); sse.handle(StatusMessage("working")); sse.finish()
    >>> frames
    ['data: {"status_message": {"message": "working"}}\\n\\n', 'data: [DONE]\\n\\n']
    """

    __slots__ = ("write", "model")

    def __init__(self, write: Callable[[str], Any], *, model: str | None = None) -> None:
        self.write = write
        self.model = model

    def start(self, *, title: str = "", model: str = "") -> None:
        """Nothing to send yet (the model's name goes in the prediction frame, when given here or at init)."""
        if model and self.model is None:
            self.model = model

    def handle(self, event: Any) -> None:
        self.write(_encode(event, self.model))

    def finish(self, *, prediction: Any = None, error: BaseException | None = None, stopped: bool = False) -> None:
        if error is not None:
            partial = getattr(error, "partial", None) or {}
            self.write(_frame({"error": {"type": type(error).__name__, "message": str(error), "partial": partial}}))
        self.write("data: [DONE]\n\n")


def _encode(value: Any, model: str | None = None) -> str:
    """One event as an SSE string (``model``: told in the prediction frame)."""
    if isinstance(value, StreamResponse):
        return _frame({"stream_response": dataclasses.asdict(value)})
    if isinstance(value, StatusMessage):
        return _frame({"status_message": {"message": value.message}})
    if is_prediction(value):  # ours, or a DSPy program's own dspy.Prediction
        return _frame({"prediction": dict(value.items()), **({"model": model} if model is not None else {})})
    if isinstance(value, (LMRequest, LMResponse)):
        return _frame({"lm_request" if isinstance(value, LMRequest) else "lm_response": dataclasses.asdict(value)})
    if isinstance(value, str) and value.startswith("data:"):
        return value
    if hasattr(value, "model_dump_json"):
        return f'data: {json.dumps({"chunk": value.model_dump_json()})}\n\n'
    # Unknown chunk types pass through as their JSON (DSPy raises here).
    return _frame({"chunk": value})
