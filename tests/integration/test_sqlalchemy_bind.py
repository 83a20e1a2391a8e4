"""Deferring inside the application's own SQLAlchemy transaction: ``task.configure(bind=...)``.

The job row is written by the caller's Session / Connection (sync on psycopg 3 and psycopg2,
async on psycopg 3) and shares its fate: visible to workers once the caller commits, gone with
a rollback, and the NOTIFY that wakes workers sent only on commit. Every assertion reads the
database through an independent psycopg connection, never through the session under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from helpers import sqlalchemy_url
from psycopg.rows import dict_row
from sqlalchemy import ForeignKey, String, create_engine, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session
from sqlalchemy.orm import sessionmaker as orm_sessionmaker

import sqla_jobs
from sqla_jobs import AlreadyEnqueued, App, JobsError, PsycopgConnector


class Base(DeclarativeBase):
    pass


class Order(Base):
    """The host application's own model, written in the same transaction as the job."""

    __tablename__ = "shop_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(String(50))


class Note(Base):
    __tablename__ = "shop_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_orders.id"))


class Reader:
    """An independent autocommit connection: sees only what was committed."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def jobs(self) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT id, task_name, args, queue, status::text AS status, queueing_lock "
            "FROM sqla_jobs_jobs ORDER BY id"
        ).fetchall()

    def orders(self) -> list[str]:
        return [r["item"] for r in self.conn.execute("SELECT item FROM shop_orders ORDER BY id")]


@pytest.fixture
def reader(db_url: str) -> Iterator[Reader]:
    r = Reader(db_url)
    yield r
    r.conn.close()


@pytest.fixture(params=["psycopg", "psycopg2"])
def engine(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    """The host application's sync engine, on psycopg 3 and on psycopg2."""
    engine = create_engine(sqlalchemy_url(db_url, request.param))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """The host application's async engine (psycopg 3)."""
    setup = create_engine(sqlalchemy_url(db_url, "psycopg"))
    Base.metadata.create_all(setup)
    setup.dispose()
    engine = create_async_engine(sqlalchemy_url(db_url, "psycopg"))
    yield engine
    await engine.dispose()


class Ran:
    """The job arguments the worker ran, in order."""

    def __init__(self) -> None:
        self.calls: list[int] = []


@pytest.fixture
def worker_app(db_url: str) -> tuple[App, Ran, Any]:
    """An app whose worker runs ``confirm(order_id)`` jobs, recording them."""
    app = App(connector=PsycopgConnector(conninfo=db_url))
    ran = Ran()

    @app.task(name="confirm", queue="emails")
    def confirm(order_id: int) -> None:
        ran.calls.append(order_id)

    return app, ran, confirm


async def drain(app: App) -> None:
    """Run a worker until nothing runnable is left."""
    async with app.open_async():
        await asyncio.wait_for(
            app.run_worker_async(wait=False, install_signal_handlers=False), timeout=10
        )


# -- sync Session and Connection ---------------------------------------------------------------


