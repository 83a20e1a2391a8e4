"""sqla_jobs with only its core dependencies: psycopg2 and aiopg come with extras, and a connector
whose driver is missing says which extra to install.

Each test runs in a fresh interpreter where the driver cannot be imported (``sys.modules[name] =
None`` makes ``import name`` fail as if it were not installed), so the modules this process
already loaded do not hide the failure.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_without(modules: list[str], code: str) -> str:
    """Run ``code`` in a fresh interpreter in which ``modules`` cannot be imported; its stdout."""
    prelude = f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sqla_jobs_imports_and_exports_every_name_without_psycopg2_or_aiopg() -> None:
    out = run_without(
        ["psycopg2", "aiopg"],
        """
        import sqla_jobs
        from sqla_jobs import *  # every public name, the connectors included
        print(len(sqla_jobs.__all__), AiopgConnector.__name__, Psycopg2Connector.__name__)
        """,
    )
    assert out.split()[1:] == ["AiopgConnector", "Psycopg2Connector"]


@pytest.mark.parametrize(
    ("build", "missing", "message"),
    [
        (
            "sqla_jobs.Psycopg2Connector()",
            ["psycopg2"],
            "Psycopg2Connector needs psycopg2: pip install 'sqla_jobs[psycopg2]'",
        ),
        (
            "sqla_jobs.AiopgConnector()",
            ["aiopg", "psycopg2"],
            "AiopgConnector needs aiopg: pip install 'sqla_jobs[aiopg]'",
        ),
        (
            "sqla_jobs.SQLAlchemyPsycopg2Connector(dsn='postgresql://app@db/app')",
            ["psycopg2"],
            "SQLAlchemyPsycopg2Connector needs psycopg2: pip install 'sqla_jobs[psycopg2]'",
        ),
        (
            "sqla_jobs.SQLAlchemyConnector(dsn='postgresql+psycopg2://app@db/app')",
            ["psycopg2"],
            "SQLAlchemyConnector needs psycopg2: pip install 'sqla_jobs[psycopg2]'",
        ),
    ],
)
def test_a_connector_whose_driver_is_missing_names_the_extra_to_install(
    build: str, missing: list[str], message: str
) -> None:
    out = run_without(
        missing,
        f"""
        import sqla_jobs
        try:
            {build}
        except ImportError as exc:
            print(exc)
            print(exc.name, type(exc.__cause__).__name__)
        """,
    )
    assert out.splitlines() == [message, f"{missing[0]} ModuleNotFoundError"]


def test_sqlalchemy_connector_on_psycopg_3_reports_its_errors_without_psycopg2() -> None:
    """The error translator must not need psycopg2 to tell a psycopg 3 error apart."""
    out = run_without(
        ["psycopg2", "aiopg"],
        """
        import sqla_jobs
        connector = sqla_jobs.SQLAlchemyConnector(dsn="postgresql://nobody@127.0.0.1:1/none")
        app = sqla_jobs.App(connector=connector)

        @app.task
        def noop() -> None: ...

        try:
            noop.defer()
        except sqla_jobs.JobsError as exc:
            print(type(exc).__name__)
        """,
    )
    assert out.strip() == "ConnectionFailed"


def test_the_dashboard_without_jinja2_names_the_extra_to_install() -> None:
    out = run_without(
        ["jinja2"],
        """
        import sqla_jobs
        try:
            import sqla_jobs.dashboard
        except ImportError as exc:
            print(exc)
            print(exc.name, type(exc.__cause__).__name__)
        """,
    )
    assert out.splitlines() == [
        "sqla_jobs.dashboard needs jinja2: pip install 'sqla_jobs[dashboard]'",
        "jinja2 ModuleNotFoundError",
    ]


def test_the_dashboard_imports_without_flask_and_says_so_only_when_a_blueprint_is_asked() -> None:
    out = run_without(
        ["flask"],
        """
        import sqla_jobs
        from sqla_jobs.dashboard import create_asgi_app, create_blueprint
        app = sqla_jobs.App(connector=sqla_jobs.SyncPsycopgConnector())
        try:
            create_blueprint(app, authorize=lambda request: True)
        except ImportError as exc:
            print(exc)
        """,
    )
    assert out.strip() == "create_blueprint needs Flask: pip install flask"


def test_without_opentelemetry_nothing_is_traced_and_everything_works() -> None:
    out = run_without(
        ["opentelemetry"],
        """
        import sqla_jobs
        app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector())
        tracing = app.job_manager.tracing
        with tracing.sending([]) as sending:
            pass
        print(tracing.tracer(), type(tracing.processing(None)).__name__)
        """,
    )
    assert out.split() == ["None", "nullcontext"]


def test_metrics_without_prometheus_client_name_the_extra() -> None:
    out = run_without(
        ["prometheus_client"],
        """
        import sqla_jobs
        app = sqla_jobs.App(connector=sqla_jobs.PsycopgConnector())
        try:
            sqla_jobs.Worker(app, sqla_jobs.WorkerOptions(metrics_port=9100))
        except sqla_jobs.MetricsUnavailable as exc:
            print(exc)
        """,
    )
    assert "pip install 'sqla_jobs[metrics]'" in out
