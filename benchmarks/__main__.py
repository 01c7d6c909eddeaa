"""`python -m benchmarks` is the `distbench` command."""

import sys

from benchmarks.cli import main

sys.exit(main())
