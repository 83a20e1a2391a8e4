"""The dashboard without a framework: a request in, a response out.

`Dashboard.handle` is an operation (`sqla_jobs.operations`): the Flask and WSGI adapters drive
it with the job manager's sync runner, the ASGI adapter with its async one, so every page and
action is written once. ``authorize`` runs first, in the adapter (it may be async there).
"""

from __future__ import annotations

import importlib.resources
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from .. import operations as ops
from ..errors import JobsError, MetricsUnavailable, StatementCancelled
from ..operations import Operation
from . import views
from .http import Access, Request, Response, is_same_origin, redirect_into_mount
from .views import Config

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger("sqla_jobs.dashboard")

#: ``authorize(request)``: may the request see the dashboard, and may it act on jobs. Returns
#: ``(may_see, may_act)``, or one bool for both; under ASGI it may be a coroutine function.
AuthorizeResult: TypeAlias = "tuple[bool, bool] | bool | Access"
Authorize: TypeAlias = Callable[[Request], "AuthorizeResult | Awaitable[AuthorizeResult]"]

_STATIC = {
    "/static/dashboard.js": "text/javascript; charset=utf-8",
    "/static/dashboard.css": "text/css; charset=utf-8",
}
_JOB = re.compile(r"^/jobs/(\d{1,18})/?$")
_WORKFLOW = re.compile(r"^/workflows/(\d{1,18})/?$")


