"""Running async code from sync callers, and the timeout profiles.

The engine is async. Synchronous entry points (``Predict(...)(...)``, ``streamify(...,
async_streaming=False)``, ``apply_sync_streaming``) run their coroutine on one long-lived *engine loop*
in a daemon thread and wait for it from the calling thread. Why a thread and not nest-asyncio2: in a real
ipykernel 7.4 (see ``tests/notebook/test_kernel_sync.py``), a nested ``run_until_complete`` keeps
running the coroutine after an interrupt - its ``finally`` never runs and the HTTP request stays open -
while a thread runner turns the ``KeyboardInterrupt`` in the waiting thread into a cancellation of the
task, whose ``finally`` closes the request. The thread runner also never re-enters the kernel's loop, so
no kernel message can be lost, it works the same in a script, a notebook and under any event loop, and
the ``openai`` client on the engine loop keeps its connection pool between calls.

A sync program that ``streamify`` runs in a worker thread calls back into the *stream's* loop instead
(``bridge_loop``), so its LM calls stream on the loop that delivers the events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _observer as observer
from ._exceptions import ConfigurationError

__all__ = ["TIMEOUT_PROFILES", "Limits", "resolve_limits", "run_sync"]

T = TypeVar("T")

# ------------------------------------------------------------------------------------------- timeouts


@dataclass(frozen=True, slots=True)
class Limits:
    """The time limits of one call, in seconds (None: unlimited)."""

    timeout: float | None
    """The whole call, from the first event requested to the final prediction."""
    stream_timeout: float | None
    """The longest wait between two events (the first one included)."""


TIMEOUT_PROFILES: dict[str, Limits] = {
    "default": Limits(timeout=120.0, stream_timeout=60.0),
    "ml_inference": Limits(timeout=600.0, stream_timeout=600.0),
    "batch_job": Limits(timeout=None, stream_timeout=None),
    "streaming": Limits(timeout=1800.0, stream_timeout=120.0),
}
"""Named limits: ``default`` 2 min, ``ml_inference`` 10 min, ``batch_job`` unlimited, ``streaming``
2 min per gap and 30 min in all."""

UNSET: Any = object()
_UNSET = UNSET


def resolve_limits(*, timeout: Any = _UNSET, stream_timeout: Any = _UNSET, timeout_profile: str | None = None) -> Limits:
    """Combine a profile with explicit values (explicit wins; ``None`` means unlimited)."""
    if timeout_profile is None:
        base = TIMEOUT_PROFILES["default"]
    elif timeout_profile in TIMEOUT_PROFILES:
        base = TIMEOUT_PROFILES[timeout_profile]
    else:
        raise ConfigurationError(
            f"unknown timeout_profile {timeout_profile!r}; use one of {', '.join(TIMEOUT_PROFILES)}"
        )
    t = base.timeout if timeout is _UNSET else timeout
    g = base.stream_timeout if stream_timeout is _UNSET else stream_timeout
    for name, v in (("timeout", t), ("stream_timeout", g)):
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
            raise ConfigurationError(f"{name} must be a positive number of seconds or None, got {v!r}")
    return Limits(timeout=None if t is None else float(t), stream_timeout=None if g is None else float(g))


# ----------------------------------------------------------------------------------- the engine loop

_engine_loop: asyncio.AbstractEventLoop | None = None
_engine_lock = threading.Lock()

bridge_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "jupyter_stream_bridge_loop", default=None
)
"""Set inside the worker thread of a sync program run by a stream: the loop to run LM calls on."""


def engine_loop() -> asyncio.AbstractEventLoop:
    """The long-lived loop (in a daemon thread) that sync callers run coroutines on."""
    global _engine_loop
    with _engine_lock:
        if _engine_loop is None or _engine_loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="jupyter_stream-engine", daemon=True).start()
            ready.wait()
            _engine_loop = loop
        return _engine_loop


def wait(fut: concurrent.futures.Future[T], *, cancel_grace: float = 5.0) -> T:
    """Wait for ``fut`` from a sync caller. Ctrl-C (KeyboardInterrupt) or any exception raised while
    waiting cancels the task and waits up to ``cancel_grace`` s for its cleanup (closing the HTTP
    request) before re-raising."""
    try:
        # A loop of short waits keeps the main thread responsive to SIGINT on every platform.
        while True:
            try:
                return fut.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                continue
    except BaseException:
        if not fut.done():
            fut.cancel()
            wait_cancelled(fut, cancel_grace)
        raise


def wait_cancelled(fut: concurrent.futures.Future[Any], grace: float) -> None:
    # run_coroutine_threadsafe marks the concurrent future cancelled at once; its task may still be
    # unwinding. A sentinel scheduled after the task's cancellation tells us the loop got past it.
    done = threading.Event()
    loop = getattr(fut, "_js_loop", None)
    if loop is None or loop.is_closed():
        return
    task = getattr(fut, "_js_task", None)

    def check() -> None:
        if task is None or task.done():
            done.set()
        else:
            loop.call_later(0.005, check)

    loop.call_soon_threadsafe(check)
    done.wait(grace)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, in a script, a thread or a notebook cell.

    >>> import asyncio
    >>> from jupyter_stream._runtime import run_sync
    >>> async def add(a, b):
    ...     await asyncio.sleep(0)
    ...     return a + b
    >>> run_sync(add(1, 2))
    3
    """
    bridged = bridge_loop.get()
    loop = bridged or engine_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # pragma: no cover - a programming error we want to name
        coro.close()
        raise RuntimeError("run_sync called on the loop it would wait for; use `await` here")
    obs = observer.current() if bridged is not None else None
    if obs is not None and obs.cancelled:
        coro.close()
        raise concurrent.futures.CancelledError()
    fut = _tracked(coro, loop)
    if obs is not None:
        obs.track(fut)
    return wait(fut)


