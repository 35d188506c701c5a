"""Running a program as a task and handing its events to one consumer, within time limits.

Both ``streamify`` and ``stream()`` are :func:`drive`: the program runs as a task in a context that
holds the :class:`StreamCall`; the consumer pops events straight from the call's channel (no
intermediate generator per event). Leaving
the loop early, an exception, a timeout or a cancellation of the consumer cancels the task and waits
for it, so the LM request is closed before control returns.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from .. import _observer, _runs
from .. import settings as _settings
from .._exceptions import StreamError, StreamTimeoutError
from .._runtime import Limits
from .call import StreamCall

__all__ = ["attach_partial", "drive"]


_DONE = object()
_DEADLINE = object()


async def drive(
    make_call: Callable[[asyncio.AbstractEventLoop], StreamCall],
    run: Callable[[], Awaitable[Any]],
    limits: Limits,
    *,
    snapshot: _settings.Settings | None = None,
    finish: Callable[[StreamCall, Any], Iterable[Any]] = lambda _call, value: (value,),
    capture: _runs.Capture | None = None,
) -> AsyncIterator[Any]:
    """Run ``run()`` as a task inside a new call; yield its events, then ``finish(call, return value)``.

    The call is made when iteration starts (on the loop that iterates), so the generator itself can be
    created anywhere, e.g. in a thread that hands it to :func:`apply_sync_streaming`.

    ``capture`` (from :func:`jupyter_stream._runs.capture`, made when the stream was created): the run is
    kept (history, recordings). Its tape takes the LM calls from the call's watches and, when the run is
    recorded, each event here; it ends with the run's outcome, whichever way the run ends.
    """
    loop = asyncio.get_running_loop()
    call = make_call(loop)
    tape = call.tape = capture.start() if capture is not None else None
    keep = tape.event if tape is not None and tape.events is not None else None
    left: BaseException | None = None
    ctx = contextvars.copy_context()
    _observer.install(call, ctx)
    if snapshot is not None:
        ctx.run(_settings.adopt, snapshot)

    async def main() -> Any:
        return await run()

    task = loop.create_task(main(), context=ctx)
    channel = call.channel
    task.add_done_callback(lambda _t: channel.emit(_DONE))
    gap = limits.stream_timeout
    deadline_handle = None
    if limits.timeout is not None:
        deadline_handle = loop.call_later(limits.timeout, channel.emit_first, _DEADLINE)
    items = channel.items
    popleft = items.popleft
    try:
        while True:
            if not items:
                if gap is None:
                    await channel.wait()
                else:
                    try:
                        async with asyncio.timeout(gap):
                            await channel.wait()
                    except TimeoutError:
                        raise _timeout(call, "stream_timeout", gap) from None
            item = popleft()
            if item is _DONE:
                break
            if item is _DEADLINE:
                raise _timeout(call, "timeout", limits.timeout)
            if keep is not None:
                keep(item)
            yield item
        if task.cancelled():
            raise asyncio.CancelledError()
        exc = task.exception()
        if exc is not None:
            raise attach_partial(call, exc)
        for item in finish(call, task.result()):
            if keep is not None:
                keep(item)
            yield item
    except BaseException as e:
        left = e
        raise
    finally:
        if deadline_handle is not None:
            deadline_handle.cancel()
        try:
            if not task.done():
                call.cancel_pending()
                task.cancel()
                try:
                    await asyncio.shield(_settle(task))
                except asyncio.CancelledError:
                    # The consumer itself is being cancelled: still let the task finish its cleanup.
                    await _settle(task)
                    raise
        finally:
            if tape is not None:
                _end(tape, task, left)


def _end(tape: _runs.Tape, task: asyncio.Task[Any], left: BaseException | None) -> None:
    """End the run's tape with its outcome: ``left`` is what made the consumer's loop leave, if anything."""
    done_ok = task.done() and not task.cancelled() and task.exception() is None
    if left is not None and not isinstance(left, (GeneratorExit, asyncio.CancelledError)):
        tape.end(error=left)
    elif done_ok:
        tape.end(prediction=task.result())
    elif task.done() and not task.cancelled() and left is None:
        tape.end(error=task.exception())
    else:
        tape.end(stopped=True)


async def _settle(task: asyncio.Task[Any]) -> None:
    try:
        await task
    except BaseException:  # noqa: BLE001 - the task's own outcome no longer matters
        pass


def _timeout(call: StreamCall, limit: str, seconds: float | None) -> StreamTimeoutError:
    partial, raw, name = call.partial()
    if limit == "stream_timeout":
        msg = (
            f"no event for {seconds:g} s (stream_timeout): the model or the program stalled. "
            "Pass a larger stream_timeout=..., or timeout_profile='ml_inference' for slow models"
        )
    else:
        msg = (
            f"the call ran longer than {seconds:g} s (timeout). Pass a larger timeout=..., timeout=None, "
            "or timeout_profile='streaming' / 'batch_job'"
        )
    return StreamTimeoutError(msg, limit=limit, seconds=seconds, partial=partial, raw=raw, predict_name=name)


def attach_partial(call: StreamCall, exc: BaseException) -> BaseException:
    """Make sure a runtime error leaving a stream carries what had streamed."""
    if isinstance(exc, StreamError) and not exc.partial:
        partial, raw, name = call.partial()
        exc.fill_in(partial=partial, raw=raw, predict_name=name)
    return exc
