"""The ``jupyter-stream`` command: stream a signature in the terminal, or run the demo LM server.

    $ jupyter-stream run "question -> reasoning, answer" --input question="Why is the sky blue?"
    $ jupyter-stream run my_app:program --input question="Why is the sky blue?"   # a program of yours (or DSPy's)
    $ jupyter-stream run "question -> answer" --input question="Why?" --compare model=gpt-4o-mini,gpt-4.1-mini
    $ jupyter-stream replay run.jsonl --speed 2                                   # a recording, again
    $ jupyter-stream demo-lm --port 8765
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="jupyter-stream", description="Stream the fields of an LM program as they are written.")
    p.add_argument("--version", action="version", version=f"jupyter-stream {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a signature or a program and stream its output fields")
    run.add_argument("signature", help='a signature, e.g. "question -> reasoning, answer", or a program as module:attr')
    run.add_argument("--input", "-i", action="append", default=[], metavar="NAME=VALUE", help="an input field (repeatable)")
    _add_model_options(run)
    run.add_argument("--listen", help="comma-separated fields to stream (default: all)")
    run.add_argument("--stream-timeout", type=float, default=60.0, help="longest wait between two events (s)")
    run.add_argument("--timeout", type=float, help="the whole call (s)")
    run.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    run.add_argument("--compare", metavar="KEY=A,B",
                     help="run 2 to 8 variants at once and diff their outputs: model=a,b, adapter=chat,json,xml or "
                          "temperature=0,0.7 (the other options apply to every variant)")
    serve = sub.add_parser("serve", help="serve a program over HTTP: its fields as Server-Sent Events")
    serve.add_argument("program", help='a signature, e.g. "question -> answer", or a program as module:attr')
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    _add_model_options(serve)
    serve.add_argument("--demo", action="store_true", help="answer with the built-in demo LM (no model needed)")
    serve.add_argument("--max-concurrency", type=int, default=32, help="calls at once; beyond: HTTP 503")
    serve.add_argument("--token-env", metavar="NAME",
                       help="require 'Authorization: Bearer <token>', the token being this environment variable's value")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow browser pages from this origin (repeatable; none by default)")
    replay = sub.add_parser("replay", help="play a recording again (js.record), with its timing, without a model")
    replay.add_argument("file", help="a recording (JSON Lines written by `with js.record(FILE):`)")
    replay.add_argument("--speed", type=float, default=1.0, help="1: the recorded pace, 2: twice as fast, 0: at once")
    replay.add_argument("--run", type=int, help="only this run of the file (0: the first, -1: the last; default: all)")
    replay.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    demo = sub.add_parser("demo-lm", help="run the demo OpenAI-compatible server")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8765)
    demo.add_argument("--rate", type=float, default=None, help="tokens per second (0: as fast as possible)")
    return p


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The options of ``run`` and ``serve`` that choose the model and how it is asked."""
    p.add_argument("--model", help="model name, e.g. openai/gpt-4o-mini (default: the configured LM; the demo LM for "
                   "run when there is none and no OPENAI_API_KEY)")
    p.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://localhost:11434/v1 (without --model: "
                   "the first model it lists)")
    p.add_argument("--api-key-env", metavar="NAME", default="OPENAI_API_KEY",
                   help="the environment variable holding the API key (default: OPENAI_API_KEY; a key is never "
                        "taken on the command line, where the shell history and ps would show it)")
    p.add_argument("--adapter", help="chat, json or xml (default: chat)")
    p.add_argument("--cot", action="store_true", help="reason first (ChainOfThought), for a signature")
    p.add_argument("--temperature", type=float)
    p.add_argument("--no-cache", action="store_true",
                   help="ask the model every time (a cached reply comes whole, without streaming)")


