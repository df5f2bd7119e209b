"""`python -m agrajag`: the same as the `agrajag` command."""

import sys

from agrajag.cli import main

sys.exit(main())
