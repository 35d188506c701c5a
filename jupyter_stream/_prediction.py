"""Prediction: the output fields of a program call.

Example::

    >>> from jupyter_stream import Prediction
    >>> p = Prediction(reasoning="Capital of France.", answer="Paris")
    >>> p.answer, p["answer"], list(p.keys())
    ('Paris', 'Paris', ['reasoning', 'answer'])
    >>> p.to_dict()
    {'reasoning': 'Capital of France.', 'answer': 'Paris'}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Prediction", "is_prediction"]


def is_prediction(value: Any) -> bool:
    """True for a program's result: our :class:`Prediction`, or any object that holds its fields as a
    mapping (``items()`` and ``keys()``), such as DSPy's ``dspy.Prediction``. Plain dicts are not (in a
    stream they are raw chunks).

    >>> is_prediction(Prediction(answer="Paris")), is_prediction({"answer": "Paris"}), is_prediction("Paris")
    (True, False, False)
    """
    if isinstance(value, Prediction):
        return True
    if isinstance(value, (Mapping, type)):
        return False
    return callable(getattr(value, "items", None)) and callable(getattr(value, "keys", None))


class Prediction:
    """The fields a program produced, with attribute and item access, plus token usage."""

    __slots__ = ("_store", "_lm_usage", "__weakref__")

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "_store", dict(fields))
        object.__setattr__(self, "_lm_usage", {})

    @classmethod
    def from_dict(cls, fields: dict[str, Any], *, usage: dict[str, Any] | None = None) -> Prediction:
        """A prediction holding ``fields`` (and the LM ``usage`` per model, if known)."""
        p = cls(**fields)
        if usage:
            object.__setattr__(p, "_lm_usage", dict(usage))
        return p

    def __getattr__(self, name: str) -> Any:
        if name in ("_store", "_lm_usage") or (name.startswith("__") and name.endswith("__")):
            # Not a field: an unset slot (an instance made by __new__, mid-unpickling) or a protocol probe.
            raise AttributeError(name)
        try:
            return self._store[name]
        except KeyError:
            raise AttributeError(
                f"Prediction has no field {name!r}; its fields are {list(self._store)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._store[name] = value

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prediction):
            return self._store == other._store
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def keys(self, include_dspy: bool = False) -> list[str]:  # noqa: ARG002 - DSPy's signature
        """The field names, in order."""
        return list(self._store)

    def values(self, include_dspy: bool = False) -> list[Any]:  # noqa: ARG002
        """The field values, in order."""
        return list(self._store.values())

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:  # noqa: ARG002
        """``(name, value)`` pairs, in order."""
        return list(self._store.items())

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._store.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (a copy)."""
        return dict(self._store)

    def get_lm_usage(self) -> dict[str, Any]:
        """Token usage of the LM calls that made this prediction, keyed by model name."""
        return dict(self._lm_usage)

    def __repr__(self) -> str:
        body = ",\n".join(f"    {k}={v!r}" for k, v in self._store.items())
        return f"Prediction(\n{body}\n)" if body else "Prediction()"

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self._store, "usage": self._lm_usage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_store", state["store"])
        object.__setattr__(self, "_lm_usage", state["usage"])
