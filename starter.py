"""Launch and steer Ensemble runs: `python starter.py --help`."""

import os
import sys

from ensemble.cli import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown, which can abort while Temporal's runtime threads wind down
