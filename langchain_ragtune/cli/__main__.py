"""``python -m langchain_ragtune.cli``: the ``ragtune`` command without the console script."""

import sys

from langchain_ragtune.cli.app import main

if __name__ == "__main__":  # imported (by a doc or module walker), it does nothing
    sys.exit(main())
