"""Adapters: each owns its prompt format, its whole-reply parse and its incremental field parser.

``get_adapter`` turns a name (``"chat"``, ``"json"``, ``"xml"``, any case) or an :class:`Adapter`
instance into an adapter::

    >>> from jupyter_stream.adapters import get_adapter
    >>> get_adapter("JSON"), get_adapter("chat").name
    (JSONAdapter(), 'chat')
"""

from __future__ import annotations

from typing import Any

from .._exceptions import ConfigurationError
from .base import Adapter, FieldDelta, FieldParser, coerce_value
from .chat import ChatAdapter
from .json import JSONAdapter
from .xml import XMLAdapter

__all__ = [
    "Adapter",
    "ChatAdapter",
    "FieldDelta",
    "FieldParser",
    "JSONAdapter",
    "XMLAdapter",
    "coerce_value",
    "get_adapter",
]

_BY_NAME: dict[str, type[Adapter]] = {"chat": ChatAdapter, "json": JSONAdapter, "xml": XMLAdapter}


def get_adapter(name_or_adapter: str | Adapter | Any) -> Adapter:
    """An adapter instance for ``"chat"``, ``"json"`` or ``"xml"`` (any case), or the instance given.

    Raises :class:`ConfigurationError` for anything else.
    """
    if isinstance(name_or_adapter, Adapter):
        return name_or_adapter
    if isinstance(name_or_adapter, str):
        cls = _BY_NAME.get(name_or_adapter.strip().lower())
        if cls is not None:
            return cls()
    raise ConfigurationError(
        f"unknown adapter {name_or_adapter!r}; use 'chat', 'json', 'xml' or an Adapter instance"
    )
