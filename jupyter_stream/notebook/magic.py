"""The ``%%stream`` cell magic.

``%load_ext jupyter_stream`` registers it. In a Jupyter kernel an input transformer turns a
``%%stream`` cell into top-level ``await`` on the kernel's own loop, so an interrupt (■) cancels the
stream cleanly and the widget's Stop button is handled while the cell runs (ipykernel >= 7.4; measured
in ``tests/notebook/test_kernel.py``). Elsewhere (terminal IPython, ``run_cell_magic``) the stream
runs on the engine loop thread through :func:`jupyter_stream._runtime.run_sync`, whose Ctrl-C cancels
the request.

Usage::

    %%stream "question -> reasoning, answer" --out result
    Why is the sky blue?
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError as IPyUsageError
from IPython.core.magic import Magics, cell_magic, magics_class

from .. import _programs as programs, _runtime as runtime
from .. import _recording
from .. import settings as _settings
from .._exceptions import JupyterStreamError, StreamError, UsageError
from .._prediction import Prediction
from .._compare import Comparison
from .._compare_text import CompareTextRenderer
from .._diff import diff
from .._program import Module, Predict
from ..streaming.sink import pour
from ..streaming.stream import stream
from .._terminal import TextRenderer

__all__ = ["StreamMagics", "load_ipython_extension", "parse_body", "unload_ipython_extension"]

@magic_arguments.magic_arguments()
@magic_arguments.argument("program", nargs="*", help='a signature ("question -> reasoning, answer") or the name of a '
                          "variable holding a program (Predict, ChainOfThought, a Module, a DSPy module, or a "
                          "streamified callable)")
@magic_arguments.argument("--listen", metavar="a,b", help="fields to stream (default: every output field of every predictor)")
@magic_arguments.argument("--predictor", metavar="NAME", help="stream one named predictor of the program")
@magic_arguments.argument("--out", metavar="VAR", help="store the Prediction in VAR (it is always also in `_`)")
@magic_arguments.argument("--model", metavar="NAME",
                          help="the model, e.g. openai/gpt-4o-mini (default: the configured LM or the demo LM)")
@magic_arguments.argument("--adapter", choices=["chat", "json", "xml"])
@magic_arguments.argument("--temperature", type=float, metavar="T")
@magic_arguments.argument("--no-cache", action="store_true", help="ask the model every time (no cached replies)")
@magic_arguments.argument("--timeout", type=float, metavar="S", help="limit for the whole call (seconds)")
@magic_arguments.argument("--stream-timeout", type=float, default=60.0, metavar="S",
                          help="longest wait between two events (default 60)")
@magic_arguments.argument("--profile", choices=sorted(runtime.TIMEOUT_PROFILES), help="a timeout profile")
@magic_arguments.argument("--session", metavar="NAME", help="a multi-turn session: earlier turns are sent as history")
@magic_arguments.argument("--markdown", action="store_true", help="render field panes as Markdown")
@magic_arguments.argument("--background", action="store_true",
                          help="return at once; the stream goes on while other cells run")
@magic_arguments.argument("--text", action="store_true", help="plain-text output instead of the widget")
@magic_arguments.argument("--record", metavar="FILE",
                          help="write this run (its events and raw deltas, timed) to FILE, JSON Lines; play it again "
                               "with js.show(js.replay(FILE)) or `jupyter-stream replay FILE`")
@magic_arguments.argument("--compare", metavar="SPEC",
                          help="run variants side by side, a column each, with a word diff of the predictions at the end: "
                               "model=a,b | adapter=chat,json | temperature=0,0.7 | instructions={a},{b} | lm={a},{b} | "
                               "program={p} (2 to 8; `_`/--out then hold {label: prediction or exception})")
@magic_arguments.argument("--no-snapshot", action="store_true",
                          help="no static HTML copy of the result when the stream ends (saves sending the text a "
                               "second time; GitHub/nbviewer then show no result)")
def _options(line: str, cell: str = "") -> None:
    """Stream an LM program's output fields live::

    %%stream PROGRAM [options]
    <inputs>

