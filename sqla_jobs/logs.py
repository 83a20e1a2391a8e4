"""Log formatters that keep sqla_jobs' structured fields (job_id, task, queue, attempt, ...).

The worker logs through ``logging.getLogger("sqla_jobs.<module>")`` with ``extra={...}``;
`JsonFormatter` writes one JSON object per line with those fields, `TextFormatter` appends them
as ``[key=value ...]``. The CLI uses them (``--log-format``); an application can too::

    handler = logging.StreamHandler()
    handler.setFormatter(sqla_jobs.logs.JsonFormatter())
    logging.getLogger("sqla_jobs").addHandler(handler)
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra={...}``.
_RECORD_ATTRIBUTES = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime", "taskName"}
)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``extra``
    fields (job_id, task, queue, ...), for log pipelines that index fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``: the extra fields stay visible."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra_fields(record)
        if not extra:
            return line
        first, newline, rest = line.partition("\n")
        fields = " ".join(f"{key}={value}" for key, value in extra.items())
        return f"{first} [{fields}]{newline}{rest}"


def configure_logging(verbosity: int, log_format: str, *, base_level: int) -> None:
    """Log to stderr: ``base_level`` by default, one step more detailed per ``-v``."""
    level = max(logging.DEBUG, base_level - 10 * verbosity)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
