"""Shared fixtures: a real loopback OpenAI-compatible server and an LM pointed at it.

Every test that streams talks HTTP + SSE to :class:`jupyter_stream.demo.DemoServer` through the real
``openai`` client; replies are scripted strings, synthesized chunk lists in providers' shapes (``tests/fixtures``) or faults.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import jupyter_stream as js
from jupyter_stream.demo import DemoServer

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict:
    """A chunk list in a provider's shape (synthesized by ``tests/fixtures/make_fixtures.py``): ``{"reply": full text, "reasoning": ..., "chunks": [chunk dicts]}``."""
    return json.loads((FIXTURES / name).read_text("utf-8"))


@pytest.fixture(scope="module")
def ip():
    """IPython's test shell with ``%load_ext jupyter_stream`` (for ``run_cell_magic``)."""
    globalipapp = pytest.importorskip("IPython.testing.globalipapp")
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "jupyter_stream")
    return shell


@pytest.fixture(scope="session")
def server():
    """One demo server for the session (reset before each test by ``lm``)."""
    srv = DemoServer(token_rate=None).start()
    yield srv
    srv.stop()


@pytest.fixture
def lm(server):
    """An uncached LM on the loopback server, configured for the test and reset after it."""
    server.reset()
    model = js.LM("test-model", base_url=server.url, api_key="sk-test-SECRET-key-123", cache=False, num_retries=0)
    js.configure(lm=model, adapter=None, callbacks=None)
    yield model
    js.configure(lm=None, adapter=None, callbacks=None)
    model.close()  # pooled keep-alive connections must not close during the next test
    assert server.wait_idle(5.0), "a streamed response was still in flight after the test"
    deadline = time.monotonic() + 2.0
    while server.connections_closed < server.connections_opened and time.monotonic() < deadline:
        time.sleep(0.005)


def collect_fields(events) -> dict[str, str]:
    """Join the chunks of each ``predict_name.field`` of a list of events."""
    out: dict[str, str] = {}
    for ev in events:
        if isinstance(ev, js.StreamResponse):
            key = f"{ev.predict_name}.{ev.signature_field_name}"
            out[key] = out.get(key, "") + ev.chunk
    return out


def last_flags(events) -> dict[str, int]:
    """How many chunks of each ``predict_name.field`` had ``is_last_chunk=True``."""
    out: dict[str, int] = {}
    for ev in events:
        if isinstance(ev, js.StreamResponse):
            key = f"{ev.predict_name}.{ev.signature_field_name}"
            out[key] = out.get(key, 0) + int(ev.is_last_chunk)
    return out
