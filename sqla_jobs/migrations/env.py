"""Alembic environment of the migrations shipped in the package (``sqla_jobs:migrations``)."""

from sqla_jobs.migrations._env import run_env

run_env()
