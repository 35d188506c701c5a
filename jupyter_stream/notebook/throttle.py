"""Throttle: when a widget's next message may go out, and the one timer for a message that must wait.

A widget sink sends its batched deltas no more often than every ``interval`` seconds and never more than
``max_per_s`` widget messages in any second (its own batches and every trait update alike, counted from the
widget's running total). What is due is the sink's business; the throttle answers how long it must still
wait, and arms a trailing call so the end of a burst is not held back:

    >>> fired = []
    >>> sent = iter(range(100))
    >>> t = Throttle(lambda: fired.append(True), lambda: next(sent), interval=0.1, max_per_s=25, timer="none",
    ...              budget=MessageBudget())
    >>> t.wait(1000.0, ready_in=0.0)   # no flush yet: go now
    0.0
    >>> t.flushed(1000.0)
    >>> round(t.wait(1000.04, ready_in=0.0), 3)   # 40 ms after a flush: 60 ms to wait
    0.06
    >>> round(t.wait(1000.04, ready_in=0.2), 3)   # the content itself is due later
    0.2

The trailing call runs on the running asyncio loop (``loop.call_later``) or, where no loop runs (a sink fed
from a blocking loop in a cell), on a ``threading.Timer``; ``timer="none"`` arms nothing.

Every throttle of the process also shares one :class:`MessageBudget`: the kernel's messages to all its widgets
together, ``per_s`` a second (30 by default), spaced evenly. The browser handles each message of each widget on its
one main thread, so 20 widgets at 25 messages a second each (500 a second) cost it more than the text does. A
throttle whose own limits let a flush go books the budget's next free slot and waits for it (its trailing call
fires then); it books again only once that flush went out, so widgets that all have something to send take turns
(each gets ``per_s / n`` of n busy widgets' messages a second; a lone widget keeps its own rate up to ``per_s``):

    >>> b = MessageBudget(per_s=10, burst=2)
    >>> [round(b.reserve(5.0) - 5.0, 2) for _ in range(4)]   # two at once (the burst), then 0.1 s apart
    [0.0, 0.0, 0.1, 0.2]
    >>> b.charge(5.0, 3)                                     # three trait updates sent meanwhile
    >>> round(b.reserve(5.0) - 5.0, 2)                       # the next flush waits for them too
    0.6
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MessageBudget", "Throttle"]

TIMERS = ("auto", "thread", "none")


class MessageBudget:
    """The messages a kernel may send to all its widgets together: ``per_s`` a second, evenly spaced, with up to
    ``burst`` at once after a quiet spell.

    One slot is booked per flush (:meth:`reserve`, in the order asked: the widgets waiting take turns) and every
    other message is counted once sent (:meth:`charge`: trait updates, snapshots, forced flushes), so those push the
    next slots back rather than wait. The times are those of the throttles' clock (``time.monotonic`` for the
    process-wide budget, :meth:`shared`); thread-safe.
    """

    def __init__(self, per_s: float = 30.0, *, burst: int = 10) -> None:
        self.per_s = float(per_s)
        self.burst = max(1, int(burst))
        self._lock = threading.Lock()
        self._next = float("-inf")  # when the budget has spent everything booked so far (its theoretical time)

    _shared: MessageBudget | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> MessageBudget:
        """The process-wide budget every widget sink with the default clock uses (set its ``per_s`` to change it;
        ``per_s <= 0``: no kernel-wide limit)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _step(self) -> float:
        return 1.0 / self.per_s if self.per_s > 0 else 0.0

    def reserve(self, now: float) -> float:
        """Book the next free slot for one message: the time (>= ``now``) it may go out."""
        with self._lock:
            step = self._step()
            at = max(now, self._next - (self.burst - 1) * step)
            self._next = max(self._next, at) + step
            return at

    def charge(self, now: float, n: int = 1) -> None:
        """Count ``n`` messages sent at ``now`` without a slot."""
        if n > 0:
            with self._lock:
                self._next = max(self._next, now) + n * self._step()

    def reset(self) -> None:
        """Forget every booking (tests)."""
        with self._lock:
            self._next = float("-inf")


class Throttle:
    """The rate limits of one widget's messages and the trailing call that sends what waited.

    ``fire`` is called (with no argument, on the loop or the timer's thread) when an armed wait is over; it
    should take its owner's lock and :meth:`disarm` first (a call armed meanwhile is then re-decided);
    ``messages_sent`` returns the widget's total of messages so far, whoever sent them. ``budget``: the
    kernel-wide :class:`MessageBudget` (default: :meth:`MessageBudget.shared` with the default clock, a budget of
    this throttle's own with any other clock, whose times cannot be compared with the shared one's).
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
        budget: MessageBudget | None = None,
    ) -> None:
        if timer not in TIMERS:
            raise ValueError(f"timer must be 'auto', 'thread' or 'none', not {timer!r}")
        self.interval = max(0.0, float(interval))
        self.max_per_s = max(1, int(max_per_s))
        self.timer = timer
        self._fire = fire
        self._messages_sent = messages_sent
        self._clock = clock
        if budget is None:
            budget = MessageBudget.shared() if clock is time.monotonic else MessageBudget()
        self.budget = budget
        self._slot: float | None = None  # the budget's slot booked for the next flush
        self._prepaid = 0  # messages of the last flush its slot paid for
        self._handle: Any = None  # the armed asyncio.TimerHandle or threading.Timer
        self._due_at = 0.0
        self.restart()

    def restart(self) -> None:
        """Forget the past (a new stream on the same widget): no flush yet, an empty one-second window."""
        self.disarm()
        self._slot = None
        self._prepaid = 0
        self._last_flush = float("-inf")
        # Send times (our clock) of the widget's last max_per_s messages.
        self._sent: collections.deque[float] = collections.deque(maxlen=self.max_per_s)
        self._sent_total = self._messages_sent()

    def note_sent(self, now: float) -> None:
        """Count the widget messages sent since the last call (ours or not) as sent at ``now``."""
        total = self._messages_sent()
        new = total - self._sent_total
        for _ in range(min(new, self.max_per_s)):
            self._sent.append(now)
        self._sent_total = total
        self.budget.charge(now, new - self._prepaid)  # the rest of the flush's messages (and any other)
        self._prepaid = 0

    def flushed(self, now: float) -> None:
        """A flush went out at ``now``: the next one waits ``interval`` (and books a new slot); the slot this one
        booked, if any, pays for its first message."""
        self._last_flush = now
        if self._slot is not None:
            self._slot = None
            self._prepaid = 1

    def wait(self, now: float, *, ready_in: float) -> float:
        """Seconds until a flush may go out (<= 0: now), given that its content is ready in ``ready_in``."""
        wait = max(ready_in, self.interval - (now - self._last_flush))
        if wait <= 0:
            self.note_sent(now)
            if len(self._sent) >= self.max_per_s:
                wait = self._sent[0] + 1.0 - now
        if wait <= 0 and self._slot is None:  # our own limits let it go: book the kernel's next free slot
            self._slot = self.budget.reserve(now)
        if self._slot is not None:
            wait = max(wait, self._slot - now)
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
