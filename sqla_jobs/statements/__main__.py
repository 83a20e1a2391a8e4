"""``python -m sqla_jobs.statements``: write ``sqla_jobs/_rendered_queries.py`` again."""

import sys

from . import RENDERED_PATH, rendered_module

RENDERED_PATH.write_text(rendered_module())
print(f"wrote {RENDERED_PATH}", file=sys.stderr)
