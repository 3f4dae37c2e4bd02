"""``python -m talicada`` is the ``talicada`` command."""

import sys

from talicada.cli import main

sys.exit(main())
