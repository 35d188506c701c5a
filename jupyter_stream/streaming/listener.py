"""StreamListener: which field of which predictor to stream.

A listener only names a field; the adapter's incremental parser finds the field's text and the call's
router delivers it. The listener object itself holds no per-call state, so one streamified program can
be called again and concurrently.

Example::

    >>> import jupyter_stream as js
    >>> program = js.ChainOfThought("question -> answer")
    >>> listeners = [js.StreamListener("reasoning"), js.StreamListener("answer")]
    >>> _ = js.streamify(program, stream_listeners=listeners)   # binds each listener to its predictor
    >>> [(lst.predict_name, lst.signature_field_name) for lst in listeners]
    [('predict', 'reasoning'), ('predict', 'answer')]
"""

from __future__ import annotations

from typing import Any

from .. import _programs as programs
from .._exceptions import ListenerError

__all__ = ["StreamListener", "find_predictor_for_stream_listeners"]


class StreamListener:
    """Stream one output field of one predictor.

    Args:
        signature_field_name: the output field to stream.
        predict: the predictor (a ``Predict``, or a module with one predictor such as
            ``ChainOfThought``). Default: found among the program's predictors by field name.
        predict_name: the name used in :class:`StreamResponse` (default: the predictor's path).
        allow_reuse: stream the field every time the predictor is called (a loop); without it the
            listener stops after the field streamed once in a call, as in DSPy.
    """

    def __init__(
        self,
        signature_field_name: str,
        predict: Any = None,
        predict_name: str | None = None,
        allow_reuse: bool = False,
    ) -> None:
        if not isinstance(signature_field_name, str) or not signature_field_name:
            raise ListenerError("StreamListener needs the name of an output field, e.g. StreamListener('answer')")
        self.signature_field_name = signature_field_name
        self.predict = programs.as_predictor(predict) if predict is not None else None
        self.predict_name = predict_name
        self.allow_reuse = allow_reuse

    def __repr__(self) -> str:
        who = f", predict_name={self.predict_name!r}" if self.predict_name else ""
        return f"StreamListener({self.signature_field_name!r}{who}, allow_reuse={self.allow_reuse})"


def find_predictor_for_stream_listeners(program: Any, stream_listeners: list[StreamListener]) -> dict[int, list[StreamListener]]:
    """Bind each listener to its predictor (by field name when ``predict`` is not given).

    Returns ``{id(predictor): [listeners]}``. Raises :class:`ListenerError` (a ``ValueError``) when a
    field is in no predictor, or in several, with DSPy's messages.
    """
    named = programs.named_predictors(program)
    names = {id(p): n for n, p in named}
    by_field: dict[str, list[tuple[str, Any]]] = {}
    for n, p in named:
        for f in p.signature.output_fields:
            by_field.setdefault(f, []).append((n, p))
    out: dict[int, list[StreamListener]] = {}
    for lst in stream_listeners:
        if not isinstance(lst, StreamListener):
            raise ListenerError(f"stream_listeners must hold StreamListener objects, got {type(lst).__name__}")
        if lst.predict is None:
            found = by_field.get(lst.signature_field_name, [])
            if len(found) > 1:
                raise ListenerError(
                    f"Signature field {lst.signature_field_name} is not unique in the program, cannot automatically "
                    "determine which predictor to use for streaming. Please specify the predictor to listen to "
                    f"(it is an output of {', '.join(n for n, _ in found)}; pass StreamListener(..., predict=...))."
                )
            if not found:
                raise ListenerError(
                    f"Signature field {lst.signature_field_name} is not a field of any predictor in the program, "
                    "cannot automatically determine which predictor to use for streaming. Please verify your field "
                    f"name or specify the predictor to listen to (output fields: {sorted(by_field) or 'none'})."
                )
            lst.predict_name, lst.predict = found[0]
        else:
            if lst.signature_field_name not in lst.predict.signature.output_fields:
                raise ListenerError(
                    f"{lst.predict!r} has no output field {lst.signature_field_name!r}; its output fields are "
                    f"{list(lst.predict.signature.output_fields)}"
                )
            if lst.predict_name is None:
                lst.predict_name = names.get(id(lst.predict), "predict")
        out.setdefault(id(lst.predict), []).append(lst)
    return out

