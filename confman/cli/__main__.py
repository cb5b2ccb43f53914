"""``python -m confman.cli``: the ``confman`` command."""

import sys

from .main import main

sys.exit(main())
