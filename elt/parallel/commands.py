"""The client tools' argument lists and session options (pure: tests assert them).

pg_dump and pg_restore move the schema; a psql pair per table moves its rows.
No argument carries a password: child_env passes it in the environment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from elt.config import DatabaseSettings
from elt.parallel.in_memory import LIST_FILE
from elt.processes import child_env, connection_args
from elt.replace import STAGING_PREFIX

if TYPE_CHECKING:
    from elt.parallel.tables import CopyTable

PSQL_FLAGS = ("-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1")
ROWS_MARKER = "elt_rows="


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def staging_names(schemas: Sequence[str], run_id: int) -> dict[str, str]:
    """Staging schema per source schema, unique to this run (`run_id`: the
    coordinator's backend PID): should this run lose its lock, another run
    can never load into, or swap in, this run's tables."""
    return {schema: f"{STAGING_PREFIX}{run_id}_{i}" for i, schema in enumerate(schemas)}


def scratch_database_name(destination_oid: int) -> str:
    """Per destination database, so that the session lock also guards it."""
    return f"elt_scratch_{destination_oid}"


def schema_dump_argv(
    db: DatabaseSettings, snapshot: str | None, schemas: Sequence[str]
) -> list[str]:
    """pg_dump of the definitions only, as a custom-format archive on stdout."""
    argv = [
        "pg_dump",
        *connection_args(db),
        "--no-password",
        "--format=custom",
        "--schema-only",
        "--no-subscriptions",
        "--no-security-labels",
    ]
    if snapshot is not None:
        argv.append(f"--snapshot={snapshot}")
    # Exact names, quoted: a pattern would also match other schemas.
    for schema in schemas:
        argv += ["--schema", quote_ident(schema)]
    return argv


def restore_env(db: DatabaseSettings, connect_timeout: int) -> dict[str, str]:
    """child_env for a pg_restore into the destination server before the swap.

    synchronous_commit=off: what it restores is thrown away (the scratch
    database) or made durable by the swap's synchronous commit, which flushes
    the WAL of every commit before it (docs/parallel-copy.md, "Durability").
    """
    env = child_env(db, connect_timeout)
    env["PGOPTIONS"] = "-c synchronous_commit=off"
    return env


def schema_restore_argv(
    db: DatabaseSettings,
    dbname: str,
    *,
    copy_ownership: bool,
    section: str | None = None,
    use_list: bool = False,
) -> list[str]:
    """pg_restore of an archive read from stdin, straight into `dbname`, in one transaction."""
    conn = connection_args(db)
    conn[conn.index("-d") + 1] = dbname
    argv = [
        "pg_restore",
        *conn,
        "--no-password",
        "--format=custom",
        "--single-transaction",
        "--exit-on-error",
        "--no-tablespaces",
    ]
    if section is not None:
        argv.append(f"--section={section}")
    if use_list:
        argv.append(f"--use-list={LIST_FILE}")
    if not copy_ownership:
        argv += ["--no-owner", "--no-privileges"]
    return argv


def entry_sql_argv(*, copy_ownership: bool, verbose: bool = False) -> list[str]:
    """pg_restore printing the SQL of the entries in the TOC list it is given
    (`verbose`: with each entry's dump ID in its header, see entries.py)."""
    argv = ["pg_restore", "--format=custom", f"--use-list={LIST_FILE}", "--file=-"]
    if verbose:
        argv.append("--verbose")
    if not copy_ownership:
        argv += ["--no-owner", "--no-privileges"]
    return argv


def copy_out_argv(db: DatabaseSettings, snapshot_id: str, table: CopyTable) -> list[str]:
    """psql writing one table's rows, as the exported snapshot saw them, to stdout."""
    return [
        "psql",
        *PSQL_FLAGS,
        *connection_args(db),
        "-c",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "-c",
        "SET TRANSACTION SNAPSHOT '" + snapshot_id.replace("'", "''") + "'",
        "-c",
        copy_out_statement(table),
        "-c",
        "COMMIT",
    ]


def copy_in_argv(db: DatabaseSettings, staging_schema: str, table: CopyTable) -> list[str]:
    """psql loading stdin into the staging table, then printing the row count.

    TRUNCATE makes the table new in this transaction, which COPY FREEZE needs:
    the rows are then written already frozen and all-visible, so the index
    builds, foreign key checks and validation that scan them next skip the
    visibility checks and hint-bit writes of ordinary fresh rows.
    """
    return [
        "psql",
        *PSQL_FLAGS,
        *connection_args(db),
        "-c",
        "BEGIN",
        "-c",
        truncate_statement(staging_schema, table),
        "-c",
        copy_in_statement(staging_schema, table),
        "-c",
        f"\\echo {ROWS_MARKER}:ROW_COUNT",
        "-c",
        "COMMIT",
    ]


def copy_out_statement(table: CopyTable, encoding: str | None = None) -> str:
    """The COPY writing the table's rows; `encoding` names the text rows' encoding
    where no PGCLIENTENCODING does (a driver session, see insession.py)."""
    options = _copy_options(table, encoding)
    return (
        f"COPY {quote_ident(table.schema)}.{quote_ident(table.name)}{table.column_list} "
        f"TO STDOUT ({options})"
    )


def truncate_statement(staging_schema: str, table: CopyTable) -> str:
    return f"TRUNCATE {_staged(staging_schema, table)}"


def copy_in_statement(staging_schema: str, table: CopyTable, encoding: str | None = None) -> str:
    """The COPY loading the staging table, FREEZE: see copy_in_argv."""
    options = _copy_options(table, encoding)
    return (
        f"COPY {_staged(staging_schema, table)}{table.column_list} FROM STDIN ({options}, FREEZE)"
    )


def _staged(staging_schema: str, table: CopyTable) -> str:
    return f"{quote_ident(staging_schema)}.{quote_ident(table.name)}"


def _copy_options(table: CopyTable, encoding: str | None) -> str:
    # ENCODING covers the text format only: binary rows' text is in the
    # session's client_encoding (see insession.in_session).
    if encoding is None or table.binary:
        return f"FORMAT {table.format}"
    return f"FORMAT {table.format}, ENCODING '{encoding.replace(chr(39), chr(39) * 2)}'"


def copy_session_options(server_version: int, *, destination: bool) -> str:
    """PGOPTIONS for the COPY sessions: the settings of elt/sql/copy_session.sql and
    elt/sql/no_timeouts.sql, which psql -c cannot run quietly.

    synchronous_commit=off on the destination: the swap's synchronous commit
    flushes the WAL of every commit before it (docs/parallel-copy.md, "Durability").
    """
    options = [
        "DateStyle=ISO",
        "IntervalStyle=postgres",
        "extra_float_digits=3",
        "row_security=off",
        "statement_timeout=0",
        "lock_timeout=0",
        "idle_in_transaction_session_timeout=0",
    ]
    if server_version >= 170000:
        options.append("transaction_timeout=0")
    if destination:
        options.append("synchronous_commit=off")
    return " ".join(f"-c {o}" for o in options)
