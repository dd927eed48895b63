"""Entry point of ``python -m grades.bench``: runs :func:`grades.bench.cli.main`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
