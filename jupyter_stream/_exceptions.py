"""Every exception jupyter_stream raises, in one place.

The hierarchy::

    JupyterStreamError
    ├── UsageError (ValueError)          a mistake in how the library was called; raised before any request
    │   ├── SignatureError               a malformed signature string or class
    │   ├── InputError                   a missing, unknown or ill-typed input
    │   ├── ListenerError                a listener for a field no predictor (or several) has
    │   ├── ConfigurationError           no LM, an unknown adapter, a bad option value
    │   └── RecordingError               a recording file missing, malformed, truncated or of a newer schema
    └── StreamError (RuntimeError)       a failure while the program ran; carries what had arrived
        ├── LMError                      the model server failed: HTTP error, dropped connection, bad SSE
        ├── AdapterParseError            the reply could not be parsed into the output fields
        └── StreamTimeoutError (TimeoutError)   a timeout: whole call or the gap between two events

A ``StreamError`` never loses text: ``error.partial`` maps each output field of the failing
predictor to the text that had streamed for it, and ``error.raw`` holds the raw reply so far.

Example::

    >>> from jupyter_stream import StreamTimeoutError, StreamError
    >>> err = StreamTimeoutError("no event for 1.0 s (stream_timeout)", limit="stream_timeout",
    ...                          partial={"answer": "Paris is"})
    >>> isinstance(err, TimeoutError), isinstance(err, StreamError), err.partial["answer"]
    (True, True, 'Paris is')
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdapterParseError",
    "ConfigurationError",
    "InputError",
    "JupyterStreamError",
    "LMError",
    "ListenerError",
    "RecordingError",
    "SignatureError",
    "StreamError",
    "StreamTimeoutError",
    "UsageError",
]


class JupyterStreamError(Exception):
    """Base class of every error raised by jupyter_stream."""


class UsageError(JupyterStreamError, ValueError):
    """The library was called the wrong way. The message names the culprit and the fix."""


class SignatureError(UsageError):
    """A signature string or class is malformed (bad name, duplicate field, unknown type...)."""


class InputError(UsageError):
    """Inputs do not match the signature: missing, unknown or of the wrong type."""


class ListenerError(UsageError):
    """A stream listener names a field no predictor has, or one several predictors have."""


class ConfigurationError(UsageError):
    """Settings are missing or invalid: no LM, an unknown adapter, an invalid option value."""


class RecordingError(UsageError):
    """A recording cannot be read: the file is missing, a line is malformed, the file is truncated, or it was
    written with a newer schema version. The message names the file, the line and what is wrong."""


class StreamError(JupyterStreamError, RuntimeError):
    """A runtime failure while a program ran. Nothing that streamed is lost.

    Attributes:
        partial: each output field of the failing predictor mapped to the text received so far.
        raw: the raw reply text received so far (adapter markers included).
        predict_name: the name of the predictor whose call failed, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: dict[str, str] | None = None,
        raw: str = "",
        predict_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.partial: dict[str, str] = dict(partial or {})
        self.raw = raw
        self.predict_name = predict_name

    def fill_in(self, *, partial: dict[str, str], raw: str, predict_name: str | None) -> StreamError:
        """Fill in what had streamed when the error was raised below the place that knows it."""
        if not self.partial:
            self.partial = dict(partial)
        if not self.raw:
            self.raw = raw
        if self.predict_name is None:
            self.predict_name = predict_name
        return self


class LMError(StreamError):
    """The model server failed: an HTTP error status, a refused or dropped connection, a bad SSE line.

    Attributes:
        status_code: the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, message: str, *, status_code: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code


class AdapterParseError(StreamError):
    """The reply could not be parsed into the signature's output fields.

    Attributes:
        field: the field that was missing or invalid, when known.
    """

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field


class StreamTimeoutError(StreamError, TimeoutError):
    """A timeout expired. ``limit`` says which: ``"timeout"`` (the whole call) or ``"stream_timeout"``
    (the longest wait between two events)."""

    def __init__(self, message: str, *, limit: str, seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.limit = limit
        self.seconds = seconds
