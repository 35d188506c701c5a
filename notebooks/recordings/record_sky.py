"""Make ``sky.jsonl``, the recording the quickstart's replay cell plays: the quickstart's first ``%%stream`` cell,
run once on the built-in demo LM (no key, no network beyond loopback) with ``--record``.

    $ python notebooks/recordings/record_sky.py

It runs the cell through IPython's ``%%stream`` magic (``--text``: no widget needed), as a notebook would. The
demo LM answers at its default pace (150 tokens/s), so the replay shows the pace a reader sees live.
"""

import os
from pathlib import Path

from IPython.testing.globalipapp import start_ipython

os.environ.pop("OPENAI_API_KEY", None)  # the demo LM answers only when no key is set
os.environ.pop("JUPYTER_STREAM_DEMO_RATE", None)  # its default pace
target = Path(__file__).with_name("sky.jsonl")
ip = start_ipython()
ip.run_line_magic("load_ext", "jupyter_stream")
ip.run_cell_magic("stream", f'"question -> reasoning, answer" --text --record {target}', "Why is the sky blue?\n")
