"""``python -m minicnn`` is the ``minicnn`` command."""
import sys

from minicnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