The cell body holds the inputs. With one input field the whole body is its value; otherwise write
`field: value` blocks (a value may span lines). `{name}` is filled from your variables ({{ for a brace).
"""


_sessions: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
# The last run of each cell (by the front end's cell id), for the widget's "diff with the previous run".
_cell_runs: collections.OrderedDict[str, Any] = collections.OrderedDict()  # by cell id, the oldest first
_CELL_RUNS_KEPT = 256
_background: set[asyncio.Task[Any]] = set()

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fill(body: str, ns: Mapping[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        name = m.group(1)
        if name not in ns:
            raise UsageError(f"{{{name}}} in the cell: no variable named {name!r}; define it, or write {{{{{name}}}}} for literal braces")
        return str(ns[name])

    return _PLACEHOLDER.sub(sub, body)


def parse_body(body: str, input_names: list[str]) -> dict[str, str]:
    """The inputs written in a cell body: the whole body for one input, else ``field: value`` blocks."""
    if len(input_names) == 1:
        value = body.strip("\n").strip()
        if not value:
            raise UsageError(
                f"the cell body is empty: write the value of {input_names[0]!r} on the lines below the %%stream line"
            )
        return {input_names[0]: value}
    if not input_names:
        return {}
    starts = re.compile(r"^(%s)\s*:\s?(.*)$" % "|".join(map(re.escape, input_names)))
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in body.splitlines():
        m = starts.match(line)
        if m and m.group(1) not in out:
            current = m.group(1)
            out[current] = [m.group(2)]
        elif current is not None:
            out[current].append(line)
        elif line.strip():
            raise UsageError(
                f"the cell body must start with one of {', '.join(n + ':' for n in input_names)} "
                f"(this program has {len(input_names)} inputs); got {line.strip()[:40]!r}"
            )
    missing = [n for n in input_names if n not in out]
    if missing:
        raise UsageError(
            f"the cell body has no value for {', '.join(missing)}; write one `name: value` block per input "
            f"({', '.join(input_names)})"
        )
    return {k: "\n".join(v).strip() for k, v in out.items()}


class _CellRun:
    """One ``%%stream`` run: the program, its inputs, options and where events go."""

    def __init__(self, line: str, body: str, ns: dict[str, Any]) -> None:
        try:
            # Split like a shell (IPython's parse_argstring keeps the quotes: '"q -> a"' stays quoted).
            args = _options.parser.parse_args(shlex.split(line))
        except IPyUsageError as e:  # argparse's message, one line
            raise UsageError(f"{e} (see %%stream?)") from None
        except ValueError as e:  # unbalanced quotes
            raise UsageError(f"cannot read the options: {e}") from None
        if not args.program:
            raise UsageError('%%stream needs a signature ("question -> answer") or a program variable first')
        target = " ".join(args.program)
        self.args, self.ns = args, ns
        self.cell_key = _cell_key()
        self.streamified = None
        self.variants: list[tuple[str, str]] = []
        if args.compare is not None and args.session:
            raise UsageError("--session cannot be used with --compare: a session has one history, and each variant "
                             "would answer it differently; compare single turns, or drop --compare")
        if "->" in target:
            self.program: Any = Predict(target)
            self.title = target
        else:
            if not target.isidentifier() or target not in ns:
                raise UsageError(f"no variable named {target!r}; pass a signature string in quotes or a program variable")
            obj = ns[target]
            self.title = target
            if callable(obj) and hasattr(obj, "program") and not isinstance(obj, Module):
                self.streamified, obj = obj, obj.program
            if not programs.is_program(obj):
                raise UsageError(
                    f"{target!r} is a {type(obj).__name__}, not a program (Predict, ChainOfThought, Module, a DSPy module)"
                )
            self.program = obj
        run_target: Any = self.program
        if args.predictor:
            run_target = programs.find_predictor(self.program, args.predictor)
            self.title = f"{self.title} · {args.predictor}"
        self.inputs = parse_body(_fill(body, ns), programs.input_names(run_target))
        opts: dict[str, Any] = {}
        bridge = programs.dspy_bridge(self.program)
        if args.session and isinstance(run_target, Predict):
            opts["history"] = list(_sessions.get(args.session, []))
        self.run_target = run_target
        ctx: dict[str, Any] = {}
        if bridge is None:
            lm = _lm_for(args)
            if lm is not None:
                ctx["lm"] = lm
            if args.adapter:
                ctx["adapter"] = args.adapter
        self.ctx = ctx
        # A DSPy program takes the options through dspy.context (captured when the stream is made).
        dspy_options = (
            bridge.options(model=args.model, adapter=args.adapter, temperature=args.temperature, cache=not args.no_cache)
            if bridge is not None else _settings.context()
        )
        # A recording is bound when the stream is made (the file is written when the run ends, --background too).
        recording = _recording.record(os.path.expanduser(args.record)) if args.record else contextlib.nullcontext()
        with _settings.context(**ctx), dspy_options, recording:
            if args.compare is not None:
                # The variants are made here, inside the cell's settings: what a variant does not set, it inherits.
                self.stream = Comparison(
                    run_target, self.inputs, variants=args.compare, namespace=ns,
                    base=None if "->" in target else target, listen=args.listen, stream_timeout=args.stream_timeout,
                    timeout=args.timeout if args.timeout is not None else runtime.UNSET,
                    timeout_profile=args.profile or ("streaming" if args.timeout is None else None),
                )
                self.variants = self.stream.variants
            elif self.streamified is not None and not args.predictor:
                # A streamified callable keeps its own listeners and status provider.
                self.stream = self.streamified(**self.inputs)
            else:
                self.stream = stream(
                    self.program, args.predictor, self.inputs, listen=args.listen, stream_timeout=args.stream_timeout,
                    timeout=args.timeout if args.timeout is not None else runtime.UNSET,
                    timeout_profile=args.profile or ("streaming" if args.timeout is None else None),
                    lm_events=True, **opts,
                )
            lm = ctx.get("lm") or _settings.current().lm
            self.model = bridge.model_name() if bridge is not None else lm.model if lm is not None else "demo LM"
            if self.variants:
                self.model = f"{len(self.variants)} variants"

    async def run(self, sink: Any, shell: Any) -> Any:
        """Pour the stream into ``sink`` (a Sink); returns the prediction (None when stopped)."""
        stopped = False
        sink.start(title=self.title, model=self.model)
        consumer = asyncio.ensure_future(pour(self.stream, sink, title=self.title, model=self.model, started=True))
        on_stop = getattr(sink, "on_stop", None)
        if on_stop is not None:
            def stop() -> None:
                nonlocal stopped
                stopped = True
                consumer.cancel()

            on_stop(stop)
        try:
            prediction = await consumer
        except asyncio.CancelledError:
            if stopped:
                return None
            raise
        finally:
            self._diff_with_previous(sink)
        if self.variants:  # a comparison: {label: prediction or exception}, with .stats and .diff
            prediction = self.stream.result
        self._store(prediction, shell)
        return prediction

    def _diff_with_previous(self, sink: Any) -> None:
        """Keep this run as its cell's last, and show the sink what changed since the cell's previous run."""
        run = getattr(self.stream, "run", None) if not self.variants else None
        if run is None or self.cell_key is None:
            return
        previous = _cell_runs.pop(self.cell_key, None)
        _cell_runs[self.cell_key] = run
        while len(_cell_runs) > _CELL_RUNS_KEPT:
            _cell_runs.popitem(last=False)
        show = getattr(sink, "show_run_diff", None)
        if previous is not None and show is not None:
            show(diff(previous, run))

    def _store(self, prediction: Any, shell: Any) -> None:
        if prediction is None:
            return
        ns = shell.user_ns if shell is not None else self.ns
        ns["_"] = prediction
        if self.args.out:
            ns[self.args.out] = prediction
        if self.args.session and isinstance(prediction, Prediction):
            _sessions.setdefault(self.args.session, []).append((dict(self.inputs), prediction.to_dict()))


def _cell_key() -> str | None:
    """Which cell runs: the front end's cell id (JupyterLab, Notebook 7, VS Code and nbclient send it with the
    request), or None (a terminal IPython, a client that names no cell: no "previous run of this cell")."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        cell_id = kernel.get_parent("shell").get("metadata", {}).get("cellId") if kernel is not None else None
    except Exception:  # noqa: BLE001 - an older kernel without get_parent(channel): no id
        cell_id = None
    return cell_id if isinstance(cell_id, str) and cell_id else None


def _lm_for(args: argparse.Namespace) -> Any:
    """The LM that ``--model``, ``--temperature`` and ``--no-cache`` ask for, for every program (None: as configured)."""
    return _settings.lm_with(model=args.model, temperature=args.temperature, cache=False if args.no_cache else None)


def _make_sink(job: _CellRun, shell: Any) -> Any:
    if job.args.text or not _has_widgets(shell):
        if job.variants:
            return CompareTextRenderer([label for label, _ in job.variants], sys.stdout)
        return TextRenderer(sys.stdout)
    from .display import WidgetDisplay

    return WidgetDisplay(markdown=job.args.markdown, snapshot=not job.args.no_snapshot, variants=job.variants)


def _has_widgets(shell: Any) -> bool:
    return shell is not None and getattr(shell, "kernel", None) is not None


def _friendly(e: BaseException) -> BaseException:

    if isinstance(e, UsageError):
        return IPyUsageError(f"%%stream: {e}")
    if isinstance(e, StreamError):
        # A runtime failure, not a usage mistake: the cell fails with the error itself, whose traceback IPython
        # shows as one line, since the output (widget or text) already shows the message and what streamed.
        e._render_traceback_ = lambda: [f"{type(e).__name__}: the stream failed (shown above)"]  # type: ignore[attr-defined]
        return e
    return e


async def run_cell(line: str, body: str) -> None:
    """What a ``%%stream`` cell becomes in a kernel: ``await run_cell(line, body)`` on the kernel's loop."""
    from IPython import get_ipython

    shell = get_ipython()
    try:
        job = _CellRun(line, body, shell.user_ns)
    except UsageError as e:
        raise _friendly(e) from None
    sink = _make_sink(job, shell)
    if job.args.background:
        task = asyncio.ensure_future(_quiet(job.run(sink, shell)))
        _background.add(task)
        task.add_done_callback(_background.discard)
        return None
    try:
        await job.run(sink, shell)
    except JupyterStreamError as e:
        raise _friendly(e) from None
    return None


async def _quiet(coro: Any) -> None:
    try:
        await coro
    except (asyncio.CancelledError, Exception):  # shown in the widget; a background task must not log noise
        pass


def _transform(lines: list[str]) -> list[str]:
    """Input transformer: a ``%%stream`` cell becomes top-level ``await`` (kernel only)."""
    if not lines or not lines[0].startswith("%%stream"):
        return lines
    first = lines[0][len("%%stream"):].rstrip("\n")
    if first and not first[0].isspace():
        return lines  # another magic whose name starts with "stream"
    body = "".join(lines[1:])
    return [f"await __import__('jupyter_stream.notebook.magic', fromlist=['run_cell']).run_cell({first.strip()!r}, {body!r})\n"]


@magics_class
class StreamMagics(Magics):
    """Holds the ``%%stream`` magic."""

    @cell_magic
    def stream(self, line: str, cell: str) -> None:
        try:
            job = _CellRun(line, cell, self.shell.user_ns)
        except UsageError as e:
            raise _friendly(e) from None
        sink = _make_sink(job, self.shell)
        try:
            runtime.run_sync(job.run(sink, self.shell))
        except JupyterStreamError as e:
            raise _friendly(e) from None


_options.parser.prog = "%%stream"
StreamMagics.stream.__doc__ = _options.__doc__.replace("%_options", "%%stream")


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%stream`` (and, in a kernel, the transformer that runs it as top-level await)."""
    ipython.register_magics(StreamMagics)
    if getattr(ipython, "kernel", None) is not None and _transform not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(_transform)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the transformer (the magic stays registered, as IPython has no unregister)."""
    if _transform in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(_transform)
