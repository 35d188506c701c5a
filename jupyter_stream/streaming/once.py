"""RunsOnce: what makes an object iterable once, with ``for`` or ``async for``, and stoppable.

:class:`~jupyter_stream.streaming.stream.Stream` and a comparison of variants share it: the subclass
provides ``_events()`` (an async generator); iterating starts it (``for`` through
:func:`~jupyter_stream.streaming.streamify.apply_sync_streaming`, on the engine loop), and ``close()`` or
``aclose()`` stops it. Only weak references to the running generators are kept: the consumer's loop owns
them, so leaving the loop (break, an exception in the body, KeyboardInterrupt) drops the last reference
and closes them. A strong reference here made a cycle (the generator's frame holds this object) that
kept the request streaming after a break until the end of the reply.

    >>> import asyncio
    >>> class Three(RunsOnce):
    ...     async def _events(self):
    ...         for n in range(3):
    ...             yield n
    >>> list(Three())
    [0, 1, 2]
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Generator
from typing import Any

from .._exceptions import UsageError
from .streamify import apply_sync_streaming

__all__ = ["RunsOnce"]


class RunsOnce:
    """Iterate once with ``for`` or ``async for``; ``close()``/``aclose()`` stop the iteration."""

    _once = "this stream runs once; make a new one to run it again"
    """The error when iterated twice (a subclass names itself and the fix)."""
    _agen: weakref.ref[Any] | None = None
    _sync: weakref.ref[Generator[Any, None, None]] | None = None

    def _events(self) -> AsyncIterator[Any]:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[Any]:
        self._start()
        agen = self._events()
        self._agen = weakref.ref(agen)
        return agen

    async def aclose(self) -> None:
        """Stop an iteration with ``async for``: cancel what runs, close its requests."""
        agen = self._agen() if self._agen is not None else None
        if agen is not None:
            await agen.aclose()

    def __iter__(self) -> Generator[Any, None, None]:
        self._start()
        agen = self._events()
        self._agen = weakref.ref(agen)
        gen = apply_sync_streaming(agen)
        self._sync = weakref.ref(gen)
        return gen

    def close(self) -> None:
        """Stop an iteration with ``for``: cancel what runs, close its requests."""
        gen = self._sync() if self._sync is not None else None
        if gen is not None:
            gen.close()

    @property
    def started(self) -> bool:
        """True once iteration has begun."""
        return self._agen is not None or self._sync is not None

    def _start(self) -> None:
        if self.started:
            raise UsageError(self._once)
