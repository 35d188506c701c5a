"""streamify and apply_sync_streaming: DSPy's streaming entry points, per-call and cancellable.

Example::

    >>> import asyncio, jupyter_stream as js
    >>> from jupyter_stream.demo import DemoServer
    >>> server = DemoServer().start()
    >>> server.script("[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]")
    >>> js.configure(lm=js.LM("demo", base_url=server.url, api_key="demo", cache=False))
    >>> program = js.streamify(js.Predict("question -> answer"), stream_listeners=[js.StreamListener("answer")])
    >>> async def main():
    ...     return [x async for x in program(question="Capital of France?")]
    >>> *chunks, final = asyncio.run(main())
    >>> "".join(c.chunk for c in chunks), final.answer
    ('Paris', 'Paris')
    >>> js.configure(lm=None); server.stop()
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from typing import Any

from .. import _programs as programs
from .. import _runs
from .. import settings as _settings
from .._runtime import UNSET as _UNSET
from .._runtime import resolve_limits, submit_tracked, wait_cancelled
from .call import StreamCall
from .drive import drive
from .listener import StreamListener, find_predictor_for_stream_listeners
from .status import StatusMessageProvider

__all__ = ["apply_sync_streaming", "streamify"]


def streamify(
    program: Any,
    status_message_provider: StatusMessageProvider | None = None,
    stream_listeners: list[StreamListener] | None = None,
    include_final_prediction_in_output_stream: bool = True,
    is_async_program: bool = False,
    async_streaming: bool = True,
    *,
    include_lm_events: bool = False,
) -> Callable[..., Any]:
    """Wrap a program so that calling it streams its fields, status messages and final prediction.

    Same arguments and meaning as DSPy's ``dspy.streamify``. Calling the result with the program's
    inputs returns an async generator (a sync one with ``async_streaming=False``) yielding
    :class:`StreamResponse`, :class:`StatusMessage` and, last, the :class:`Prediction`. Without
    listeners the raw LM chunks (``ChatCompletionChunk``) pass through instead of field chunks.

    Runtime options may be passed with the inputs: ``timeout`` (whole call, seconds),
    ``stream_timeout`` (longest wait between two events, default 60 s) and ``timeout_profile``
    (``"default"``, ``"ml_inference"``, ``"batch_job"``, ``"streaming"``).
    ``include_lm_events=True`` also yields :class:`LMRequest`/:class:`LMResponse` events.

    Every call has its own listener state: call it again, or many times concurrently. The settings in
    force when it is called (LM, adapter, callbacks; for a DSPy program, DSPy's) are the ones the stream
    runs with, even when it is read later, elsewhere.
    """
    listeners = list(stream_listeners or [])
    if listeners:
        find_predictor_for_stream_listeners(program, listeners)
    names = {id(p): n for n, p in programs.named_predictors(program)}
    provider = status_message_provider or StatusMessageProvider()
    title = _runs.title_of(program)
    # A native runner is made once (a wrong program fails here); a DSPy program's is made per call, so
    # that its settings are captured when the stream is created, not when it is read.
    fixed = None if programs.dspy_bridge(program) else programs.runner(program, is_async_program=is_async_program)

    def async_streamer(
        *args: Any,
        timeout: Any = _UNSET,
        stream_timeout: Any = _UNSET,
        timeout_profile: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[Any, None]:
        limits = resolve_limits(timeout=timeout, stream_timeout=stream_timeout, timeout_profile=timeout_profile)
        runner = fixed or programs.runner(program, is_async_program=is_async_program)

        def make_call(loop: asyncio.AbstractEventLoop) -> StreamCall:
            return StreamCall(
                loop=loop, status_provider=provider, listeners=listeners, names=names,
                passthrough=not listeners, lm_events=include_lm_events,
            )

        def finish(call: StreamCall, prediction: Any) -> tuple[Any, ...]:
            # DSPy's rule: the prediction is yielded unless asked not to, but always on a cache hit
            # or when no listener ever started.
            if (
                include_final_prediction_in_output_stream
                or not listeners
                or call.any_cache_hit()
                or not call.any_started()
            ):
                return (prediction,)
            return ()

        # The settings (LM, adapter, callbacks) in force now, when the stream is created, are the ones it
        # runs with, however late it is read (an ASGI server reads it after the handler returned).
        snapshot = _settings.current()
        capture = _runs.capture(kind="streamify", title=title, snapshot=snapshot,
                                inputs={**kwargs, "args": list(args)} if args else kwargs)
        return drive(make_call, lambda: runner(*args, **kwargs), limits, snapshot=snapshot, finish=finish,
                     capture=capture)

    async_streamer.program = program  # type: ignore[attr-defined] - lets %%stream find the program
    if async_streaming:
        return async_streamer

    def sync_streamer(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        return apply_sync_streaming(async_streamer(*args, **kwargs))

    sync_streamer.program = program  # type: ignore[attr-defined]
    return sync_streamer


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def apply_sync_streaming(async_generator: AsyncIterator[Any]) -> Generator[Any, None, None]:
    """Iterate an async stream from synchronous code (also inside a running loop, e.g. a notebook cell).

    The async generator runs on the engine loop thread; items cross over through a queue. Breaking
    out of the loop, closing the generator, or Ctrl-C (KeyboardInterrupt) while waiting cancels the
    stream and waits for the HTTP request to close - unlike DSPy's thread, which runs on.
    """
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    put = items.put

    async def pump() -> None:
        try:
            async for item in async_generator:
                put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            put(_Raised(e))
        finally:
            put(_END)
            aclose = getattr(async_generator, "aclose", None)
            if aclose is not None:
                await aclose()

    def consume() -> Generator[Any, None, None]:
        fut = submit_tracked(pump())
        try:
            while True:
                item = items.get()
                if item is _END:
                    return
                if type(item) is _Raised:
                    raise item.exc
                yield item
        finally:
            if not fut.done():
                fut.cancel()
                wait_cancelled(fut, 5.0)

    return consume()
