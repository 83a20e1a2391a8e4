"""``python -m sqla_jobs``: the same command line as ``sqla-jobs``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
