"""DSPy programs streamed through jupyter_stream, with the real ``dspy`` package.

Run in every environment that has DSPy (``make test`` runs them on DSPy 3.4 in ``.venv`` and on the
oldest supported 3.0 in ``.venv-dspy30``). Where DSPy is missing they skip, except when
``JS_REQUIRE_DSPY=1`` (as CI sets): then a missing DSPy fails.
"""

from __future__ import annotations

import os
import tempfile

import pytest

# litellm (DSPy 3.0-3.3) fetches a model price list from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# DSPy's disk cache lives in the home folder and is shared by every DSPy version: each run gets its own.
os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="js-dspy-cache-")

if os.environ.get("JS_REQUIRE_DSPY") == "1":
    import dspy  # noqa: F401 - a missing DSPy is a failure here
else:
    dspy = pytest.importorskip("dspy")

import jupyter_stream as js  # noqa: E402


@pytest.fixture
def dlm(server):
    """An uncached ``dspy.LM`` on the loopback demo server, configured for the test."""
    server.reset()
    lm = dspy.LM("openai/test-model", api_base=server.url, api_key="sk-test-SECRET-key-123", cache=False, num_retries=0)
    with dspy.context(lm=lm, adapter=None):
        yield lm
    assert server.wait_idle(5.0), "a streamed response was still in flight after the test"


def fields_by_call(events) -> dict[tuple[str, int, str], str]:
    """Join the chunks of each ``(predict_name, call_id, field)``."""
    out: dict[tuple[str, int, str], str] = {}
    for ev in events:
        if isinstance(ev, js.StreamResponse):
            key = (ev.predict_name, ev.call_id, ev.signature_field_name)
            out[key] = out.get(key, "") + ev.chunk
    return out


def last_counts(events) -> dict[tuple[str, int, str], int]:
    out: dict[tuple[str, int, str], int] = {}
    for ev in events:
        if isinstance(ev, js.StreamResponse):
            key = (ev.predict_name, ev.call_id, ev.signature_field_name)
            out[key] = out.get(key, 0) + int(ev.is_last_chunk)
    return out
