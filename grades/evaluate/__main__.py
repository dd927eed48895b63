"""Entry point of ``python -m grades.evaluate``: runs :func:`grades.evaluate.cli.main`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
