"""`python -m imagegen`: the same entry point as the installed `imagegen` script."""

import sys

from imagegen.cli import main

if __name__ == "__main__":
    sys.exit(main())
