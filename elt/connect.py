"""Logging in to the databases (psycopg), with clear failures.

`pg_isready` (startup.py) only asks whether the server accepts connections:
it does not log in. So after it answers, the job logs in for real, which is
where a wrong password, user or database name shows up, and explains it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import RowFactory, dict_row

from elt.config import DatabaseSettings, Settings, same_database_error
from elt.errors import ConnectionFailed, message_lines
from elt.processes import APPLICATION_NAME
from elt.sql import read_sql
from elt.startup import HeadStart, StartedTool, wait_for_postgres

# The one connection type of the job: psycopg's default tuple rows. Queries
# whose columns are read use a cursor with a row factory (fetch_one, fetch_all).
Connection = psycopg.Connection[tuple[object, ...]]


def _hint_for(db: DatabaseSettings, error_text: str) -> str:
    prefix = db.env_prefix
    text = error_text.lower()
    if "password" in text:
        return f"Check {prefix}USER and {prefix}PASSWORD (or {prefix}PASSWORD_FILE)."
    if "database" in text and "does not exist" in text:
        return f"Check {prefix}DB, or create that database on the server."
    if "role" in text and "does not exist" in text:
        return f"Check {prefix}USER: no such role on the server."
    if "pg_hba.conf" in text:
        return f"The server's pg_hba.conf refuses {prefix}USER from this host; ask its admin."
    return f"Check {prefix}HOST and {prefix}PORT and that the server accepts connections."


def connect(db: DatabaseSettings, settings: Settings, *, autocommit: bool = False) -> Connection:
    """Log in with the driver, or raise ConnectionFailed saying which setting to check."""
    try:
        return psycopg.connect(
            host=db.host,
            port=db.port,
            dbname=db.dbname,
            user=db.user,
            password=db.password or "",
            # Never read a ~/.pgpass or service file the settings did not ask for.
            passfile="/dev/null",
            connect_timeout=settings.connect_timeout_seconds,
            application_name=APPLICATION_NAME,
            # Text as str whatever the server's encoding: on a SQL_ASCII database
            # the driver would otherwise return bytes (the server then sends
            # the bytes as stored, and psycopg decodes them as UTF-8).
            client_encoding="UTF8",
            autocommit=autocommit,
        )
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"Cannot log in to the {db.role} database {db.label}",
            hint=_hint_for(db, str(exc)),
            stderr_tail=message_lines(exc),
            database=db.role,
            host=db.host,
        ) from None


def fetch_all[Row](
    conn: Connection, query: str | sql.Composed, rows: RowFactory[Row], params: Params | None = None
) -> list[Row]:
    """Every row of `query`, each made by `rows` (dict_row, class_row(...)): columns by name."""
    with conn.cursor(row_factory=rows) as cursor:
        return cursor.execute(query, params).fetchall()


def server_encoding(conn: Connection) -> str:
    """The server's encoding (sent at login), or "" if it did not say."""
    return conn.info.parameter_status("server_encoding") or ""


def fetch_one[Row](
    conn: Connection, query: str | sql.Composed, rows: RowFactory[Row], params: Params | None = None
) -> Row:
    """The one row of `query` (a query that always returns one), made by `rows`."""
    with conn.cursor(row_factory=rows) as cursor:
        row = cursor.execute(query, params).fetchone()
    assert row is not None
    return row


def log_connected(
    logger: logging.Logger, db: DatabaseSettings, attempt: int, settings: Settings
) -> None:
    logger.info(
        "Database connection successful",
        extra={
            "database": db.role,
            "host": db.host,
            "port": db.port,
            "attempt": attempt,
            "max_retries": settings.wait_retries,
        },
    )


class _Stopped(Exception):
    """The other side's login failed: this side gives up waiting."""


def wait_and_login(
    settings: Settings, logger: logging.Logger, head: HeadStart
) -> tuple[Connection, Connection]:
    """Wait for both servers and log in to both at once; the sessions stay open
    (autocommit), the source's for the snapshot, the destination's for the run's lock.

    The destination's side runs in a thread: libpq waits without the GIL. When
    both sides fail, the source's failure is the one raised, as when they were
    waited for one after the other. One database under two names is refused.
    """
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(
            _login, settings.destination, settings, logger, head.ready["destination"], stop
        )
        try:
            source, source_id = _login(settings.source, settings, logger, head.ready["source"])
        except BaseException:
            stop.set()
            _close_when_done(other)
            raise
        try:
            destination, destination_id = other.result()
        except BaseException:
            source.close()
            stop.set()
            _close_when_done(other)
            raise
    if source_id == destination_id:
        source.close()
        destination.close()
        raise same_database_error("Source and destination settings lead to the same database")
    return source, destination


def _login(
    db: DatabaseSettings,
    settings: Settings,
    logger: logging.Logger,
    first: StartedTool,
    stop: threading.Event | None = None,
) -> tuple[Connection, dict[str, Any]]:
    """One side's wait and login: its session and who its server is."""

    def pause(seconds: float) -> None:
        if stop is None:
            time.sleep(seconds)
        elif stop.wait(seconds):
            raise _Stopped

    attempt = wait_for_postgres(db, settings, logger, first=first, sleep=pause)
    if stop is not None and stop.is_set():
        raise _Stopped
    conn = connect(db, settings, autocommit=True)
    try:
        # Who a server is: two databases with the same answer are the same
        # database, whatever host names the settings used to reach them.
        identity = fetch_one(conn, read_sql("server_identity.sql"), dict_row)
    except BaseException:
        conn.close()
        raise
    log_connected(logger, db, attempt, settings)
    return conn, identity


def _close_when_done(login: Future[tuple[Connection, dict[str, Any]]]) -> None:
    """Once the other side's thread is done, close the session it opened, if any."""
    if login.exception() is None:
        login.result()[0].close()
