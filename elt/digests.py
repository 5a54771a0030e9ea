"""One side's figures of a relation: its row count and digest, and the statements taking them.

Small relations are measured several at a time, in one statement (their parts
joined by UNION ALL), each part numbered so that every relation still gets
figures of its own. Large ones, and the source's materialized views (whose
figures come from running their query), keep a statement of their own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from psycopg import sql
from psycopg.rows import dict_row

from elt.config import ValidationLevel
from elt.connect import Connection
from elt.sql import read_sql

# A relation of up to this many bytes (by the planner's page count, which
# takes no lock) may share a statement with others.
BATCH_MAX_BYTES = 1_000_000
# The most locks a statement's relations may take together on the relations,
# their indexes and TOAST tables: PostgreSQL's default max_locks_per_transaction,
# one session's share of the lock table (elt/limits.py).
BATCH_LOCKS = 64


@dataclass(frozen=True)
class TableFigures:
    rows: int | None  # None: a materialized view that is not populated
    digest: str | None
    seconds: float


class ListedRelation(NamedTuple):
    """A validation_tables.sql row: a table or materialized view, with its hash plan."""

    schema: str
    name: str
    populated: bool
    matview_query: str | None  # None: an ordinary table
    columns: list[str]
    exact_hash: list[bool]
    bytes: int = 0
    locks: int = 1  # what measuring it locks: itself, its indexes and TOAST table


class Part(NamedTuple):
    """One relation of a statement: its figures' key, what to read, its listing."""

    key: str
    relation: sql.Composable
    listed: ListedRelation


@dataclass(frozen=True)
class Hashing:
    """How rows are hashed and counted; the same on both sides (see row_hash)."""

    level: ValidationLevel
    record_hash: bool
    convert_to: str | None = None


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


@functools.cache
def _part_sql(level: ValidationLevel) -> sql.SQL:
    name = "table_digest.sql" if level is ValidationLevel.FULL else "table_count.sql"
    return sql.SQL(read_sql(name))


# Composing the hash is most of the client's work for a small table, and many
# tables share their columns: each distinct hash is composed once.
@functools.lru_cache(maxsize=4096)
def _row_hash_sql(
    columns: tuple[str, ...],
    exact_hash: tuple[bool, ...],
    record_hash: bool,
    convert_to: str | None,
) -> sql.SQL:
    composed = row_hash(columns, exact_hash, record_hash=record_hash, convert_to=convert_to)
    return sql.SQL(composed.as_string(None))


def statement(parts: Sequence[Part], hashing: Hashing) -> sql.Composed:
    """The one statement that measures `parts`: a row per part, numbered by position."""
    selects = []
    for position, part in enumerate(parts):
        fields: dict[str, sql.Composable] = {
            "position": sql.Literal(position),
            "table": part.relation,
        }
        if hashing.level is ValidationLevel.FULL:
            fields["row_hash"] = _row_hash_sql(
                tuple(part.listed.columns),
                tuple(part.listed.exact_hash),
                hashing.record_hash,
                hashing.convert_to,
            )
        selects.append(_part_sql(hashing.level).format(**fields))
    return sql.SQL("\nUNION ALL\n").join(selects)


def batches(parts: Sequence[Part], *, recompute_matviews: bool) -> Iterator[list[Part]]:
    """`parts` in statements: small relations together, up to BATCH_LOCKS locks a
    statement, in their order; large ones, and with `recompute_matviews` the
    materialized views, alone. Unpopulated materialized views need no statement
    and are left out (see measure_parts)."""
    batch: list[Part] = []
    locks = 0
    for part in parts:
        listed = part.listed
        if not listed.populated:
            continue
        alone = listed.bytes > BATCH_MAX_BYTES or (
            recompute_matviews and listed.matview_query is not None
        )
        if alone:
            yield [part]
            continue
        if batch and locks + listed.locks > BATCH_LOCKS:
            yield batch
            batch, locks = [], 0
        batch.append(part)
        locks += listed.locks
    if batch:
        yield batch


def measure_parts(
    conn: Connection, parts: Sequence[Part], hashing: Hashing
) -> dict[str, TableFigures]:
    """Count and (at `full`) digest `parts` in one statement, keyed by part key.

    Each part's seconds are the statement's shared out evenly.
    """
    figures = {p.key: TableFigures(None, None, 0.0) for p in parts if not p.listed.populated}
    measured = [p for p in parts if p.listed.populated]
    if not measured:
        return figures
    started = time.monotonic()
    query = statement(measured, hashing)
    # In a savepoint rolled back at once: the locks the query takes on the
    # relations' indexes and TOAST tables end with it, so that a transaction that
    # measures every table (the source snapshot's) holds no more locks than
    # pg_dump, beyond one statement's (at most BATCH_LOCKS).
    with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query).fetchall()
    seconds = (time.monotonic() - started) / len(measured)
    assert len(rows) == len(measured)
    for row in rows:
        figures[measured[int(row["position"])].key] = TableFigures(
            rows=int(row["row_count"]),
            digest=None if row["digest"] is None else str(row["digest"]),
            seconds=seconds,
        )
    return figures


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
    # By name, whatever type the caller declared.
    part = Part("", relation, ListedRelation._make(listed))
    return measure_parts(conn, [part], Hashing(level, record_hash, convert_to))[""]
