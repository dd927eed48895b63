"""``python -m grades.train``: runs :func:`grades.train.cli.main`."""

import sys

from .cli import main

sys.exit(main())
