"""How the pages are written: Jinja2 templates from the package, every value escaped, and the
throughput chart drawn on the server as SVG."""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ..statuses import JobStatus

try:
    import jinja2
    from markupsafe import Markup, escape
except ImportError as exc:  # pragma: no cover - exercised in a fresh interpreter
    raise ImportError(
        "sqla_jobs.dashboard needs jinja2: pip install 'sqla_jobs[dashboard]'", name="jinja2"
    ) from exc


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sqla_jobs.dashboard", "templates"),
        autoescape=True,  # every value, whatever the template's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["number"] = number
    env.filters["pretty_json"] = pretty_json
    env.globals["query"] = query_string
    return env


def page(template: str, **values: Any) -> bytes:
    return environment().get_template(template).render(**values).encode()


def when(value: datetime.datetime | float | None) -> str:
    """A time in UTC, to the second."""
    if value is None:
        return "—"
    if not isinstance(value, datetime.datetime):
        value = datetime.datetime.fromtimestamp(value, datetime.UTC)
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A number of seconds as people read it: 45 s, 3 min 20 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def number(value: int) -> str:
    return f"{value:,}"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def query_string(values: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> str:
    """``?a=1&b=2`` from the values that are set (lists repeat their name), or ``""``."""
    items = values.items() if isinstance(values, Mapping) else values
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        if value is None or value == "":
            continue
        for one in value if isinstance(value, list | tuple) else [value]:
            pairs.append((name, str(one)))
    return f"?{urlencode(pairs)}" if pairs else ""


_FAILED = {JobStatus.FAILED.value, JobStatus.ABORTED.value, JobStatus.CANCELLED.value}


def throughput_svg(
    minutes: Sequence[Mapping[str, Any]], width: int = 720, height: int = 140
) -> Markup:
    """Finished jobs per minute, one stacked bar per minute (succeeded below, the others above),
    with a title on each bar for its numbers."""
    top = max((sum(m["counts"].values()) for m in minutes), default=0) or 1
    bar = width / max(len(minutes), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 16}" role="img" '
        f'aria-label="finished jobs per minute, last hour" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" class="axis"/>',
    ]
    for index, minute in enumerate(minutes):
        counts: Mapping[str, int] = minute["counts"]
        ok = counts.get(JobStatus.SUCCEEDED.value, 0)
        bad = sum(n for status, n in counts.items() if status in _FAILED)
        x = index * bar
        label = escape(
            f"{when(minute['minute'])}: {ok} succeeded, {bad} failed, cancelled or aborted"
        )
        ok_h = height * ok / top
        bad_h = height * bad / top
        parts.append(f"<g><title>{label}</title>")
        parts.append(
            f'<rect class="ok" x="{x + 1:.1f}" y="{height - ok_h:.1f}" '
            f'width="{bar - 2:.1f}" height="{ok_h:.1f}"/>'
        )
        parts.append(
            f'<rect class="bad" x="{x + 1:.1f}" y="{height - ok_h - bad_h:.1f}" '
            f'width="{bar - 2:.1f}" height="{bad_h:.1f}"/>'
        )
        parts.append("</g>")
    parts.append(f'<text x="0" y="{height + 13}" class="label">60 min ago</text>')
    parts.append(f'<text x="{width}" y="{height + 13}" class="label end">now</text>')
    parts.append(f'<text x="4" y="11" class="label">{top:,} / min</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
