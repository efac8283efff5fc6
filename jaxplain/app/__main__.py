"""`python -m jaxplain.app ...`: the `jaxplain` command."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a tool imports every module (doctests, docs)
    sys.exit(main())
