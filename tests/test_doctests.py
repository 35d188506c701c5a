"""The docstring examples of the engine modules run and pass (the streaming ones on a loopback server)."""

from __future__ import annotations

import doctest
import importlib

import pytest

import jupyter_stream as js

MODULES = [
    "jupyter_stream",
    "jupyter_stream._exceptions",
    "jupyter_stream._signatures",
    "jupyter_stream._prediction",
    "jupyter_stream.settings",
    "jupyter_stream._callbacks",
    "jupyter_stream._lm",
    "jupyter_stream._program",
    "jupyter_stream._runtime",
    "jupyter_stream._observer",
    "jupyter_stream._programs",
    "jupyter_stream.adapters",
    "jupyter_stream.adapters.base",
    "jupyter_stream.adapters.chat",
    "jupyter_stream.adapters.json",
    "jupyter_stream.adapters.xml",
    "jupyter_stream.streaming.events",
    "jupyter_stream.streaming.status",
    "jupyter_stream.streaming.sse",
    "jupyter_stream.streaming.listener",
    "jupyter_stream.streaming.streamify",
    "jupyter_stream.streaming.stream",
    "jupyter_stream.streaming.once",
    "jupyter_stream._terminal",
    "jupyter_stream._variants",
    "jupyter_stream._worddiff",
    "jupyter_stream._compare",
    "jupyter_stream._compare_text",
    "jupyter_stream._runs",
    "jupyter_stream._recording",
    "jupyter_stream._diff",
    "jupyter_stream.demo",
    "jupyter_stream.demo.server",
    "jupyter_stream.demo.responder",
    "jupyter_stream.notebook.throttle",
]


@pytest.fixture(autouse=True)
def _clean_settings():
    js.configure(lm=None, adapter=None, callbacks=None)
    yield
    js.configure(lm=None, adapter=None, callbacks=None)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, report=True, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output)"
