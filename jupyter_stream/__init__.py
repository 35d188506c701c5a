"""jupyter_stream: watch a language model program think, field by field, token by token.

    >>> import jupyter_stream as js
    >>> program = js.ChainOfThought("question -> answer")
    >>> [name for name, _ in program.named_predictors()]
    ['predict']

In IPython or Jupyter, ``%load_ext jupyter_stream`` adds the ``%%stream`` cell magic.
"""

from __future__ import annotations

from . import settings
from ._exceptions import (
    AdapterParseError,
    ConfigurationError,
    InputError,
    JupyterStreamError,
    ListenerError,
    LMError,
    RecordingError,
    SignatureError,
    StreamError,
    StreamTimeoutError,
    UsageError,
)
from .adapters import Adapter, ChatAdapter, JSONAdapter, XMLAdapter
from ._callbacks import BaseCallback
from ._compare import CompareResult, Comparison, VariantDone, VariantEvent, acompare, compare
from ._lm import LM
from ._prediction import Prediction
from ._program import ChainOfThought, Module, Predict, Tool
from .settings import configure, context
from ._signatures import InputField, OutputField, Signature
from ._terminal import TextRenderer
from ._runs import Run, runs
from ._recording import Replay, record, replay
from ._recording import load as load_recording
from ._diff import diff
from .streaming import (
    LMRequest,
    LMResponse,
    StatusMessage,
    StatusMessageProvider,
    Stream,
    StreamListener,
    StreamResponse,
    apply_sync_streaming,
    stream,
    streaming_response,
    streamify,
)

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "AdapterParseError",
    "BaseCallback",
    "ChainOfThought",
    "ChatAdapter",
    "CompareResult",
    "Comparison",
    "ConfigurationError",
    "InputError",
    "InputField",
    "JSONAdapter",
    "JupyterStreamError",
    "LM",
    "LMError",
    "LMRequest",
    "LMResponse",
    "ListenerError",
    "Module",
    "OutputField",
    "Predict",
    "Prediction",
    "RecordingError",
    "Replay",
    "Run",
    "Signature",
    "SignatureError",
    "StatusMessage",
    "StatusMessageProvider",
    "Stream",
    "StreamError",
    "StreamListener",
    "StreamResponse",
    "StreamTimeoutError",
    "TextRenderer",
    "Tool",
    "UsageError",
    "VariantDone",
    "VariantEvent",
    "XMLAdapter",
    "acompare",
    "apply_sync_streaming",
    "asgi_app",
    "compare",
    "configure",
    "context",
    "diff",
    "load_ipython_extension",
    "load_recording",
    "record",
    "replay",
    "runs",
    "settings",
    "show",
    "stream",
    "streamify",
    "streaming_response",
]


def show(source, /, **kwargs):  # pragma: no cover - exercised in a real kernel
    """Display the live widget for a program, stream or streamified callable: ``js.show(program, question=...)``.

    The notebook layer is imported only when this is called, so the engine stays free of IPython.
    """
    from .notebook.show import show as _show

    return _show(source, **kwargs)


def asgi_app(program, /, **kwargs):
    """An ASGI app serving ``program``'s fields as Server-Sent Events (``POST /stream``, ``GET /stream``,
    ``POST /predict``, a page at ``/``): ``js.asgi_app(program, max_concurrency=32, token=None,
    cors_origins=(), keep_runs=False)``. Needs ``pip install 'jupyter_stream[serve]'``; the README's serve section has the routes and options.
    """
    try:
        from ._serve import asgi_app as _asgi_app
    except ImportError as e:  # starlette is the [serve] extra
        raise ConfigurationError(f"asgi_app needs Starlette: pip install 'jupyter_stream[serve]' ({e})") from None
    return _asgi_app(program, **kwargs)


def load_ipython_extension(ipython):  # pragma: no cover - exercised in a real kernel
    """``%load_ext jupyter_stream``: register the ``%%stream`` magic (the notebook layer loads lazily)."""
    from .notebook.magic import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    """``%unload_ext jupyter_stream``."""
    from .notebook.magic import unload_ipython_extension as _unload

    _unload(ipython)
