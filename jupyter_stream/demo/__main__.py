"""``python -m jupyter_stream.demo --port N [--host 127.0.0.1] [--rate TOKENS_PER_S]``: run the demo LM.

Prints ``demo LM listening on http://HOST:PORT/v1`` once and serves until Ctrl-C. ``--rate 0`` streams as fast
as possible; without ``--rate`` the rate is ``$JUPYTER_STREAM_DEMO_RATE`` or 150 tokens/s.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .server import serve_forever

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run :func:`serve_forever`; returns the exit status.

        >>> main(["--port", "8765", "--rate", "0"])  # doctest: +SKIP
        demo LM listening on http://127.0.0.1:8765/v1
    """
    parser = argparse.ArgumentParser(prog="python -m jupyter_stream.demo",
                                     description="Run the OpenAI-compatible demo LM server on loopback.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0 picks a free one)")
    parser.add_argument("--rate", type=float, default=None,
                        help="tokens per second (default $JUPYTER_STREAM_DEMO_RATE or 150; 0 = as fast as possible)")
    args = parser.parse_args(argv)
    serve_forever(args.host, args.port, args.rate)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
