"""The benchmark: the ELT job against other ways of copying one PostgreSQL database.

Not a test: `python -m benchmark --help` (benchmark/cli.py) says how to run it.
"""

import sys
from pathlib import Path

# dev/pgserver.py, the servers' lifecycle that the tests and dev/local_stack.py
# share, is a flat module on their path: the benchmark's modules import it so too.
_DEV = str(Path(__file__).resolve().parent.parent / "dev")
if _DEV not in sys.path:
    sys.path.insert(0, _DEV)
