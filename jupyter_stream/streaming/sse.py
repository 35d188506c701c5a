"""streaming_response: a stream as Server-Sent Events, for an HTTP API.

DSPy's framing is kept - ``data: {"prediction": {...}}`` for the final prediction, ``data: {"chunk":
...}`` for raw LM chunks, ``data:`` strings passed through, ``data: [DONE]`` at the end - and field
chunks and status messages are framed too (DSPy raises on them)::

    data: {"stream_response": {"predict_name": "self", "signature_field_name": "answer", "chunk": "Par", "is_last_chunk": false}}
    data: {"status_message": {"message": "Calling tool search..."}}

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

import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ..prediction import is_prediction
from .events import LMRequest, LMResponse, StatusMessage, StreamResponse

__all__ = ["streaming_response"]


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


async def streaming_response(streamer: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
    """Turn a stream into SSE strings (``data: ...\\n\\n``), ending with ``data: [DONE]``."""
    async for value in streamer:
        if isinstance(value, StreamResponse):
            yield _frame({"stream_response": dataclasses.asdict(value)})
        elif isinstance(value, StatusMessage):
            yield _frame({"status_message": {"message": value.message}})
        elif is_prediction(value):  # ours, or a DSPy program's own dspy.Prediction
            yield _frame({"prediction": dict(value.items())})
        elif isinstance(value, (LMRequest, LMResponse)):
            yield _frame({"lm_request" if isinstance(value, LMRequest) else "lm_response": dataclasses.asdict(value)})
        elif isinstance(value, str) and value.startswith("data:"):
            yield value
        elif hasattr(value, "model_dump_json"):
            yield f'data: {json.dumps({"chunk": value.model_dump_json()})}\n\n'
        else:
            # Unknown chunk types pass through as their JSON (DSPy raises here).
            yield _frame({"chunk": value})
    yield "data: [DONE]\n\n"
