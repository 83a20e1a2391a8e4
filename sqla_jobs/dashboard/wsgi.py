"""The dashboard as a WSGI application: what ``sqla-jobs dashboard`` serves, and a way to
mount it in any WSGI server or dispatcher without Flask."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .core import Authorize, Dashboard
from .http import Request

if TYPE_CHECKING:
    from ..app import App

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MAX_BODY = 1 << 20

_REASONS = {
    200: "OK",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    503: "Service Unavailable",
}


def create_wsgi_app(
    app: App, *, read_only: bool = False, authorize: Authorize | None = None, **options: Any
) -> WSGIApp:
    """A WSGI application serving ``app``'s dashboard under its ``SCRIPT_NAME``.
    ``authorize(request)`` gets a `sqla_jobs.dashboard.Request` whose ``native`` is the WSGI
    environ."""
    dashboard = Dashboard(app, read_only=read_only, authorize=authorize, **options)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        if size > MAX_BODY:
            start_response("413 Content Too Large", [("Content-Type", "text/plain")])
            return [b"Request too large"]
        body = environ["wsgi.input"].read(size) if size else b""
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        form: dict[str, list[str]] = {}
        if method == "POST" and headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        script = environ.get("SCRIPT_NAME", "")
        below = _text(environ.get("PATH_INFO", ""))
        request = Request(
            method,
            below,
            script + below,
            parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            headers,
            form,
            environ,
        )
        response = dashboard.respond(request, dashboard.access(request))
        reason = _REASONS.get(response.status, "")
        start_response(f"{response.status} {reason}", response.all_headers())
        return [b"" if method == "HEAD" else response.body]

    return wsgi


def _text(path: str) -> str:
    """PATH_INFO as text: WSGI hands it as latin-1 characters of its UTF-8 bytes."""
    try:
        return path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return path
