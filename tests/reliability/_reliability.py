"""Shared by the reliability suite: sizes, and exact accounting of tasks, threads and sockets.

Sizes: every count is the CI size times ``$RELIABILITY_SCALE`` (default 1; ``benchmarks/soak.py`` runs the
same scenarios at full size).

Sockets are counted from ``/proc/self/fd`` and classified with ``/proc/self/net/tcp{,6}``: a TCP socket
of this process whose *remote* port is the demo server's is a client connection (the ``openai`` client's),
one whose *local* port is the server's is the server's end of a connection (the demo server runs in this
process). Keep-alive pools legitimately keep idle client connections open; :func:`pooled_idle` reads
how many the LM's clients hold, so a test can tell a pooled connection from a leaked one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest_asyncio

SCALE = float(os.environ.get("RELIABILITY_SCALE", "1") or "1")
ENGINE_THREAD = "jupyter_stream-engine"


def scaled(n: int) -> int:
    """``n`` times ``$RELIABILITY_SCALE``, at least 1."""
    return max(1, round(n * SCALE))


# ------------------------------------------------------------------------------------------ sockets

_LISTEN = "0A"
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def _socket_inodes() -> set[int]:
    out: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listdir (the listing's own fd, a socket closing on another thread)
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _tcp_table() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) for every TCP socket of the network namespace."""
    table: dict[int, tuple[int, int, str]] = {}
    for path in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            inode = int(cols[9])
            if inode:
                table[inode] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16), cols[3])
    return table


@dataclass(frozen=True)
class Sockets:
    """The sockets of this process, as seen from one server port."""

    total: int
    """Every socket fd (TCP, UDP, Unix: the event loops' self-pipes too)."""
    client: dict[int, str]
    """inode -> TCP state of each client connection to the server port."""
    server: int
    """Connections accepted by the server (its end), listening socket excluded."""
    listening: int

    @property
    def other(self) -> int:
        """Sockets that are neither end of a connection to the server (self-pipes, listening socket...)."""
        return self.total - len(self.client) - self.server

    def client_states(self) -> list[str]:
        return sorted(TCP_STATES.get(s, s) for s in self.client.values())


def sockets(port: int) -> Sockets:
    inodes = _socket_inodes()
    table = _tcp_table()
    client: dict[int, str] = {}
    server = listening = 0
    for inode in inodes:
        entry = table.get(inode)
        if entry is None:
            continue
        local, remote, state = entry
        if state == _LISTEN:
            listening += local == port
        elif remote == port:
            client[inode] = state
        elif local == port:
            server += 1
    return Sockets(total=len(inodes), client=client, server=server, listening=listening)


def pooled_idle(*lms: Any) -> int:
    """Idle keep-alive connections in the connection pools of these LMs' ``openai`` clients (all loops).

    Reads the client's transport pool (``httpcore`` ``AsyncConnectionPool.connections``); a client whose
    pool cannot be read counts as holding no idle connection, so the check stays strict.
    """
    n = 0
    for lm in lms:
        for client in list(getattr(lm, "_clients", {}).values()):
            pool = getattr(getattr(getattr(client, "_client", None), "_transport", None), "_pool", None)
            for conn in list(getattr(pool, "connections", ()) or ()):
                try:
                    n += bool(conn.is_idle())
                except Exception:  # noqa: BLE001
                    pass
    return n


def server_open(server: Any) -> int:
    return server.connections_opened - server.connections_closed


def settle_connections(server: Any, offset: int | None = None, timeout: float = 3.0) -> Sockets:
    """Wait until both ends agree: every client connection has its server end and vice versa.

    ``wait_idle`` covers streamed responses; a connection whose response ended normally is closed by the
    server a moment later. With ``offset`` (from :func:`baseline`) the server's counters must agree too.
    Returns the final socket picture (the last one seen, on timeout: the caller's asserts then say why).
    """
    assert server.wait_idle(timeout), "a streamed response was still in flight"
    deadline = time.monotonic() + timeout
    last = None
    while True:
        s = sockets(server.port)
        agreed = len(s.client) == s.server and (offset is None or server_open(server) - offset == len(s.client))
        if agreed and (offset is not None or last == (s, server_open(server))):
            return s
        if time.monotonic() > deadline:
            return s
        last = (s, server_open(server)) if agreed else None
        time.sleep(0.01)


def baseline(server: Any) -> tuple[Sockets, int]:
    """The settled socket picture and the offset of the server's open-connection counter against it
    (its counters may have been reset while keep-alive connections were open)."""
    s = settle_connections(server)
    return s, server_open(server) - len(s.client)


# ------------------------------------------------------------------------------------ tasks, threads


def threads() -> dict[int, str]:
    return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}


def new_threads(before: dict[int, str]) -> dict[int, str]:
    """Threads started since ``before`` and still alive, except the engine's one long-lived thread."""
    return {i: n for i, n in threads().items() if i not in before and n != ENGINE_THREAD}


async def settled_tasks(rounds: int = 8, collect: bool = True) -> set[asyncio.Task[Any]]:
    """The tasks of the running loop (but this one) once pending callbacks have run.

    ``collect``: collect garbage first. An async generator dropped without ``aclose()`` gets its ``aclose``
    scheduled as a task by the loop's finalizer hook; that must have happened (and finished) by now, so a
    generator kept alive only by a reference cycle cannot hide a task that would run later.
    """
    if collect:
        gc.collect()
    for _ in range(rounds):
        await asyncio.sleep(0)
    return asyncio.all_tasks() - {asyncio.current_task()}


def engine_tasks(collect: bool = True) -> set[asyncio.Task[Any]]:
    """The tasks of the engine loop (where sync streams run), once it has settled."""
    from jupyter_stream._runtime import engine_loop

    loop = engine_loop()

    async def probe() -> set[asyncio.Task[Any]]:
        return await settled_tasks(collect=collect)

    return asyncio.run_coroutine_threadsafe(probe(), loop).result(10)


def field_texts(events: Any) -> dict[str, str]:
    """Joined chunk text per field name (non-empty only), to compare with ``error.partial``."""
    out: dict[str, str] = {}
    from jupyter_stream import StreamResponse

    for ev in events:
        if isinstance(ev, StreamResponse) and ev.chunk:
            out[ev.signature_field_name] = out.get(ev.signature_field_name, "") + ev.chunk
    return out


# ------------------------------------------------------------------------------ a server in a process


_SERVE = r"""
import sys
from jupyter_stream.demo import DemoServer

class Server(DemoServer):
    def _next_script_item(self, model):
        self.requests.clear()  # thousands of requests: keep no record of them
        return super()._next_script_item(model)

server = Server(token_rate=None).start()
print(server.url, flush=True)
sys.stdin.read()  # serve until the parent closes our stdin (or dies)
server.stop()
"""


class RemoteServer:
    """A :class:`DemoServer` (automatic replies) in a child process, for load and memory measurements.

    Its allocations, threads and sockets stay out of this process, so what is counted here is the client
    alone.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://"), f"the demo server did not start: {self.url!r}"
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# ----------------------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture
async def close_pools(lm: Any) -> Any:
    """Close the fixture LM's keep-alive connections while this test's loop still runs.

    An LM's connections on a loop that has closed are never closed (see ``test_load``'s
    ``test_one_lm_across_event_loops_keeps_no_socket_per_loop``), so a test that leaves one pooled on its
    loop would leave the socket open for the rest of the session.
    """
    yield lm
    await lm.aclose()
