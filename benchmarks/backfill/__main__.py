"""`python -m benchmarks.backfill` (and `make bench`)."""

import sys

from benchmarks.backfill.command import main

sys.exit(main())
