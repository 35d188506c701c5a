"""Benchmark LM server: a DemoServer in its own process that answers every chat request with one fixed reply.

Run by :class:`ServerProcess` (``python benchmarks/_server.py``): the server prints its URL on stdout and
serves until its stdin closes (so it never outlives the benchmark). The reply is set from the benchmark
process with ``POST /v1/demo/bench_reply {"chunks": [...]}``: the exact content deltas, streamed as fast
as possible. The SSE bytes are built once per reply (``_prepare_reply``), not per request, so the server
spends its time writing, not formatting, and the client side is what gets measured.

Keeping the server in another process means it never competes with the client for the GIL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

__all__ = ["ServerProcess"]


def _serve() -> None:
    from jupyter_stream.demo.server import DemoServer, Reply, _dumps, _include_usage, _prepare_reply

    class BenchServer(DemoServer):
        """Every chat request gets a fixed reply (pre-built bytes), unless something is scripted.

        Several replies can be set at once, each with a ``match`` string: a request gets the first reply
        whose ``match`` occurs in one of its messages (``None`` matches anything). So variants that need
        different replies (one field, five fields, JSON) can run interleaved.
        """

        def __init__(self) -> None:
            super().__init__(token_rate=None)
            self._replies: list[tuple[str | None, list[str]]] = []
            self._prepared: dict[tuple[int, bool], Any] = {}

        def _choose(self, body: Any) -> int:
            if len(self._replies) == 1:
                return 0
            contents = [str(m.get("content", "")) for m in body.get("messages") or () if isinstance(m, dict)]
            for i, (match, _chunks) in enumerate(self._replies):
                if match is None or any(match in c for c in contents):
                    return i
            return len(self._replies) - 1

        def _prepare(self, item: Any, body: Any) -> Any:
            if item is None and self._replies:
                self.requests.clear()  # do not grow across thousands of requests
                i = self._choose(body)
                inc = _include_usage(body)
                prepared = self._prepared.get((i, inc))
                if prepared is None:
                    prepared = self._prepared[(i, inc)] = _prepare_reply(
                        Reply(chunks=self._replies[i][1]), body, cid="chatcmpl-bench", created=int(time.time()),
                        model=str(body.get("model") or "bench"), rate=None, chunk_chars=None,
                    )
                return prepared
            return super()._prepare(item, body)

        async def _control(self, conn: Any, req: Any, path: str) -> str:
            if path == "/demo/bench_reply" and req.method == "POST":
                doc = json.loads(req.body)
                replies = doc["replies"] if "replies" in doc else [{"match": None, "chunks": doc["chunks"]}]
                self._replies = [(r.get("match"), [str(c) for c in r["chunks"]]) for r in replies]
                self._prepared = {}
                body = _dumps({"deltas": [len(c) for _m, c in self._replies]})
                await self._send_json(conn, 200, body, keep_alive=req.keep_alive)
                return "keep"
            return await super()._control(conn, req, path)

    server = BenchServer().start()
    print(server.url, flush=True)
    try:
        sys.stdin.read()  # until the parent closes the pipe (or dies)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


class ServerProcess:
    """Start the benchmark server in a subprocess; ``set_reply(chunks)`` chooses what every request gets."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"the benchmark server did not start (got {line!r})")
        self.url = line
        return self

    def set_reply(self, chunks: list[str]) -> None:
        """Every request gets these content deltas."""
        self.set_replies([(None, chunks)])

    def set_replies(self, replies: list[tuple[str | None, list[str]]]) -> None:
        """``[(match, chunks)]``: a request gets the first reply whose ``match`` occurs in one of its messages."""
        doc = {"replies": [{"match": m, "chunks": c} for m, c in replies]}
        req = urllib.request.Request(
            self.url + "/demo/bench_reply", data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            got = json.loads(r.read())["deltas"]
        if got != [len(c) for _m, c in replies]:
            raise RuntimeError(f"the server took {got} deltas, expected {[len(c) for _m, c in replies]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


if __name__ == "__main__":
    _serve()
