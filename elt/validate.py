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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from psycopg import sql
from psycopg.rows import class_row, dict_row

from elt.config import ValidationLevel
from elt.connect import Connection, fetch_all
from elt.digests import (
    RECORD_HASH_MIN_VERSION,
    TEXT_HASH,
    Hashing,
    ListedRelation,
    Part,
    TableFigures,
    batches,
    digest_encoding,
    measure,
    measure_parts,
    row_hash,
)
from elt.errors import ValidationFailed
from elt.sql import read_sql

# Measuring itself lives in elt/digests.py; these names stay importable from here.
__all__ = [
    "RECORD_HASH_MIN_VERSION",
    "TEXT_HASH",
    "Figures",
    "ListedRelation",
    "Stopped",
    "TableCheck",
    "TableFigures",
    "collect",
    "compare_sequences",
    "compare_tables",
    "digest_encoding",
    "list_relations",
    "list_tables",
    "measure",
    "prepare_session",
    "report",
    "row_hash",
    "sequence_values",
    "table_key",
]


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
    """collect() was asked to stop between two statements (the job is being cancelled)."""


def list_relations(conn: Connection, schemas: Sequence[str]) -> list[ListedRelation]:
    """validation_tables.sql: every table and materialized view, with its hash plan."""
    return fetch_all(
        conn,
        read_sql("validation_tables.sql"),
        class_row(ListedRelation),
        {"schemas": list(schemas)},
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
    Small relations are measured several to a statement (digests.batches);
    `stop` is looked at before each statement.
    """
    hashing = Hashing(level, record_hash, convert_to)
    parts = []
    for listed in list_relations(conn, schemas):
        key = table_key(listed.schema, listed.name)
        if key in skip:
            continue
        relation: sql.Composable = sql.Identifier(listed.schema, listed.name)
        if recompute_matviews and listed.matview_query is not None:
            relation = sql.SQL("({})").format(sql.SQL(listed.matview_query))
        parts.append(Part(key, relation, listed))
    tables = {
        p.key: TableFigures(None, None, 0.0)
        for p in parts
        if not p.listed.populated and (claim is None or claim(p.key))
    }
    for batch in batches(parts, recompute_matviews=recompute_matviews):
        if stop is not None and stop.is_set():
            raise Stopped
        mine = [p for p in batch if claim is None or claim(p.key)]
        if mine:
            tables.update(measure_parts(conn, mine, hashing))
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