def _inputs(pairs: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            parser.error(f"--input {pair!r}: write NAME=VALUE, e.g. --input question='Why is the sky blue?'")
        out[name.strip()] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jupyter-stream`` and ``python -m jupyter_stream``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo-lm":
        from .demo import serve_forever

        try:
            serve_forever(args.host, args.port, args.rate)
        except OSError as e:  # the port is taken, the host cannot be bound...
            print(f"jupyter-stream: cannot serve the demo LM on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
            return 1
        return 0

    if args.command == "serve":
        return _serve(args)

    if args.command == "replay":
        return _replay(args)

    import jupyter_stream as js
    from jupyter_stream import _programs as programs

    try:
        inputs = _inputs(args.input, parser)
        program = _program(args, args.signature)
        key = _api_key(args)
        if args.compare is not None and "{" in args.compare:
            raise js.ConfigurationError(
                f"--compare {args.compare}: a terminal has no variables for {{name}}; write the values out "
                "(model=a,b, adapter=chat,json, temperature=0,0.7, instructions=...)"
            )
        names_models = (args.compare or "").strip().startswith(("model=", "model ="))
        if (programs.dspy_bridge(program) is None and not args.model and not args.base_url and key
                and js.settings.current().lm is None and not names_models):
            raise js.ConfigurationError(
                f"{args.api_key_env} is set, so the demo LM is not used: pass --model NAME (e.g. --model "
                f"openai/gpt-4o-mini), or unset {args.api_key_env} to run on the demo LM"
            )
        settings, options = _model_settings(args, program, key)
        # Without --timeout the "streaming" profile limits the whole call (passing timeout=None would lift it).
        limits = {"timeout": args.timeout} if args.timeout is not None else {"timeout_profile": "streaming"}
        with js.context(**settings), options:
            if args.compare is not None:
                s = js.Comparison(program, inputs, variants=args.compare, listen=args.listen,
                                  stream_timeout=args.stream_timeout, **limits)
            else:
                s = js.stream(program, None, inputs, listen=args.listen, stream_timeout=args.stream_timeout,
                              lm_events=True, **limits)
    except js.UsageError as e:
        print(f"jupyter-stream: {e}", file=sys.stderr)
        return 2
    color = {"auto": None, "always": True, "never": False}[args.color]
    if isinstance(s, js.Comparison):
        return _print_comparison(s, color)
    renderer = js.TextRenderer(sys.stdout, color=color)
    started = time.perf_counter()
    first: float | None = None
    usage_tokens: int | None = None
    try:
        for event in s:
            renderer.handle(event)
            if first is None and isinstance(event, js.StreamResponse) and event.chunk:
                first = time.perf_counter() - started
            elif isinstance(event, js.LMResponse):
                n = (event.usage or {}).get("completion_tokens")
                if isinstance(n, int):
                    usage_tokens = (usage_tokens or 0) + n
    except KeyboardInterrupt:
        renderer.finish(stopped=True)
        return 130
    except BrokenPipeError:  # `| head` closed the pipe: stop the stream (and its request), quietly
        s.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except js.UsageError as e:  # found only when the call starts, e.g. no API key for --model
        renderer.finish()
        print(f"jupyter-stream: {e}", file=sys.stderr)
        return 2
    except js.JupyterStreamError as e:
        renderer.finish(error=e)
        return 1
    renderer.finish()
    tokens = usage_tokens if usage_tokens is not None else renderer.tokens
    print(_stats_line(tokens, time.perf_counter() - started, first), file=sys.stderr)
    return 0


def _print_comparison(comparison: Any, color: bool | None) -> int:
    """The variants of ``comparison`` one after the other, then the diff; exit status 1 when a variant failed,
    130 when stopped."""
    from ._compare_text import CompareTextRenderer

    renderer = CompareTextRenderer(comparison.labels, sys.stdout, color=color)
    try:
        for item in comparison:
            renderer.handle(item)
    except KeyboardInterrupt:
        comparison.close()
        renderer.finish(stopped=True)
        return 130
    except BrokenPipeError:
        comparison.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    renderer.finish()
    return 1 if renderer.failed else 0


def _serve(args: argparse.Namespace) -> int:
    """``jupyter-stream serve``: the program's app (:func:`jupyter_stream.asgi_app`) on uvicorn."""
    import jupyter_stream as js
    from jupyter_stream import _programs as programs

    try:
        program = _program(args, args.program)
        key = _api_key(args)
        token = None
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise js.ConfigurationError(f"--token-env {args.token_env}: that environment variable is not set")
        bridge = programs.dspy_bridge(program)
        configured = (bridge.model_name() != "demo LM") if bridge is not None else js.settings.current().lm is not None
        if not (args.model or args.base_url or configured or args.demo):
            raise js.ConfigurationError(
                "no model to serve: pass --model NAME (with --base-url for a local server), configure one in your "
                "module, or --demo for the built-in demo LM"
            )
        # A DSPy program reads DSPy's settings per request: its options go process-wide (this process serves it).
        settings, options = _model_settings(args, program, key, configure_dspy=True)
        with js.context(**settings), options:
            app = js.asgi_app(program, max_concurrency=args.max_concurrency, token=token, cors_origins=args.cors_origin)
    except js.UsageError as e:
        print(f"jupyter-stream: {e}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"jupyter-stream: serving {args.program} on http://{args.host}:{args.port}/ (POST /stream, GET /stream, "
          "POST /predict, GET /)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except OSError as e:  # pragma: no cover - uvicorn logs and exits on a taken port
        print(f"jupyter-stream: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


def _replay(args: argparse.Namespace) -> int:
    """``jupyter-stream replay FILE``: each recorded run through the terminal renderer, at its recorded pace."""
    import jupyter_stream as js

    try:
        runs = js.load_recording(args.file)
        if args.run is not None:
            replays = [js.replay(args.file, speed=args.speed, run=args.run)]
        else:
            replays = [js.replay(run, speed=args.speed) for run in runs]
    except js.UsageError as e:
        print(f"jupyter-stream: {e}", file=sys.stderr)
        return 2
    color = {"auto": None, "always": True, "never": False}[args.color]
    status = 0
    for replay in replays:
        run = replay.run
        print(f"· replay of {run.label}: {run.title} on {run.model or 'an unknown model'}", file=sys.stderr, flush=True)
        renderer = js.TextRenderer(sys.stdout, color=color)
        try:
            for event in replay:
                renderer.handle(event)
        except KeyboardInterrupt:
            renderer.finish(stopped=True)
            return 130
        except js.JupyterStreamError as e:  # the recorded run's own error, again
            renderer.finish(error=e)
            status = 1
            continue
        renderer.finish(stopped=run.status == "stopped")
    return status


def _program(args: argparse.Namespace, target: str) -> Any:
    """The program ``target`` names: a signature (``Predict``, or ``ChainOfThought`` with ``--cot``) or ``module:attr``."""
    import jupyter_stream as js
    from jupyter_stream import _programs as programs

    if "->" in target or ":" not in target:
        return (js.ChainOfThought if args.cot else js.Predict)(target)
    return programs.load(target)


def _api_key(args: argparse.Namespace) -> str | None:
    """The key in ``--api-key-env``'s variable (a variable named on purpose must be set)."""
    from ._exceptions import ConfigurationError

    key = os.environ.get(args.api_key_env) or None
    if args.api_key_env != "OPENAI_API_KEY" and key is None:
        raise ConfigurationError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    return key


def _model_settings(args: argparse.Namespace, program: Any, key: str | None, *,
                    configure_dspy: bool = False) -> tuple[dict[str, Any], contextlib.AbstractContextManager[Any]]:
    """What the model options make of ``program``: settings for ``js.context``, and a context for a DSPy
    program (DSPy's own settings; ``configure_dspy``: process-wide instead)."""
    import jupyter_stream as js
    from jupyter_stream import _programs as programs

    model = args.model or (_first_model(args.base_url, key) if args.base_url else None)
    cache = False if args.no_cache else None
    bridge = programs.dspy_bridge(program)
    if bridge is not None:
        dspy_model = model if model is None or "/" in model or not args.base_url else f"openai/{model}"
        return {}, bridge.options(model=dspy_model, adapter=args.adapter, temperature=args.temperature,
                                  cache=not args.no_cache, configure=configure_dspy, base_url=args.base_url,
                                  api_key=key if model else None)
    lm = js.settings.lm_with(model=model, base_url=args.base_url, api_key=key if model else None,
                             temperature=args.temperature, cache=cache)
    settings = {"adapter": args.adapter} if args.adapter else {}
    return ({**settings, "lm": lm} if lm is not None else settings), contextlib.nullcontext()


def _stats_line(tokens: int, seconds: float, first: float | None) -> str:
    """What the widget's status line says at the end: tokens, time, time to the first streamed text.

    >>> _stats_line(42, 1.25, 0.2)
    '· 42 tokens in 1.2 s, first after 0.20 s'
    """
    after = f", first after {first:.2f} s" if first is not None else ""
    return f"· {tokens} tokens in {seconds:.1f} s{after}"


def _first_model(base_url: str, key: str | None) -> str:
    """The first model a server lists (``GET /models``), for ``--base-url`` without ``--model``."""
    import openai

    from ._exceptions import ConfigurationError

    try:
        models = [m.id for m in openai.OpenAI(base_url=base_url, api_key=key or "none", timeout=10, max_retries=0).models.list()]
    except openai.OpenAIError as e:
        raise ConfigurationError(
            f"--base-url {base_url}: pass --model NAME (the server did not list its models: {type(e).__name__})"
        ) from None
    if not models:
        raise ConfigurationError(f"--base-url {base_url}: pass --model NAME (the server lists no model)")
    print(f"jupyter-stream: model {models[0]!r}, the first of the {len(models)} the server lists (choose with --model)",
          file=sys.stderr)
    return models[0]
