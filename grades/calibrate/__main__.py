"""``python -m grades.calibrate``: the command line of :mod:`grades.calibrate.cli`."""

import sys

from .cli import main

sys.exit(main())
