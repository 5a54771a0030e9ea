"""Waiting for the databases and opening driver connections, with clear failures.

`pg_isready` only asks whether the server accepts connections: it does not
log in. So after it answers, the job logs in for real (psycopg), which is
where a wrong password, user or database name shows up, and explains it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import RowFactory

from elt.config import DatabaseSettings, Settings
from elt.errors import ConnectionFailed, message_lines
from elt.processes import APPLICATION_NAME, Stage, child_env, connection_args, run_tool

# The one connection type of the job: psycopg's default tuple rows. Queries
# whose columns are read use a cursor with a row factory (fetch_one, fetch_all).
Connection = psycopg.Connection[tuple[object, ...]]

# pg_isready exit codes (see its man page).
_PG_ISREADY_STATUS = {
    0: "accepting connections",
    1: "rejecting connections (starting up or shutting down)",
    2: "no response",
    3: "no attempt made (invalid parameters)",
}


def pg_isready_argv(db: DatabaseSettings, timeout_seconds: int) -> list[str]:
    return ["pg_isready", *connection_args(db), "-t", str(timeout_seconds)]


def wait_for_postgres(
    db: DatabaseSettings,
    settings: Settings,
    logger: logging.Logger,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll with pg_isready until the server accepts connections; return the attempt count.

    The budget is bounded: ELT_WAIT_RETRIES attempts of at most
    ELT_CONNECT_TIMEOUT_SECONDS each, ELT_WAIT_DELAY_SECONDS apart.
    """
    max_retries = settings.wait_retries
    stage = Stage(
        "pg_isready",
        pg_isready_argv(db, settings.connect_timeout_seconds),
        child_env(db, settings.connect_timeout_seconds),
    )
    result = None
    for attempt in range(1, max_retries + 1):
        result = run_tool(stage)
        if result.returncode == 0:
            return attempt
        status = _PG_ISREADY_STATUS.get(result.returncode, f"exit code {result.returncode}")
        if result.returncode == 3:
            break  # retrying cannot help: the parameters themselves are unusable
        logger.warning(
            "Database not ready, retrying" if attempt < max_retries else "Database not ready",
            extra={
                "database": db.role,
                "host": db.host,
                "port": db.port,
                "attempt": attempt,
                "max_retries": max_retries,
                "status": status,
            },
        )
        if attempt < max_retries:
            sleep(settings.wait_delay_seconds)
    assert result is not None
    prefix = db.env_prefix
    raise ConnectionFailed(
        f"The {db.role} database at {db.host}:{db.port} did not accept connections "
        f"after {max_retries} attempt(s): "
        f"{_PG_ISREADY_STATUS.get(result.returncode, result.returncode)}",
        hint=f"Check {prefix}HOST and {prefix}PORT and that the server is running; "
        "raise ELT_WAIT_RETRIES or ELT_WAIT_DELAY_SECONDS if it needs longer to start.",
        stderr_tail=result.stderr_tail,
        database=db.role,
        host=db.host,
        total_attempts=max_retries,
    )


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
