"""What an adapter is: the three duties every adapter owns.

An adapter turns a signature and inputs into chat messages (:meth:`Adapter.format`), turns a whole reply
back into typed output values (:meth:`Adapter.parse`), and makes an incremental field parser
(:meth:`Adapter.field_parser`) that is fed raw content deltas of any size and emits
``FieldDelta(field, text, last)`` values. The streaming engine relies on nothing else, so a third-party
adapter streams by implementing these three methods.

The contract between the last two, for every ``str`` output field and any split of a reply into deltas::

    "".join(d.text for d in all_deltas if d.field == name) == adapter.parse(signature, reply)[name]

and for every field that opened, exactly one delta has ``last=True`` (``finish()`` closes open fields).

Example::

    >>> from jupyter_stream import ChatAdapter, Signature
    >>> sig = Signature("question -> answer")
    >>> parser = ChatAdapter().field_parser(sig)
    >>> out = parser.feed("[[ ## answer ## ]]\\nPar") + parser.feed("is\\n\\n[[ ## completed ## ]]") + parser.finish()
    >>> "".join(d.text for d in out), [d.last for d in out][-1]
    ('Paris', True)
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pydantic

from .._exceptions import AdapterParseError
from .._signatures import Field, Signature

__all__ = ["Adapter", "FieldDelta", "FieldParser", "Message", "Turn", "coerce_value", "partial_fields"]

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

Turn = tuple[Mapping[str, Any], Mapping[str, Any]]
"""One earlier exchange: ``(inputs, outputs)``, used for demos and multi-turn history."""


class FieldDelta(NamedTuple):
    """A piece of one output field's text, as the incremental parser found it."""

    field: str
    """The output field's name."""
    text: str
    """The new text (may be empty on the closing delta)."""
    last: bool = False
    """True on the one delta that closes the field."""


class FieldParser(ABC):
    """Incremental field parser: fed raw content deltas, emits field deltas.

    Implementations do O(1) amortised work per character: they keep a small state machine and a
    bounded hold-back buffer, and never re-join or re-scan text they have already passed on.
    """

    @abstractmethod
    def feed(self, text: str) -> list[FieldDelta]:
        """Take the next raw content delta (any size, possibly empty) and return the field deltas it completes."""

    @abstractmethod
    def finish(self) -> list[FieldDelta]:
        """The reply ended: flush held-back text and close every open field (one ``last=True`` each)."""

    def passthrough(self, text: str) -> str | None:
        """The open field's name if ``feed(text)`` would be exactly ``[FieldDelta(name, text, False)]``.

        The per-token fast path: most deltas are plain text inside a field that has begun, and a
        parser that can tell so cheaply lets the caller skip building the list. When it returns a name,
        the caller must NOT call ``feed(text)`` (the text counts as fed); ``None`` means "call feed".
        The default always answers ``None``.
        """
        return None


class Adapter(ABC):
    """Formats prompts, parses replies, and streams fields, for one reply format."""

    name: str = "adapter"

    @abstractmethod
    def format(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        *,
        demos: Sequence[Turn] = (),
        history: Sequence[Turn] = (),
    ) -> list[Message]:
        """The chat messages asking the model to fill ``signature``'s outputs from ``inputs``."""

    @abstractmethod
    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """The typed output values found in a whole reply. Raises :class:`AdapterParseError`."""

    @abstractmethod
    def field_parser(self, signature: type[Signature]) -> FieldParser:
        """A new incremental parser for one reply to ``signature``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def coerce_value(field: Field, value: Any, *, from_json: bool = False) -> Any:
    """Turn a parsed value (text, or a JSON value when ``from_json``) into the field's declared type.

    Raises :class:`AdapterParseError` naming the field and the expected type.
    """
    ann = field.annotation
    if ann is str:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    try:
        ta = _ADAPTERS.get(ann)
        if ta is None:
            ta = _ADAPTERS[ann] = pydantic.TypeAdapter(ann)
        if isinstance(value, str) and not from_json:
            text = value.strip()
            try:
                return ta.validate_json(text)
            except pydantic.ValidationError:
                return ta.validate_python(text)
        return ta.validate_python(value)
    except (pydantic.ValidationError, TypeError, ValueError) as e:
        shown = value if len(str(value)) < 200 else str(value)[:200] + "..."
        raise AdapterParseError(
            f"the model's value for field {field.name!r} is not a valid {field.type_name()}: {shown!r}",
            field=field.name,
        ) from e


def partial_fields(adapter: Adapter, signature: type[Signature], raw: str, reasoning_parts: list[str] | None = None) -> dict[str, str]:
    """Each output field's text in ``raw``, the reply so far, by one pass of a fresh field parser.

    Used on errors only, for the ``partial`` text they carry (best effort: a parser failure gives what
    was found before it).
    """
    out: dict[str, list[str]] = {}
    if reasoning_parts:
        out["reasoning"] = ["".join(reasoning_parts)]
    try:
        parser = adapter.field_parser(signature)
        for field, text, _last in [*parser.feed(raw), *parser.finish()]:
            if text:
                out.setdefault(field, []).append(text)
    except Exception:  # noqa: BLE001 - partial text is best effort; the original error matters more
        pass
    return {k: "".join(v) for k, v in out.items()}
