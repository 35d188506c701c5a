"""The LM used when none is configured: the embedded demo server, with a one-line notice.

With no ``lm`` configured and no ``OPENAI_API_KEY`` in the environment, programs run on the demo LM
so that everything works out of the box. With a key but no LM, that is a configuration mistake and
:class:`~jupyter_stream.ConfigurationError` says how to fix it.
"""

from __future__ import annotations

import os
import sys
import threading

from .._exceptions import ConfigurationError

__all__ = ["demo_lm"]

_lm = None
_lock = threading.Lock()

NOTICE = (
    "jupyter_stream: no LM configured and no OPENAI_API_KEY set, so the built-in demo LM is answering. "
    "Use a real model with jupyter_stream.configure(lm=jupyter_stream.LM('openai/gpt-4o-mini'))."
)


def demo_lm():  # -> LM
    """The process-wide demo LM (starting the demo server on first use)."""
    global _lm
    if os.environ.get("OPENAI_API_KEY"):
        raise ConfigurationError(
            "no LM configured: call jupyter_stream.configure(lm=jupyter_stream.LM('openai/gpt-4o-mini')) "
            "(OPENAI_API_KEY is set, so the demo LM is not used)"
        )
    with _lock:
        if _lm is None:
            from .._lm import LM
            from .server import shared_server

            server = shared_server()
            _lm = LM("demo", base_url=server.url, api_key="demo", cache=False)
            print(NOTICE, file=sys.stderr)
        return _lm
