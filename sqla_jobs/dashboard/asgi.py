"""The dashboard as an ASGI application: ``fastapi_app.mount("/jobs", create_asgi_app(app))``,
or served alone by any ASGI server. Plain ASGI: no framework needed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .core import Authorize, Dashboard
from .http import Request, Response

if TYPE_CHECKING:
    from ..app import App

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The largest form accepted: a thousand job ids are some 10 KiB.
MAX_BODY = 1 << 20


def create_asgi_app(
    app: App, *, read_only: bool = False, authorize: Authorize | None = None, **options: Any
) -> ASGIApp:
    """An ASGI application serving ``app``'s dashboard under whatever path it is mounted at.
    ``authorize(request)`` (a function or a coroutine function) gets a
    `sqla_jobs.dashboard.Request` whose ``native`` is the ASGI scope
    (``starlette.requests.Request(request.native)`` reads its cookies and session)."""
    dashboard = Dashboard(app, read_only=read_only, authorize=authorize, **options)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _send(send, Response(413, b"Request too large", "text/plain"), head=False)
                return
        request = _request(scope, body)
        access = await dashboard.access_async(request)
        response = await dashboard.respond_async(request, access)
        await _send(send, response, head=scope["method"] == "HEAD")

    return asgi


def _request(scope: Scope, body: bytes) -> Request:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    # Starlette's Mount keeps the whole path and sets root_path to the mount point; other
    # servers hand the path below root_path.
    below = path[len(root) :] if root and path.startswith(root) else path
    full = path if root and path.startswith(root) else root + path
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }
    form: dict[str, list[str]] = {}
    if scope["method"] == "POST" and headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return Request(scope["method"], below, full, query, headers, form, scope)


async def _send(send: Send, response: Response, *, head: bool) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.all_headers()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Served alone: nothing to start (the connector opens its pool on first use)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
