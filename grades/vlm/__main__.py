"""Entry point of ``python -m grades.vlm``: runs :func:`grades.vlm.cli.main`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
