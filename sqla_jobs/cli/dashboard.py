"""``sqla-jobs dashboard``: the web dashboard served alone, by the standard library's WSGI
server (threaded), for a machine with no web application of its own to mount it in."""

from __future__ import annotations

import argparse
import logging
import os
import socketserver
import sys
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..app import App
from ..connectors.psycopg import SyncPsycopgConnector
from .common import APP_ENV, CliError, build_app, int_at_least, libpq_url, seconds, subparser

logger = logging.getLogger("sqla_jobs.dashboard")


def add_dashboard_command(commands: Any) -> None:
    parser = subparser(
        commands,
        "dashboard",
        "serve the web dashboard alone (pages and actions on jobs) until interrupted",
        run_dashboard,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=int_at_least(0), default=8000, help="port (8000; 0 picks a free one)"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="show the jobs, refuse every action on them"
    )
    parser.add_argument(
        "--statement-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="the longest any of the dashboard's statements may run before the server "
        "cancels it (10; 0: no limit), whatever the connector",
    )


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def dashboard_app(args: argparse.Namespace) -> App:
    """``--app``'s app as it is, or on a connection of its own (``--database-url``, or no
    ``--app``); its tables in ``--schema``'s schema."""
    app = build_app(args)
    if (args.app or os.environ.get(APP_ENV)) and not args.database_url:
        return app
    conninfo = libpq_url(args.database_url or os.environ.get("DATABASE_URL", ""))
    return app.with_connector(SyncPsycopgConnector(conninfo=conninfo))


def run_dashboard(args: argparse.Namespace) -> int:
    try:
        from ..dashboard import create_wsgi_app
    except ImportError as exc:
        raise CliError(str(exc)) from exc
    app = dashboard_app(args)
    wsgi = create_wsgi_app(
        app, read_only=args.read_only, statement_timeout=args.statement_timeout or None
    )
    try:
        server = make_server(
            args.host, args.port, wsgi, server_class=_Server, handler_class=_Handler
        )
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    mode = " (read-only)" if args.read_only else ""
    print(
        f"sqla-jobs dashboard{mode} on http://{args.host}:{server.server_port}/ "
        f"({app.connector.describe()}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        with server:
            server.serve_forever()
    except KeyboardInterrupt:
        return 0
    finally:
        app.close()
    return 0
