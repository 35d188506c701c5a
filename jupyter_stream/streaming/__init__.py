"""The streaming API, with DSPy's names: ``streamify``, ``StreamListener``, ``StreamResponse``,
``StatusMessage``, ``StatusMessageProvider``, ``apply_sync_streaming``, ``streaming_response``, plus
the lazy per-predictor ``stream()``."""

from .events import LMRequest, LMResponse, StatusMessage, StreamResponse
from .listener import StreamListener
from .sse import streaming_response
from .status import StatusMessageProvider
from .stream import Stream, stream
from .streamify import apply_sync_streaming, streamify

__all__ = [
    "LMRequest",
    "LMResponse",
    "StatusMessage",
    "StatusMessageProvider",
    "Stream",
    "StreamListener",
    "StreamResponse",
    "apply_sync_streaming",
    "stream",
    "streamify",
    "streaming_response",
]
