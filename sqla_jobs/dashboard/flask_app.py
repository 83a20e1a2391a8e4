"""The dashboard as a Flask blueprint: ``flask_app.register_blueprint(bp, url_prefix="/jobs")``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import Authorize, Dashboard
from .http import Request

if TYPE_CHECKING:
    import flask

    from ..app import App


def create_blueprint(
    app: App,
    *,
    read_only: bool = False,
    authorize: Authorize | None = None,
    name: str = "sqla_jobs_dashboard",
    **options: Any,
) -> flask.Blueprint:
    """A Flask `Blueprint` serving ``app``'s dashboard under whatever prefix it is registered
    at. ``authorize(request)`` gets a `sqla_jobs.dashboard.Request` whose ``native`` is
    `flask.request`; ``options``: see `Dashboard`."""
    try:
        import flask
    except ImportError as exc:
        raise ImportError("create_blueprint needs Flask: pip install flask", name="flask") from exc

    dashboard = Dashboard(app, read_only=read_only, authorize=authorize, **options)
    blueprint = flask.Blueprint(name, __name__)

    def view(path: str = "") -> flask.Response:
        native = flask.request
        slash = native.path.endswith("/")
        below = f"/{path}" if path else ""
        if slash and not below.endswith("/"):
            below += "/"
        request = Request(
            method=native.method,
            path=below,
            full_path=native.path,
            query=native.args.to_dict(flat=False),
            headers={key.lower(): value for key, value in native.headers.items()},
            form=native.form.to_dict(flat=False) if native.method == "POST" else {},
            native=native,
        )
        response = dashboard.respond(request, dashboard.access(request))
        return flask.Response(
            b"" if native.method == "HEAD" else response.body,
            status=response.status,
            headers=response.all_headers(),
        )

    methods = ["GET", "HEAD", "POST"]
    blueprint.add_url_rule("/", "index", view, methods=methods, strict_slashes=False)
    blueprint.add_url_rule("/<path:path>", "page", view, methods=methods)
    return blueprint
