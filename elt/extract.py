"""Extract: one consistent snapshot of the source, and the pg_dump that reads it.

The job opens a REPEATABLE READ, READ ONLY transaction on the source and
exports its snapshot (`pg_export_snapshot()`); pg_dump is started with
`--snapshot` so it reads exactly that state, and the validation figures are
computed inside the same transaction. Writes that land on the source during
the copy therefore neither break the copy nor cause false alarms.
"""

from __future__ import annotations

import re
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from elt.config import DatabaseSettings, Settings
from elt.connect import Connection, connect, fetch_all, fetch_one
from elt.errors import ExtractError, message_lines
from elt.processes import connection_args
from elt.sql import read_sql


def copy_encoding(source: str, destination: str) -> str:
    """The client encoding the rows travel in: the source database's, which the
    destination converts from, except for a SQL_ASCII source. Its bytes have no
    encoding, and PostgreSQL's text COPY would store them in the destination
    unchecked. Asked for in the destination's encoding, they are checked on
    the way (the source's server checks them as it sends them), so a UTF8
    destination never holds invalid UTF-8: the copy fails instead."""
    return destination if source == "SQL_ASCII" else source


def pg_dump_argv(db: DatabaseSettings, snapshot: str, encoding: str | None = None) -> list[str]:
    """pg_dump writing a custom-format archive to stdout.

    * custom format, not plain SQL: a plain dump wraps large objects in its own
      BEGIN/COMMIT, which would silently end the load's single transaction early;
      pg_restore --single-transaction writes the same SQL without them.
    * --compress=0: the archive only crosses a local pipe; compressing it costs
      CPU on the critical path and saves nothing.
    * subscriptions would make the destination connect to the source's
      publishers, and security labels need providers the destination may lack.
    * `encoding`: the dump's client encoding (see copy_encoding), when it is
      not the source database's.
    """
    argv = [
        "pg_dump",
        *connection_args(db),
        "--no-password",
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot}",
        "--no-subscriptions",
        "--no-security-labels",
    ]
    if encoding is not None:
        argv.append(f"--encoding={encoding}")
    return argv


def tool_major(version_output: str) -> int | None:
    """17 from `pg_dump (PostgreSQL) 17.11`, 15 from `... 15.18 (Debian 15.18-0+deb12u1)`."""
    match = re.search(r"\(PostgreSQL\) (\d+)", version_output)
    return int(match.group(1)) if match else None


def check_pg_dump_version(source_version: int, version_output: str) -> None:
    """Refuse, before the destination is touched, a pg_dump older than the source.

    pg_dump aborts on a server of a newer major version ("server version
    mismatch"); found here, that is one clear error instead of a failed load.
    `version_output`: what `pg_dump --version` printed (startup.HeadStart).
    """
    tools = tool_major(version_output)
    source = source_version // 10000
    if tools is not None and tools < source:
        raise ExtractError(
            f"The client tools are older than the source server: pg_dump {tools} cannot "
            f"dump PostgreSQL {source}; nothing was changed",
            hint=f"Put the client tools of PostgreSQL {source} or newer (the destination's "
            "major version) first on PATH; see README, Running without Docker.",
            pg_dump_version=version_output.strip(),
            source_server_version=source_version,
        )


class SourceSnapshot:
    """A live REPEATABLE READ transaction on the source whose snapshot pg_dump imports.

    Keep it open until pg_dump and the source-side validation are done; closing
    it (on success, failure or interrupt) rolls the read-only transaction back,
    so the job leaves no open session on the source.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # The session must outlive a long copy: no server-side timeout may end it.
        conn.execute(read_sql("no_timeouts.sql"))
        conn.commit()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot_id = fetch_one(conn, read_sql("export_snapshot.sql"), dict_row)["snapshot_id"]
        if not isinstance(snapshot_id, str):
            # A session that returns text as bytes (connect() prevents it):
            # str() would make pg_dump fail on "b'...'", blamed on the source.
            raise TypeError(f"the snapshot ID was read as {type(snapshot_id).__name__}, not text")
        self.snapshot_id = snapshot_id

    @classmethod
    def open(cls, settings: Settings, conn: Connection | None = None) -> SourceSnapshot:
        """The snapshot in a new session, or in `conn`, an idle session of the
        source's (the login's), which it then owns."""
        conn = connect(settings.source, settings) if conn is None else conn
        try:
            conn.autocommit = False
            return cls(conn)
        except psycopg.Error as exc:
            conn.close()
            raise ExtractError(
                "Could not open a snapshot of the source",
                hint="The source must allow REPEATABLE READ transactions and "
                "pg_export_snapshot() (not a standby without hot_standby_feedback, say).",
                stderr_tail=message_lines(exc),
            ) from None
        except BaseException:
            conn.close()
            raise

    def lock_tables(self, tables: list[tuple[str, str]]) -> None:
        """ACCESS SHARE on every table, held until the snapshot closes.

        TRUNCATE and table rewrites are not MVCC-safe: run on the source after
        pg_dump released its locks, they would make the snapshot see an empty or
        missing table during validation. These locks make them wait instead;
        ordinary writes are not blocked.
        """
        if tables:
            idents = sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name in tables)
            # Composed here, not read from a file: the table list is dynamic, and the
            # statement shows as LOCK TABLE in pg_stat_activity (tests wait for it).
            self.conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(idents))

    def schemas(self) -> list[str]:
        rows = fetch_all(self.conn, read_sql("source_schemas.sql"), dict_row)
        return [str(row["schema"]) for row in rows]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SourceSnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
