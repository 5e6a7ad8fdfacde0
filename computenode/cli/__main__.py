"""`python -m computenode.cli`: the same as the `computenode` command."""

import sys

from computenode.cli import main

sys.exit(main())
