"""The gateway database: SQLite by default (WAL), PostgreSQL by URL.

``make_engine`` configures the dialect (SQLite: WAL, ``synchronous=NORMAL``, a busy timeout, one
connection per thread; PostgreSQL: a bounded pool with pre-ping), ``init_db`` creates the tables
(and indexes missing from an older database) and the access-log sequencer row, ``ping``
answers ``/healthz``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import SQLModel

from gateway.errors import DatabaseUnavailable
from gateway.storage import tables as models

__all__ = ["db_guard", "init_db", "is_postgres", "is_sqlite", "make_engine", "ping"]


@contextlib.contextmanager
def db_guard() -> Iterator[None]:
    """Map a database that cannot be reached (``OperationalError``) to ``DatabaseUnavailable``."""
    try:
        yield
    except OperationalError as exc:
        raise DatabaseUnavailable(reason=type(exc.orig).__name__ if exc.orig else "error") from exc


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    """An engine for ``url`` with the dialect's settings for a concurrent service."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def init_db(engine: Engine) -> None:
    """Create the tables (idempotent) and the sequencer row."""
    SQLModel.metadata.create_all(engine, tables=list(models.TABLES))
    # create_all skips indexes of tables that already exist (a database made by an older
    # version): add any that are missing.
    for table in models.TABLES:
        for index in table.indexes:
            # another replica may create it meanwhile
            with contextlib.suppress(IntegrityError, ProgrammingError, OperationalError):
                index.create(engine, checkfirst=True)
    seq, log = models.LOG_SEQUENCER, models.ACCESS_LOG
    try:
        with engine.begin() as conn:
            if conn.execute(select(seq.c.id).where(seq.c.id == 1)).first() is None:
                count = conn.execute(select(func.count()).select_from(log)).scalar_one()
                conn.execute(insert(seq).values(id=1, next_idx=int(count)))
    except IntegrityError:  # another replica created it first
        pass


def ping(engine: Engine) -> str:
    """``"ok (<dialect>)"``; raises when the database does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return f"ok ({engine.dialect.name})"
