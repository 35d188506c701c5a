"""stream(): a lazy stream of one named predictor (or a whole program), for ``for`` and ``async for``.

Nothing runs until iteration begins; the settings (LM, adapter) are captured when ``stream()`` is
called. Leaving the loop early or closing the stream cancels the forward pass and closes the HTTP
request. Bad arguments (an unknown predictor or field, a missing input) raise at once.

Example::

    >>> import jupyter_stream as js
    >>> from jupyter_stream.demo import DemoServer
    >>> server = DemoServer().start()
    >>> server.script("[[ ## reasoning ## ]]\\nIt is in France.\\n\\n[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]")
    >>> js.configure(lm=js.LM("demo", base_url=server.url, api_key="demo", cache=False))
    >>> program = js.ChainOfThought("question -> answer")
    >>> fields = {}
    >>> for event in js.stream(program, "predict", {"question": "Capital of France?"}):
    ...     if isinstance(event, js.StreamResponse):
    ...         fields[event.signature_field_name] = fields.get(event.signature_field_name, "") + event.chunk
    ...     else:
    ...         final = event
    >>> fields, final.answer
    ({'reasoning': 'It is in France.', 'answer': 'Paris'}, 'Paris')
    >>> js.configure(lm=None); server.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from .. import _programs as programs
from .. import _runs
from .. import settings as _settings
from .._exceptions import ListenerError, UsageError
from .._runtime import UNSET as _UNSET
from .._runtime import resolve_limits
from .call import StreamCall
from .drive import drive
from .once import RunsOnce
from .status import StatusMessageProvider

__all__ = ["Stream", "stream"]


def stream(
    program: Any,
    predictor: Any = None,
    inputs: Mapping[str, Any] | None = None,
    *,
    listen: Iterable[str] | str | None = None,
    stream_timeout: float | None = 60.0,
    timeout: Any = _UNSET,
    timeout_profile: str | None = None,
    status_message_provider: StatusMessageProvider | None = None,
    lm_events: bool = False,
    **opts: Any,
) -> Stream:
    """A lazy stream of ``predictor`` of ``program`` (``None``: the whole program) run on ``inputs``.

    Args:
        program: a Module (or a Predict).
        predictor: the attribute path of one predictor (``"generate"``, ``"step.predict"``), a
            predictor object, or None to run the whole program.
        inputs: the input fields, as a dict.
        listen: the output fields to stream (default: every output field of what runs, plus native
            reasoning).
        stream_timeout: the longest wait between two events, in seconds (None: no limit).
        timeout, timeout_profile: the whole call's limit (see ``jupyter_stream._runtime.TIMEOUT_PROFILES``).
        lm_events: also yield :class:`LMRequest`/:class:`LMResponse` (the prompt inspector's data).
        **opts: passed to the predictor with the inputs (``config={...}``, ``lm=...``, ``history=[...]``).

    Iterate it with ``for`` or ``async for``: :class:`StreamResponse` and :class:`StatusMessage`
    events, then the final :class:`Prediction`, which is also kept as ``.prediction``.
    """
    return Stream(
        program, predictor, inputs, listen=listen, stream_timeout=stream_timeout, timeout=timeout,
        timeout_profile=timeout_profile, status_message_provider=status_message_provider, lm_events=lm_events,
        opts=opts,
    )


class Stream(RunsOnce):
    """The object :func:`stream` returns: iterate it once, with ``for`` or ``async for``."""

    _once = "a Stream runs once; call stream(...) again to run it again"

    def __init__(
        self,
        program: Any,
        predictor: Any,
        inputs: Mapping[str, Any] | None,
        *,
        listen: Iterable[str] | str | None,
        stream_timeout: Any,
        timeout: Any,
        timeout_profile: str | None,
        status_message_provider: StatusMessageProvider | None,
        lm_events: bool,
        opts: dict[str, Any],
    ) -> None:
        if not programs.is_program(program):
            raise UsageError(
                f"stream() needs a program (Module, Predict, or a DSPy module), got {type(program).__name__}"
            )
        if inputs is not None and not isinstance(inputs, Mapping):
            raise UsageError(f"stream() takes the inputs as a dict, got {type(inputs).__name__}")
        self.program = program
        self.inputs = dict(inputs or {})
        self.opts = opts
        named = programs.named_predictors(program)
        self.names = {id(p): n for n, p in named}
        if predictor is None:
            self.target: Any = None
            self.predictor_name: str | None = None
            outputs = {f for _, p in named for f in p.signature.output_fields}
        else:
            self.target = programs.find_predictor(program, predictor)
            self.predictor_name = self.names.get(id(self.target), "self")
            outputs = set(self.target.signature.output_fields)
        if isinstance(listen, str):
            listen = [part.strip() for part in listen.split(",") if part.strip()]
        self.listen = frozenset(listen) if listen is not None else None
        if self.listen is not None:
            unknown = sorted(self.listen - outputs - {"reasoning", "reasoning_content"})
            if unknown:
                raise ListenerError(
                    f"cannot listen to {', '.join(repr(u) for u in unknown)}: not an output field of "
                    f"{self.predictor_name or 'the program'}; its output fields are {sorted(outputs)}"
                )
        runs = self.target if self.target is not None else program
        programs.check_inputs(runs, {**self.inputs, **opts})
        self._run = programs.runner(runs)  # captures a DSPy program's settings now, as ``snapshot`` does ours
        self.limits = resolve_limits(timeout=timeout, stream_timeout=stream_timeout, timeout_profile=timeout_profile)
        self.snapshot = _settings.current()
        programs.check_keys(runs, self.snapshot.lm)
        self.capture = _runs.capture(kind="stream", title=_runs.title_of(program, self.predictor_name),
                                     inputs={**self.inputs, **opts}, snapshot=self.snapshot)
        self.provider = status_message_provider or StatusMessageProvider()
        self.lm_events = lm_events
        self.prediction: Any = None
        self.call: StreamCall | None = None

    @property
    def run(self) -> Any:
        """This stream's :class:`~jupyter_stream.Run` once it ended (also ``js.runs[-1]`` then), else None; None
        too when nothing keeps runs (``js.runs.limit(max_runs=0)`` and no recording)."""
        return self.capture.run if self.capture is not None else None

    def __repr__(self) -> str:
        what = self.predictor_name or type(self.program).__name__
        return f"<Stream of {what} ({'started' if self.started else 'not started'})>"

    # ------------------------------------------------------------------------------------ async
    def _events(self) -> AsyncIterator[Any]:
        def make_call(loop: asyncio.AbstractEventLoop) -> StreamCall:
            self.call = StreamCall(
                loop=loop, status_provider=self.provider, names=self.names,
                listen_all=True, listen_fields=self.listen, only=self.target, lm_events=self.lm_events,
            )
            return self.call

        def finish(_call: StreamCall, prediction: Any) -> tuple[Any]:
            self.prediction = prediction
            return (prediction,)

        inputs = {**self.inputs, **self.opts}
        return drive(make_call, lambda: self._run(**inputs), self.limits, snapshot=self.snapshot, finish=finish,
                     capture=self.capture)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