def _tracked(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future[T]:
    """Like run_coroutine_threadsafe, but remembers the task so cancellation can wait for its cleanup."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()
    ctx = contextvars.copy_context()

    def start() -> None:
        if fut.cancelled():
            coro.close()
            return
        task = loop.create_task(coro, context=ctx)
        fut._js_task = task  # type: ignore[attr-defined]

        def done(t: asyncio.Task[T]) -> None:
            if fut.done():
                return
            if t.cancelled():
                fut.cancel()
            elif t.exception() is not None:
                fut.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(t.result())

        task.add_done_callback(done)

        def on_cancel(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled() and not task.done():
                loop.call_soon_threadsafe(task.cancel)

        fut.add_done_callback(on_cancel)

    fut._js_loop = loop  # type: ignore[attr-defined]
    loop.call_soon_threadsafe(start)
    return fut


def submit_tracked(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None = None) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on ``loop`` (default: bridge or engine loop); the future can be waited with :func:`wait`."""
    return _tracked(coro, loop or bridge_loop.get() or engine_loop())


async def run_in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a sync callable in a fresh daemon thread whose LM calls come back to this loop.

    Used for sync programs inside a stream. The thread carries this context (settings, the stream).
    If the awaiting task is cancelled, the thread's pending LM call is cancelled too, so the program
    unwinds at its next LM call instead of running on.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    result: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        def body() -> T:
            bridge_loop.set(loop)
            return fn(*args, **kwargs)

        try:
            value = ctx.run(body)
        except BaseException as e:  # noqa: BLE001 - delivered to the awaiting task
            loop.call_soon_threadsafe(_set_exc, result, e)
        else:
            loop.call_soon_threadsafe(_set_res, result, value)

    thread = threading.Thread(target=target, name="jupyter_stream-program", daemon=True)
    thread.start()
    try:
        return await result
    except asyncio.CancelledError:
        _cancel_bridge_calls(ctx)
        raise


def _set_res(f: asyncio.Future[Any], v: Any) -> None:
    if not f.done():
        f.set_result(v)


def _set_exc(f: asyncio.Future[Any], e: BaseException) -> None:
    if not f.done():
        f.set_exception(e)


def _cancel_bridge_calls(ctx: contextvars.Context) -> None:
    obs = ctx.run(observer.current)
    if obs is not None:
        obs.cancel_pending()