def test_job_deferred_in_a_session_is_invisible_until_commit(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with Session(engine) as session:
        order = Order(item="book")
        session.add(order)
        session.flush()
        order_id = order.id
        job_id = confirm.configure(bind=session).defer(order_id=order_id)
        assert reader.jobs() == []
        session.commit()
    jobs = reader.jobs()
    assert [(j["id"], j["task_name"], j["args"], j["queue"]) for j in jobs] == [
        (job_id, "confirm", {"order_id": order_id}, "emails")
    ]
    assert reader.orders() == ["book"]


def test_rollback_discards_the_job_with_the_row(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with Session(engine) as session:
        session.add(Order(item="book"))
        session.flush()
        confirm.configure(bind=session).defer(order_id=1)
        confirm.configure(bind=session).batch_defer({"order_id": 2}, {"order_id": 3})
        session.rollback()
    assert reader.jobs() == []
    assert reader.orders() == []


def test_batch_defer_in_a_session_commits_every_job_together(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with Session(engine) as session, session.begin():
        ids = confirm.configure(bind=session).batch_defer(*({"order_id": i} for i in range(3)))
        assert reader.jobs() == []
    assert [j["id"] for j in reader.jobs()] == ids


def test_defer_on_a_connection_follows_its_transaction(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with engine.connect() as conn:
        conn.execute(insert(Order).values(item="kept"))
        confirm.configure(bind=conn).defer(order_id=1)
        assert reader.jobs() == []
        conn.commit()
        conn.execute(insert(Order).values(item="dropped"))
        confirm.configure(bind=conn).defer(order_id=2)
        conn.rollback()
    assert [j["args"] for j in reader.jobs()] == [{"order_id": 1}]
    assert reader.orders() == ["kept"]


def test_scoped_session_defers_in_the_current_sessions_transaction(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    """Flask-SQLAlchemy's ``db.session`` is a scoped_session."""
    _, _, confirm = worker_app
    factory = scoped_session(orm_sessionmaker(engine))
    factory.add(Order(item="book"))
    confirm.configure(bind=factory).defer(order_id=1)
    assert reader.jobs() == []
    factory.commit()
    factory.remove()
    assert len(reader.jobs()) == 1


async def test_worker_never_runs_a_job_whose_transaction_is_open(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    app, ran, confirm = worker_app
    with Session(engine) as session:
        session.add(Order(item="book"))
        job_id = confirm.configure(bind=session).defer(order_id=7)
        await drain(app)
        assert ran.calls == []
        session.commit()
    assert [(j["id"], j["status"]) for j in reader.jobs()] == [(job_id, "todo")]
    await drain(app)
    assert ran.calls == [7]
    assert [j["status"] for j in reader.jobs()] == ["succeeded"]


def test_notify_reaches_listeners_only_when_the_transaction_commits(
    engine: Engine, db_url: str, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{sqla_jobs.schema.NOTIFY_CHANNEL}"')
        with Session(engine) as session:
            confirm.configure(bind=session).defer(order_id=1)
            session.rollback()
            confirm.configure(bind=session).defer(order_id=2)
            assert list(listener.notifies(timeout=0.3)) == []
            session.commit()
        received = list(listener.notifies(timeout=5, stop_after=1))
        received += list(listener.notifies(timeout=0.3))
    assert [(n.channel, n.payload) for n in received] == [
        (sqla_jobs.schema.NOTIFY_CHANNEL, "emails")
    ]


def test_queueing_lock_clash_in_a_transaction_leaves_it_usable(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with Session(engine) as session:
        order = Order(item="book")
        session.add(order)
        session.flush()
        first = confirm.configure(bind=session, queueing_lock="order-1").defer(order_id=1)
        with pytest.raises(AlreadyEnqueued) as caught:
            confirm.configure(bind=session, queueing_lock="order-1").defer(order_id=1)
        assert caught.value.queueing_lock == "order-1"
        # The transaction goes on: more writes, then a commit that keeps everything before.
        session.add(Note(order_id=order.id))
        session.add(Order(item="pen"))
        session.commit()
    assert [(j["id"], j["queueing_lock"]) for j in reader.jobs()] == [(first, "order-1")]
    assert reader.orders() == ["book", "pen"]


def test_queueing_lock_clash_with_a_committed_job_leaves_the_transaction_usable(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    app, _, confirm = worker_app
    with app.open():
        confirm.configure(queueing_lock="nightly").defer(order_id=0)
    with Session(engine) as session:
        session.add(Order(item="book"))
        with pytest.raises(AlreadyEnqueued):
            confirm.configure(bind=session, queueing_lock="nightly").defer(order_id=1)
        session.commit()
    assert [j["args"] for j in reader.jobs()] == [{"order_id": 0}]
    assert reader.orders() == ["book"]


def test_defer_by_task_name_with_bind(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    """A web process that does not import the task's code defers it by name."""
    app, _, _ = worker_app
    web = App(connector=PsycopgConnector(conninfo=""))  # never opened: bind= does the work
    with Session(engine) as session:
        web.configure_task("confirm", queue="emails", bind=session).defer(order_id=3)
        assert reader.jobs() == []
        session.commit()
    assert [(j["task_name"], j["queue"]) for j in reader.jobs()] == [("confirm", "emails")]
    assert app.tasks["confirm"].name == "confirm"


# -- refusals ----------------------------------------------------------------------------------


def test_bind_to_an_engine_is_refused_with_the_types_it_takes(
    engine: Engine, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with pytest.raises(TypeError, match="Session, Connection, AsyncSession or AsyncConnection"):
        confirm.configure(bind=engine)


def test_bind_to_a_session_on_another_database_is_refused_naming_the_drivers(
    worker_app: tuple[App, Ran, Any],
) -> None:
    _, _, confirm = worker_app
    sqlite = create_engine("sqlite://")
    with Session(sqlite) as session, pytest.raises(JobsError) as caught:
        confirm.configure(bind=session).defer(order_id=1)
    message = str(caught.value)
    assert "sqlite+pysqlite" in message
    assert "postgresql+psycopg://" in message and "postgresql+psycopg2://" in message


async def test_defer_async_with_a_sync_session_is_refused_with_the_fix(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with Session(engine) as session:
        with pytest.raises(JobsError, match=r"\.defer\(\)"):
            await confirm.configure(bind=session).defer_async(order_id=1)
        session.commit()
    assert reader.jobs() == []


# -- async: AsyncSession and AsyncConnection ---------------------------------------------------


async def test_async_session_commit_makes_the_job_visible_and_rollback_drops_it(
    async_engine: AsyncEngine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    async with AsyncSession(async_engine) as session:
        session.add(Order(item="dropped"))
        await confirm.configure(bind=session).defer_async(order_id=1)
        await session.rollback()
        session.add(Order(item="kept"))
        await session.flush()
        ids = await confirm.configure(bind=session).batch_defer_async(
            {"order_id": 2}, {"order_id": 3}
        )
        assert reader.jobs() == []
        await session.commit()
    assert [(j["id"], j["args"]) for j in reader.jobs()] == [
        (ids[0], {"order_id": 2}),
        (ids[1], {"order_id": 3}),
    ]
    assert reader.orders() == ["kept"]


async def test_async_connection_defers_in_its_transaction(
    async_engine: AsyncEngine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    async with async_engine.connect() as conn:
        await conn.execute(insert(Order).values(item="book"))
        job_id = await confirm.configure(bind=conn).defer_async(order_id=1)
        assert reader.jobs() == []
        await conn.commit()
    assert [j["id"] for j in reader.jobs()] == [job_id]


async def test_async_queueing_lock_clash_leaves_the_session_usable(
    async_engine: AsyncEngine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    async with AsyncSession(async_engine) as session:
        session.add(Order(item="book"))
        deferrer = confirm.configure(bind=session, queueing_lock="order-1")
        await deferrer.defer_async(order_id=1)
        with pytest.raises(AlreadyEnqueued):
            await deferrer.defer_async(order_id=1)
        with pytest.raises(AlreadyEnqueued):
            await deferrer.batch_defer_async({"order_id": 2})
        assert (await session.scalars(select(Order.item))).all() == ["book"]
        await session.commit()
    assert [j["args"] for j in reader.jobs()] == [{"order_id": 1}]
    assert reader.orders() == ["book"]


async def test_async_worker_never_runs_a_job_whose_transaction_is_open(
    async_engine: AsyncEngine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    app, ran, confirm = worker_app
    async with AsyncSession(async_engine) as session:
        await confirm.configure(bind=session).defer_async(order_id=5)
        await drain(app)
        assert ran.calls == []
        await session.commit()
    await drain(app)
    assert ran.calls == [5]


async def test_sync_defer_with_an_async_session_is_refused_with_the_fix(
    async_engine: AsyncEngine, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    async with AsyncSession(async_engine) as session:
        with pytest.raises(JobsError, match="defer_async"):
            confirm.configure(bind=session).defer(order_id=1)


# -- tags, meta and unique jobs in the caller's transaction -------------------------------------


def test_tags_and_meta_are_written_in_the_callers_transaction(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    app, _, confirm = worker_app
    with Session(engine) as session:
        deferrer = confirm.configure(bind=session, tags=["tenant:7"], meta={"order": 1})
        one = deferrer.defer(order_id=1)
        batch = deferrer.batch_defer({"order_id": 2}, {"order_id": 3})
        session.rollback()
        assert reader.jobs() == []
        one = deferrer.defer(order_id=1)
        batch = deferrer.batch_defer({"order_id": 2}, {"order_id": 3})
        session.commit()
    with app.open():
        found = app.job_manager.list_jobs(tags=["tenant:7"])
    assert sorted(job.id for job in found) == sorted([one, *batch])
    assert {(job.tags, tuple(job.meta.items())) for job in found} == {
        (("tenant:7",), (("order", 1),))
    }


def test_unique_clash_in_a_transaction_leaves_it_usable_and_return_existing_finds_the_job(
    engine: Engine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    with Session(engine) as session:
        order = Order(item="book")
        session.add(order)
        session.flush()
        first = confirm.configure(bind=session, unique=True).defer(order_id=1)
        with pytest.raises(AlreadyEnqueued) as caught:
            confirm.configure(bind=session, unique=True).defer(order_id=1)
        assert caught.value.job_id == first
        returning = confirm.configure(bind=session, unique=True, on_conflict="return_existing")
        assert returning.defer(order_id=1) == first
        assert returning.batch_defer({"order_id": 1}, {"order_id": 2})[0] == first
        session.add(Note(order_id=order.id))
        session.commit()
    assert [j["args"] for j in reader.jobs()] == [{"order_id": 1}, {"order_id": 2}]
    assert reader.orders() == ["book"]


async def test_async_unique_clash_leaves_the_session_usable(
    async_engine: AsyncEngine, reader: Reader, worker_app: tuple[App, Ran, Any]
) -> None:
    _, _, confirm = worker_app
    async with AsyncSession(async_engine) as session:
        first = await confirm.configure(bind=session, unique=True, tags=["a"]).defer_async(n=1)
        with pytest.raises(AlreadyEnqueued):
            await confirm.configure(bind=session, unique=True).defer_async(n=1)
        again = confirm.configure(bind=session, unique=True, on_conflict="return_existing")
        assert await again.defer_async(n=1) == first
        session.add(Order(item="pen"))
        await session.commit()
    assert [j["id"] for j in reader.jobs()] == [first]
    assert reader.orders() == ["pen"]
