"""Entry point of ``python -m grades.evaluate``: an evaluation (:func:`grades.evaluate.cli.main`),
or with ``tasks`` first, the list of what a model will be scored on (:mod:`.listing`)."""

import sys

from .cli import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["tasks"]:
        from .listing import main as tasks_main

        sys.exit(tasks_main(sys.argv[2:]))
    sys.exit(main())
