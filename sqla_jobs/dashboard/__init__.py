"""A web dashboard for a sqla_jobs app: the queue's counts, jobs, workers and periodic tasks,
and retry / cancel / abort / delete on one job, on selected jobs or on every job matching a
filter. Mounted in the host application (`create_blueprint` for Flask, `create_asgi_app` for
FastAPI, Starlette or any ASGI server, `create_wsgi_app`), or served alone by
``sqla-jobs dashboard``. Needs the ``dashboard`` extra (Jinja2): ``pip install
'sqla_jobs[dashboard]'``.
"""

from __future__ import annotations

from .asgi import create_asgi_app
from .core import Authorize, Dashboard
from .flask_app import create_blueprint
from .http import Access, Request, Response
from .wsgi import create_wsgi_app

__all__ = [
    "Access",
    "Authorize",
    "Dashboard",
    "Request",
    "Response",
    "create_asgi_app",
    "create_blueprint",
    "create_wsgi_app",
]
