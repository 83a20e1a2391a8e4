"""Alembic environment at the repository root: the same logic as the package's own env.py."""

from sqla_jobs.migrations._env import run_env

run_env(configure_logging=True)
