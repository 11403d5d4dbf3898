"""``python -m vidablate COMMAND ...`` is the ``vidablate`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
