"""``python -m flowkit.cli``: the same as the ``flowkit`` console script."""

import sys

from flowkit.cli import main

sys.exit(main())
