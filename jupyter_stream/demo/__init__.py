"""The demo LM: an OpenAI-compatible streaming chat server on loopback, for the demo notebook and the tests.

It speaks real HTTP and SSE, so the ``openai`` client (and everything built on it) talks to it exactly as to a
hosted model. Replies are scripted (:meth:`DemoServer.script`) or written by the automatic responder, which
answers any signature in the chat, XML or JSON format its prompt asks for.

Example::

    >>> from openai import AsyncOpenAI
    >>> from jupyter_stream.demo import DemoServer, Reply, Fault
    >>> server = DemoServer(token_rate=None).start()
    >>> server.script("Hello!", Reply(content="Paris", reasoning="France's capital."), Fault("status", status=429))
    >>> client = AsyncOpenAI(base_url=server.url, api_key="demo")  # then stream as from any model
    >>> server.stop()

From a shell: ``python -m jupyter_stream.demo --port 8765 --rate 150``.
"""

from .responder import auto_reply, chunk_text, tokenize
from .server import (
    DEFAULT_TOKEN_RATE,
    DemoServer,
    Fault,
    Reply,
    default_token_rate,
    serve_forever,
    shared_server,
)

__all__ = [
    "DEFAULT_TOKEN_RATE",
    "DemoServer",
    "Fault",
    "Reply",
    "auto_reply",
    "chunk_text",
    "default_token_rate",
    "serve_forever",
    "shared_server",
    "tokenize",
]
