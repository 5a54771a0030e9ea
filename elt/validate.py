"""Validate: prove the destination holds exactly what the source snapshot held.

For every copied table (partitions and materialized views included) the row
count and, at level `full`, an order-independent digest of every row's text
form are computed on both sides with identical session settings; at `full`
every sequence is compared too. The source side runs inside the exported
snapshot's transaction, so concurrent writes to the source neither raise
false alarms nor hide loss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from elt.config import ValidationLevel
from elt.connect import Connection, fetch_all
from elt.errors import ValidationFailed
from elt.sql import read_sql


@dataclass(frozen=True)
class TableFigures:
    rows: int | None  # None: a materialized view that is not populated
    digest: str | None
    seconds: float


@dataclass(frozen=True)
class Figures:
    """What one side holds: per-table figures and sequence values."""

    tables: dict[str, TableFigures]
    sequences: dict[str, int | None]


@dataclass(frozen=True)
class TableCheck:
    table: str
    source_rows: int | None
    destination_rows: int | None
    match: bool
    duration_ms: int
    reason: str = ""


def prepare_session(conn: Connection) -> None:
    conn.execute(read_sql("validation_session.sql"))


class ListedRelation(NamedTuple):
    """A validation_tables.sql row: a table or materialized view, with its hash plan."""

    schema: str
    name: str
    populated: bool
    matview_query: str | None  # None: an ordinary table
    columns: list[str]
    exact_hash: list[bool]


def list_tables(conn: Connection, schemas: Sequence[str]) -> list[tuple[str, str]]:
    """(schema, name) of every ordinary table validation covers (not materialized views)."""
    return [(r.schema, r.name) for r in list_relations(conn, schemas) if r.matview_query is None]


def sequence_values(conn: Connection, schemas: Sequence[str]) -> dict[str, int | None]:
    rows = fetch_all(conn, read_sql("sequence_values.sql"), dict_row, {"schemas": list(schemas)})
    return {
        str(row["sequence"]): None if row["last_value"] is None else int(row["last_value"])
        for row in rows
    }


class Stopped(Exception):
    """collect() was asked to stop between two tables (the job is being cancelled)."""


# How one row is hashed (table_digest.sql). Both sides must use the same way.
# These are expressions built per column, so they are composed here, not in a
# file. The fallback: the hash of the whole row's text form.
TEXT_HASH = sql.SQL("pg_catalog.hashtextextended((t.*)::text, 0)")
# hash_record_extended() exists from PostgreSQL 14 on.
RECORD_HASH_MIN_VERSION = 140000


def digest_encoding(source: str, destination: str) -> str | None:
    """The encoding both sides hash text in, when their server encodings differ.

    The copy converted the source's text into the destination's encoding, so
    the source side hashes its text converted that way (convert_to) and the
    destination side its own, through the same expression. No conversion (None)
    where the copy made none: equal encodings, or SQL_ASCII on either side,
    whose bytes travel unconverted (and convert_to from SQL_ASCII would reject
    bytes that are not valid in the target).
    """
    if source == destination or "SQL_ASCII" in (source, destination):
        return None
    return destination


def row_hash(
    columns: Sequence[str],
    exact_hash: Sequence[bool],
    *,
    record_hash: bool,
    convert_to: str | None = None,
) -> sql.Composable:
    """The expression that hashes one row `t` (see validation_tables.sql).

    With `record_hash`, the row's columns are hashed in name order (sorted
    here, so that both sides agree whatever their encodings' byte order), each
    directly where its type's hash is exact and through its text form (in the
    "C" collation, so that bytes are hashed) everywhere else. With
    `convert_to` (see digest_encoding), every column is hashed as its text
    form's bytes in that encoding.
    """
    if convert_to is not None:
        encoding = sql.Literal(convert_to)
        if not record_hash or not columns:
            return sql.SQL(
                "pg_catalog.hashtextextended(pg_catalog.encode("
                "pg_catalog.convert_to((t.*)::text, {}), 'hex'), 0)"
            ).format(encoding)
    elif not record_hash or not columns:
        return TEXT_HASH
    fields = []
    for name, exact in sorted(zip(columns, exact_hash, strict=True)):
        if convert_to is not None:
            field = sql.SQL("pg_catalog.convert_to(t.{}::text, {})").format(
                sql.Identifier(name), encoding
            )
        elif exact:
            field = sql.SQL("t.{}").format(sql.Identifier(name))
        else:
            field = sql.SQL('(t.{}::text COLLATE "C")').format(sql.Identifier(name))
        fields.append(field)
    return sql.SQL("pg_catalog.hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(fields))


def list_relations(conn: Connection, schemas: Sequence[str]) -> list[ListedRelation]:
    """validation_tables.sql: every table and materialized view, with its hash plan."""
    return fetch_all(
        conn,
        read_sql("validation_tables.sql"),
        class_row(ListedRelation),
        {"schemas": list(schemas)},
    )


def measure(
    conn: Connection,
    relation: sql.Composable,
    listed: Sequence[object],
    level: ValidationLevel,
    *,
    record_hash: bool,
    convert_to: str | None = None,
) -> TableFigures:
    """Count and (at `full`) digest one relation: a table, or a parenthesized query.

    `listed` is its list_relations() row, read on the same side.
    """
    relation_row = ListedRelation._make(listed)  # by name, whatever type the caller declared
    if not relation_row.populated:
        return TableFigures(None, None, 0.0)
    started = time.monotonic()
    if level is ValidationLevel.FULL:
        hash_expr = row_hash(
            relation_row.columns,
            relation_row.exact_hash,
            record_hash=record_hash,
            convert_to=convert_to,
        )
        query = sql.SQL(read_sql("table_digest.sql")).format(table=relation, row_hash=hash_expr)
    else:
        query = sql.SQL(read_sql("table_count.sql")).format(table=relation)
    # In a savepoint rolled back at once: the locks the query takes on the
    # relation's indexes and TOAST table end with it, so that a transaction that
    # measures every table (the source snapshot's) holds no more locks than pg_dump.
    with conn.transaction() as savepoint, conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(query).fetchone()
        raise psycopg.Rollback(savepoint)
    assert row is not None
    return TableFigures(
        rows=int(row["row_count"]),
        digest=None if row["digest"] is None else str(row["digest"]),
        seconds=time.monotonic() - started,
    )


def table_key(schema: str, name: str) -> str:
    """How figures are keyed: the quoted, schema-qualified name."""
    return sql.Identifier(schema, name).as_string(None)


def collect(
    conn: Connection,
    schemas: Sequence[str],
    level: ValidationLevel,
    stop: threading.Event | None = None,
    *,
    record_hash: bool = False,
    recompute_matviews: bool = False,
    skip: frozenset[str] = frozenset(),
    convert_to: str | None = None,
    claim: Callable[[str], bool] | None = None,
) -> Figures:
    """Compute one side's figures. The caller has run prepare_session() on `conn`.

    `record_hash` allows hashing columns directly where validation_tables.sql
    says it is exact (see row_hash); pass the same value on both sides. `recompute_matviews` (the
    source side) measures each populated materialized view's defining query
    instead of its stored rows: that is what the destination's refresh stored.
    Relations whose key is in `skip` were measured already (the parallel copy
    measures tables while it runs), or have no rows to compare, and are left
    out. `convert_to`: see digest_encoding; pass the same value on both sides.
    With `claim`, several sessions measure one side together: each measures the
    relations `claim(key)` gives it (True once per key), the others leave them.
    """
    tables: dict[str, TableFigures] = {}
    for listed in list_relations(conn, schemas):
        key = table_key(listed.schema, listed.name)
        if key in skip:
            continue
        if claim is not None and not claim(key):
            continue
        if stop is not None and stop.is_set():
            raise Stopped
        relation: sql.Composable = sql.Identifier(listed.schema, listed.name)
        if recompute_matviews and listed.matview_query is not None:
            relation = sql.SQL("({})").format(sql.SQL(listed.matview_query))
        tables[key] = measure(
            conn, relation, listed, level, record_hash=record_hash, convert_to=convert_to
        )
    sequences = sequence_values(conn, schemas) if level is ValidationLevel.FULL else {}
    return Figures(tables, sequences)


def compare_tables(source: Figures, destination: Figures) -> list[TableCheck]:
    checks = []
    for table in sorted(source.tables.keys() | destination.tables.keys()):
        src, dst = source.tables.get(table), destination.tables.get(table)
        duration_ms = round(((src.seconds if src else 0) + (dst.seconds if dst else 0)) * 1000)
        if src is None or dst is None:
            checks.append(
                TableCheck(
                    table,
                    src.rows if src else None,
                    dst.rows if dst else None,
                    match=False,
                    duration_ms=duration_ms,
                    reason="missing in destination" if dst is None else "not in source",
                )
            )
            continue
        if src.rows != dst.rows:
            reason = "row count differs"
        elif src.digest != dst.digest:
            reason = "content differs"
        else:
            reason = ""
        checks.append(TableCheck(table, src.rows, dst.rows, not reason, duration_ms, reason))
    return checks


def compare_sequences(
    before: dict[str, int | None],
    after: dict[str, int | None],
    destination: dict[str, int | None],
) -> list[str]:
    """Names of sequences whose destination value is not what pg_dump could have read.

    Sequences are not covered by the snapshot: pg_dump reads each one at some
    moment during the dump. So the destination's value must lie between the
    source's values read just before pg_dump started and just after it ended
    (equal to both when nothing wrote to the source meanwhile).
    """
    bad = []
    for name in sorted(before.keys() | after.keys() | destination.keys()):
        if name not in destination or name not in before:
            bad.append(name)
            continue
        lo, hi, got = before[name], after.get(name), destination[name]
        if got in (lo, hi):
            continue
        between = lo is not None and hi is not None and got is not None
        if between and min(lo, hi) <= got <= max(lo, hi):  # type: ignore[type-var,operator]
            continue
        bad.append(name)
    return bad


def report(
    logger: logging.Logger,
    checks: list[TableCheck],
    bad_sequences: list[str],
    level: ValidationLevel,
) -> None:
    """Log one line per table and the summary; raise ValidationFailed on any mismatch."""
    for check in checks:
        # WARNING, not ERROR: the one ERROR line of a failed run is the final one.
        log = logger.info if check.match else logger.warning
        log(
            "Table validated" if check.match else "Table mismatch",
            extra={
                "table": check.table,
                "source_rows": check.source_rows,
                "destination_rows": check.destination_rows,
                "match": check.match,
                "duration_ms": check.duration_ms,
                **({"reason": check.reason} if check.reason else {}),
            },
        )
    mismatched = [c.table for c in checks if not c.match]
    logger.info(
        "Validation summary",
        extra={
            "validation_level": level.value,
            "tables_checked": len(checks),
            "tables_mismatched": len(mismatched),
            "rows_checked": sum(c.source_rows or 0 for c in checks),
            "sequences_mismatched": len(bad_sequences),
        },
    )
    if mismatched or bad_sequences:
        what = ", ".join(mismatched + [f"sequence {s}" for s in bad_sequences])
        raise ValidationFailed(
            f"The destination does not match the source snapshot: {what}",
            hint="The destination was left as loaded so you can inspect it. Look for triggers, "
            "rules or event triggers on the destination that change rows, then re-run; "
            "if it persists, report it with these log lines.",
            mismatched_tables=mismatched,
            mismatched_sequences=bad_sequences,
        )
