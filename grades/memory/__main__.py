"""``python -m grades.memory``: runs :func:`grades.memory.cli.main`."""

import sys

from .cli import main

sys.exit(main())
