"""`python -m tinychameleon` is the same as the `tinychameleon` console script."""

import sys

from .cli import main

sys.exit(main())
