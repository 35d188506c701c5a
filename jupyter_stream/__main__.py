"""``python -m jupyter_stream ...`` is the ``jupyter-stream`` command."""

import sys

from .cli import main

sys.exit(main())
