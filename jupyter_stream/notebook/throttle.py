"""Throttle: when a widget's next message may go out, and the one timer for a message that must wait.

A widget sink sends its batched deltas no more often than every ``interval`` seconds and never more than
``max_per_s`` widget messages in any second (its own batches and every trait update alike, counted from the
widget's running total). What is due is the sink's business; the throttle answers how long it must still
wait, and arms a trailing call so the end of a burst is not held back:

    >>> fired = []
    >>> sent = iter(range(100))
    >>> t = Throttle(lambda: fired.append(True), lambda: next(sent), interval=0.1, max_per_s=25, timer="none")
    >>> t.wait(1000.0, ready_in=0.0)   # no flush yet: go now
    0.0
    >>> t.flushed(1000.0)
    >>> round(t.wait(1000.04, ready_in=0.0), 3)   # 40 ms after a flush: 60 ms to wait
    0.06
    >>> round(t.wait(1000.04, ready_in=0.2), 3)   # the content itself is due later
    0.2

The trailing call runs on the running asyncio loop (``loop.call_later``) or, where no loop runs (a sink fed
from a blocking loop in a cell), on a ``threading.Timer``; ``timer="none"`` arms nothing.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Throttle"]

TIMERS = ("auto", "thread", "none")


class Throttle:
    """The rate limits of one widget's messages and the trailing call that sends what waited.

    ``fire`` is called (with no argument, on the loop or the timer's thread) when an armed wait is over; it
    should take its owner's lock and :meth:`disarm` first (a call armed meanwhile is then re-decided);
    ``messages_sent`` returns the widget's total of messages so far, whoever sent them.
    """

    def __init__(
        self,
        fire: Callable[[], None],
        messages_sent: Callable[[], int],
        *,
        interval: float,
        max_per_s: int,
        timer: str = "auto",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timer not in TIMERS:
            raise ValueError(f"timer must be 'auto', 'thread' or 'none', not {timer!r}")
        self.interval = max(0.0, float(interval))
        self.max_per_s = max(1, int(max_per_s))
        self.timer = timer
        self._fire = fire
        self._messages_sent = messages_sent
        self._clock = clock
        self._handle: Any = None  # the armed asyncio.TimerHandle or threading.Timer
        self._due_at = 0.0
        self.restart()

    def restart(self) -> None:
        """Forget the past (a new stream on the same widget): no flush yet, an empty one-second window."""
        self.disarm()
        self._last_flush = float("-inf")
        # Send times (our clock) of the widget's last max_per_s messages.
        self._sent: collections.deque[float] = collections.deque(maxlen=self.max_per_s)
        self._sent_total = self._messages_sent()

    def note_sent(self, now: float) -> None:
        """Count the widget messages sent since the last call (ours or not) as sent at ``now``."""
        total = self._messages_sent()
        for _ in range(min(total - self._sent_total, self.max_per_s)):
            self._sent.append(now)
        self._sent_total = total

    def flushed(self, now: float) -> None:
        """A flush went out at ``now``: the next one waits ``interval``."""
        self._last_flush = now

    def wait(self, now: float, *, ready_in: float) -> float:
        """Seconds until a flush may go out (<= 0: now), given that its content is ready in ``ready_in``."""
        wait = max(ready_in, self.interval - (now - self._last_flush))
        if wait <= 0:
            self.note_sent(now)
            if len(self._sent) >= self.max_per_s:
                wait = self._sent[0] + 1.0 - now
        return wait

    @property
    def armed(self) -> str | None:
        """Where the waiting trailing call will run: ``"loop"``, ``"thread"``, or None when none waits."""
        if self._handle is None:
            return None
        return "thread" if isinstance(self._handle, threading.Timer) else "loop"

    def arm(self, delay: float, *, unless_sooner: bool = False) -> None:
        """Call ``fire`` in ``delay`` seconds (replacing a waiting call). ``unless_sooner``: keep a waiting
        call that is due no later than this one would be."""
        if self.timer == "none":
            return
        delay = max(0.0, delay)
        due = self._clock() + delay
        if unless_sooner and self._handle is not None and self._due_at <= due + 0.001:
            return
        self.disarm()
        self._due_at = due
        if self.timer == "auto":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._handle = loop.call_later(delay, self._fire)
                return
        timer = threading.Timer(delay, self._fire)
        timer.daemon = True
        self._handle = timer
        timer.start()

    def disarm(self) -> None:
        """Cancel the waiting call, if any."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
