"""A password given to sqla_jobs never shows: not in the repr of a connector or an app, not in
the error raised when the server cannot be reached, not in the logs (DEBUG), not in the
command line's output. Every connector, every construction form that carries a password
(connectors.md), and the ``sqla-jobs`` commands that connect.

The server here is one that is not there (a closed port); tests/integration/test_roles_scram.py
checks the same when a password server refuses a wrong password.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from password_helpers import (
    assert_hidden,
    build_connector,
    connector_forms,
    exception_texts,
    new_password,
    password_token,
)

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Connectors

CLI_TIMEOUT = 60


def closed_port_url(password: str) -> str:
    """A URL with ``password`` to a port nothing listens on (1: privileged, never a server)."""
    return f"postgresql://app:{quote(password, safe='')}@127.0.0.1:1/jobs?connect_timeout=5"


@pytest.mark.parametrize(("kind", "form"), connector_forms())
async def test_an_unreachable_server_is_reported_without_the_password(
    connectors: type[Connectors],
    kind: str,
    form: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = new_password()
    connector = build_connector(connectors, kind, form, closed_port_url(password), monkeypatch)
    app = sqla_jobs.App(connector=connector)
    task = app.configure_task("tests.anything")

    failures: list[BaseException] = []
    if connector.can_run_worker:
        with pytest.raises(sqla_jobs.ConnectionFailed) as caught_async:
            await app.open_async()
        failures.append(caught_async.value)
    with pytest.raises(sqla_jobs.ConnectionFailed) as caught:
        task.defer(n=1)  # the sync side (an async connector's sync twin)
    failures.append(caught.value)
    await app.close_async()

    assert all("Could not connect to PostgreSQL" in str(failure) for failure in failures)
    assert_hidden(
        password_token(password),
        repr(connector),
        str(connector),
        connector.describe(),
        repr(app),
        str(app),
        *(text for failure in failures for text in exception_texts(failure)),
        caplog.text,
        *(repr(record.args) for record in caplog.records),
        *(repr(vars(record)) for record in caplog.records),
    )


@pytest.mark.parametrize(
    "command",
    [
        ["defer", "tests.anything", '{"n": 1}'],
        ["worker", "--no-wait"],
        ["healthchecks"],
        ["jobs", "list"],
        ["jobs", "counts"],
        ["schema", "current"],
        ["schema", "upgrade"],
    ],
    ids=lambda command: "-".join(command[:2]) if command[0] in ("jobs", "schema") else command[0],
)
@pytest.mark.parametrize("verbosity", [[], ["-vv"]], ids=["quiet", "debug"])
def test_the_cli_reports_an_unreachable_server_without_the_password(
    command: list[str], verbosity: list[str]
) -> None:
    password = new_password()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("SQLA_JOBS_APP", None)
    env["DATABASE_URL"] = closed_port_url(password)

    result = subprocess.run(
        [sys.executable, "-m", "sqla_jobs", *verbosity, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "127.0.0.1" in result.stdout + result.stderr  # says where it tried
    assert_hidden(password_token(password), result.stdout, result.stderr)
