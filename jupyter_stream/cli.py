"""The ``jupyter-stream`` command: stream a signature in the terminal, or run the demo LM server.

    $ jupyter-stream run "question -> reasoning, answer" --input question="Why is the sky blue?"
    $ jupyter-stream run my_app:program --input question="Why is the sky blue?"   # a program of yours (or DSPy's)
    $ jupyter-stream demo-lm --port 8765
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jupyter-stream", description="Stream the fields of an LM program as they are written.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a signature or a program and stream its output fields")
    run.add_argument("signature", help='a signature, e.g. "question -> reasoning, answer", or a program as module:attr')
    run.add_argument("--input", "-i", action="append", default=[], metavar="NAME=VALUE", help="an input field (repeatable)")
    run.add_argument("--model", help="model name, e.g. openai/gpt-4o-mini (default: the demo LM when no OPENAI_API_KEY)")
    run.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://localhost:11434/v1")
    run.add_argument("--adapter", help="chat, json or xml (default: chat)")
    run.add_argument("--cot", action="store_true", help="reason first (ChainOfThought)")
    run.add_argument("--listen", help="comma-separated fields to stream (default: all)")
    run.add_argument("--temperature", type=float)
    run.add_argument("--no-cache", action="store_true", help="do not use cached replies")
    run.add_argument("--stream-timeout", type=float, default=60.0, help="longest wait between two events (s)")
    run.add_argument("--timeout", type=float, help="the whole call (s)")
    run.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    demo = sub.add_parser("demo-lm", help="run the demo OpenAI-compatible server")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8765)
    demo.add_argument("--rate", type=float, default=None, help="tokens per second (0: as fast as possible)")
    return p


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

    import contextlib

    import jupyter_stream as js
    from jupyter_stream import programs

    try:
        inputs = _inputs(args.input, parser)
        lm = None
        if "->" in args.signature or ":" not in args.signature:
            program = (js.ChainOfThought if args.cot else js.Predict)(args.signature)
        else:
            program = programs.load(args.signature)
        bridge = programs.dspy_bridge(program)
        if (args.model or args.base_url) and bridge is None:
            lm = js.LM(args.model or "default", base_url=args.base_url, cache=not args.no_cache, temperature=args.temperature)
        config = {"temperature": args.temperature} if args.temperature is not None and lm is None and bridge is None else {}
        # Without --timeout the "streaming" profile limits the whole call (passing timeout=None would lift it).
        limits = {"timeout": args.timeout} if args.timeout is not None else {"timeout_profile": "streaming"}
        settings = {"adapter": args.adapter or "chat", **({"lm": lm} if lm else {})}
        options = (
            bridge.options(model=args.model, adapter=args.adapter, temperature=args.temperature, cache=not args.no_cache)
            if bridge is not None else contextlib.nullcontext()
        )
        with js.context(**settings), options:
            s = js.stream(
                program, None, inputs, listen=args.listen, stream_timeout=args.stream_timeout, **limits,
                **({"config": config} if config else {}),
            )
    except js.UsageError as e:
        print(f"jupyter-stream: {e}", file=sys.stderr)
        return 2
    color = {"auto": None, "always": True, "never": False}[args.color]
    renderer = js.TextRenderer(sys.stdout, color=color)
    try:
        for event in s:
            renderer.handle(event)
    except KeyboardInterrupt:
        renderer.finish(stopped=True)
        return 130
    except js.UsageError as e:  # found only when the call starts, e.g. no API key for --model
        renderer.finish()
        print(f"jupyter-stream: {e}", file=sys.stderr)
        return 2
    except js.JupyterStreamError as e:
        renderer.finish(error=e)
        return 1
    renderer.finish()
    return 0
