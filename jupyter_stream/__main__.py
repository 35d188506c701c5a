"""``python -m jupyter_stream ...`` is the ``jupyter-stream`` command."""

import sys

from ._cli import main

sys.exit(main())
