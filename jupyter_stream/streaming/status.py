"""StatusMessageProvider: the texts of the status messages a stream yields.

Override a hook to return a string (yielded as a :class:`StatusMessage`) or ``None`` (nothing).

Example::

    >>> import jupyter_stream as js
    >>> class Verbose(js.StatusMessageProvider):
    ...     def lm_start_status_message(self, instance, inputs):
    ...         return f"Asking {instance.model}..."
    >>> Verbose().lm_start_status_message(js.LM("gpt-4o-mini", api_key="k"), {})
    'Asking gpt-4o-mini...'
    >>> js.StatusMessageProvider().tool_start_status_message(js.Tool(print, name="search"), {})
    'Calling tool search...'
"""

from __future__ import annotations

from typing import Any

__all__ = ["StatusMessageProvider"]


class StatusMessageProvider:
    """DSPy's six status hooks with DSPy's default texts."""

    def tool_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before a :class:`~jupyter_stream.Tool` runs."""
        return f"Calling tool {instance.name}..."

    def tool_end_status_message(self, outputs: Any) -> str | None:
        """After a tool returned."""
        return "Tool calling finished! Querying the LLM with tool calling results..."

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before a Module or Predict runs (default: nothing)."""
        return None

    def module_end_status_message(self, outputs: Any) -> str | None:
        """After a Module or Predict returned (default: nothing)."""
        return None

    def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        """Before an LM call (default: nothing)."""
        return None

    def lm_end_status_message(self, outputs: Any) -> str | None:
        """After an LM call (default: nothing)."""
        return None
