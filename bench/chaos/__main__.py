"""`python -m bench.chaos [--duration 90s|30m] [--writers N] [--daemons N]`."""

from __future__ import annotations

import sys

from bench.chaos.run import main

if __name__ == "__main__":
    sys.exit(main())
