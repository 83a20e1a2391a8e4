"""The dashboard's own request and response, which every framework's adapter translates to and
from, and the rules of HTTP it keeps: same-origin POSTs, links relative to the mount point."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

#: Where the pages get their assets and what they may do: nothing from elsewhere, no inline
#: script, no framing by another site (an action button in a hidden frame).
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """What a request may do: see the pages, and act on jobs (retry, cancel, abort, delete)."""

    may_see: bool
    may_act: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One request, as the dashboard sees it whatever the framework.

    ``path`` is below the mount point: ``""`` for the mount point itself without its trailing
    slash, ``"/"`` for the overview, ``"/jobs/42"``; ``full_path`` is the whole path the client
    asked for. ``headers`` have lower-case names. ``native`` is the framework's own request
    (`flask.Request`, the ASGI scope, the WSGI environ), for ``authorize``.
    """

    method: str
    path: str
    full_path: str
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]
    form: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    native: Any = None

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, None when missing or empty."""
        values = self.query.get(name) or ()
        return values[0] if values and values[0] != "" else None

    def field(self, name: str) -> str | None:
        """The first value of form field ``name``, None when missing or empty."""
        values = self.form.get(name) or ()
        return values[0] if values and values[0] != "" else None

    @property
    def root(self) -> str:
        """The mount point, relative to this page: ``./`` or ``../`` repeated, so that a link
        works under any prefix and behind any proxy."""
        depth = max(self.path.count("/") - 1, 0)
        return "../" * depth or "./"


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def all_headers(self) -> list[tuple[str, str]]:
        return [("Content-Type", self.content_type), *SECURITY_HEADERS, *self.headers]


def redirect_into_mount(request: Request) -> Response:
    """The mount point without its slash (``/jobs``) redirects to itself with one (``jobs/``),
    by a relative location: no host or prefix to get wrong behind a proxy."""
    last = request.full_path.rstrip("/").rsplit("/", 1)[-1]
    location = f"{last}/" if last else "./"
    query = urlencode([(name, value) for name, values in request.query.items() for value in values])
    return Response(
        308,
        b"",
        "text/plain; charset=utf-8",
        (("Location", location + (f"?{query}" if query else "")),),
    )


def is_same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of this host: its ``Origin`` (else its ``Referer``)
    names the host the request was sent to. A request with neither is refused: browsers send
    ``Origin`` with every form POST."""
    host = request.headers.get("host", "").strip().lower()
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not host or not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == host


_BACK = re.compile(r"^(?:jobs(?:/\d+)?|workers|periodic)?(?:\?[^\s\\]*)?$")


def safe_back(value: str | None) -> str:
    """A page of the dashboard to go back to after an action (relative to the mount point):
    only the dashboard's own, never another site."""
    if value is not None and _BACK.match(value):
        return value
    return "jobs"
