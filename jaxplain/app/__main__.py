"""`python -m jaxplain.app ...`: the `jaxplain` command."""

import sys

from .cli import main

sys.exit(main())