class Dashboard:
    """The pages and actions of one app's dashboard; see `create_blueprint`,
    `create_asgi_app` and `create_wsgi_app` for mounting it.

    ``statement_timeout`` (seconds, 10; None: no bound) is set on each of the dashboard's
    statements alone, whatever connector the app has (the host's own Engine included): a
    page that would read for longer is cancelled by the server and says so.
    ``bulk_limit``: the most jobs one action on "all matching" takes."""

    def __init__(
        self,
        app: App,
        *,
        read_only: bool = False,
        authorize: Authorize | None = None,
        bulk_limit: int = 1000,
        page_size: int = 50,
        refresh_seconds: float = 5.0,
        stalled_after: float = 60.0,
        statement_timeout: float | None = 10.0,
    ) -> None:
        if bulk_limit < 1 or page_size < 1:
            raise ValueError(
                f"bulk_limit and page_size must be at least 1, not {bulk_limit}, {page_size}"
            )
        if statement_timeout is not None and not statement_timeout > 0:
            raise ValueError(
                "statement_timeout must be more than 0 seconds, or None for no bound, not "
                f"{statement_timeout!r}"
            )
        self.app = app
        self.manager = app.job_manager
        #: The app's statements, each cancelled by the server past ``statement_timeout``
        #: seconds (that statement alone: the host's pooled connections keep their settings).
        self.statements = (
            app.statements
            if statement_timeout is None
            else app.statements.bounded(statement_timeout)
        )
        #: Seconds a read of the queue's state serves ``/metrics`` for.
        self.metrics_cache_seconds = 5.0
        self._metrics_cache: tuple[float, Any] | None = None
        self.authorize = authorize
        self.config = Config(
            read_only=read_only,
            bulk_limit=bulk_limit,
            page_size=page_size,
            refresh_seconds=refresh_seconds,
            stalled_after=stalled_after,
            periodic_tasks=app.periodic_tasks,
        )
        if authorize is None:
            what = (
                "see every job"
                if read_only
                else "see every job and retry, cancel, abort or delete it"
            )
            logger.warning(
                "The sqla_jobs dashboard is open: whoever reaches it may %s. Pass "
                "authorize=... (or mount it behind your own authentication).",
                what,
                extra={"read_only": read_only},
            )

    # -- access ----------------------------------------------------------------------------------

    def access(self, request: Request) -> Access:
        """``authorize``'s answer for a sync framework (an async ``authorize`` is refused)."""
        if self.authorize is None:
            return Access(True, True)
        answer = self.authorize(request)
        if inspect.isawaitable(answer):
            close = getattr(answer, "close", None)
            if close is not None:
                close()  # never awaited: do not leave a warning behind
            raise TypeError(
                "authorize returned an awaitable, but this dashboard is served by a sync "
                "framework (Flask, WSGI): pass a plain function."
            )
        return as_access(answer)

    async def access_async(self, request: Request) -> Access:
        if self.authorize is None:
            return Access(True, True)
        answer = self.authorize(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return as_access(answer)

    # -- requests --------------------------------------------------------------------------------

    def handle(self, request: Request, access: Access) -> Operation[Response]:
        """The response to ``request``, as an operation for the job manager's runners."""
        config = self.config
        if not access.may_see:
            return views.message(
                request, config, access, 403, "Forbidden", "You may not see the jobs."
            )
        path = request.path
        if path == "":
            return redirect_into_mount(request)
        if request.method == "POST":
            if path.rstrip("/") != "/actions":
                return views.message(
                    request, config, access, 405, "Not allowed", "Only actions are posted."
                )
            if config.read_only or not access.may_act:
                why = (
                    "This dashboard is read-only."
                    if config.read_only
                    else "You may not act on jobs."
                )
                return views.message(request, config, access, 403, "Forbidden", why)
            if not is_same_origin(request):
                return views.message(
                    request,
                    config,
                    access,
                    403,
                    "Forbidden",
                    "Actions are accepted only from the dashboard's own pages (same origin).",
                )
            return (yield from views.action(request, config, access))
        if request.method not in ("GET", "HEAD"):
            return views.message(request, config, access, 405, "Not allowed", "GET or POST only.")
        if path in _STATIC:
            return _static(path)
        if path == "/":
            return (yield from views.overview(request, config, access))
        stripped = path.rstrip("/")
        if stripped == "/jobs":
            return (yield from views.jobs_list(request, config, access))
        if match := _JOB.match(path):
            return (yield from views.job_page(request, config, access, int(match.group(1))))
        if match := _WORKFLOW.match(path):
            workflow_id = int(match.group(1))
            return (yield from views.workflow_page(request, config, access, workflow_id))
        if stripped == "/workers":
            return (yield from views.workers_page(request, config, access))
        if stripped == "/periodic":
            return (yield from views.periodic_page(request, config, access))
        if stripped == "/metrics":
            return (yield from self._metrics())
        return views.message(request, config, access, 404, "Not found", "No such page.")

    def _metrics(self) -> Operation[Response]:
        """The queue's state for Prometheus (`sqla_jobs.metrics`), read at most every
        ``metrics_cache_seconds``."""
        from .. import metrics

        try:
            metrics.require_prometheus()
        except MetricsUnavailable as exc:
            return Response(501, f"{exc}\n".encode(), "text/plain; charset=utf-8")
        now = time.monotonic()
        cached = self._metrics_cache
        if cached is None or now - cached[0] >= self.metrics_cache_seconds:
            state: metrics.QueueState | None
            try:
                state = yield from metrics.queue_state(self.config.stalled_after)
            except JobsError as exc:  # down, timed out, tables missing, connector not open
                logger.warning("dashboard metrics: the queue's state could not be read: %s", exc)
                state = None
            cached = self._metrics_cache = (now, state)
        body = metrics.exposition(metrics.queue_families(cached[1]))
        return Response(200, body, metrics.CONTENT_TYPE, (("Cache-Control", "no-store"),))

    def failure(self, request: Request, exc: JobsError) -> Response:
        """The page for a database that failed (down, timed out, tables missing); for
        ``/metrics``, ``sqla_jobs_database_up 0``."""
        logger.warning("dashboard: %s", exc, extra={"path": request.full_path})
        if request.path.rstrip("/") == "/metrics":
            from .. import metrics

            self._metrics_cache = (time.monotonic(), None)
            body = metrics.exposition(metrics.queue_families(None))
            return Response(200, body, metrics.CONTENT_TYPE, (("Cache-Control", "no-store"),))
        if isinstance(exc, StatementCancelled):
            title = "The database took too long"
        else:
            title = "The database did not answer"
        return views.message(request, self.config, Access(True, False), 503, title, str(exc))

    def respond(self, request: Request, access: Access) -> Response:
        """Sync: the response, through the app's job manager on its connector."""
        try:
            return ops.run(self.manager.connector, self.handle(request, access), self.statements)
        except JobsError as exc:
            return self.failure(request, exc)

    async def respond_async(self, request: Request, access: Access) -> Response:
        try:
            return await ops.run_async(
                self.manager.connector, self.handle(request, access), self.statements
            )
        except JobsError as exc:
            return self.failure(request, exc)


def as_access(answer: Any) -> Access:
    if isinstance(answer, Access):
        return answer
    if isinstance(answer, bool):
        return Access(answer, answer)
    if isinstance(answer, tuple) and len(answer) == 2:
        return Access(bool(answer[0]), bool(answer[0]) and bool(answer[1]))
    raise TypeError(f"authorize must return (may_see, may_act) or one bool, not {answer!r}")


def _static(path: str) -> Response:
    name = path.rsplit("/", 1)[-1]
    body = importlib.resources.files("sqla_jobs.dashboard").joinpath("static", name).read_bytes()
    return Response(200, body, _STATIC[path], (("Cache-Control", "max-age=300"),))
