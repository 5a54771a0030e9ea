"""`python -m benchmark`: the command line is in benchmark/cli.py."""

import sys

from benchmark.cli import main

sys.exit(main())
