"""The many-tables source: N small tables and one table in a few hundred partitions.

Per-table costs (catalog reads, locks, one COPY and its sessions, index builds,
validation) dominate such a source, not bytes. The tables are created and
filled by the server in batches, one transaction each, so that the builder
never needs more of the lock table than a batch takes.
"""

from __future__ import annotations

import math
import time

from benchmark.source import SOURCE_DB, SourceInfo, database_size, relation_bytes, table_counts
from pgserver import PgServer

MANY_SCHEMA = "many"
ROWS_PER_TABLE = 20
DEVICES = 20  # rows per partition: DEVICES a day, 7 days a partition
PARTITIONED = "readings"
BATCH = 100  # tables (or partitions) created per transaction
# Relations per table: the heap, its TOAST table and TOAST index, the primary
# key and the secondary index.
RELATIONS_PER_TABLE = 5


def table_name(number: int) -> str:
    return f"t{number:05d}"


def _tables_batch_sql(first: int, last: int) -> str:
    """A DO block creating, filling and indexing tables first..last."""
    return f"""
DO $build$
DECLARE
    t text;
BEGIN
    FOR i IN {first}..{last} LOOP
        t := format('t%s', lpad(i::text, 5, '0'));
        EXECUTE format(
            'CREATE TABLE {MANY_SCHEMA}.%1$I (
                 id integer PRIMARY KEY,
                 code text NOT NULL,
                 created_at timestamptz NOT NULL,
                 amount numeric(10, 2) NOT NULL,
                 note text)', t);
        EXECUTE format(
            'INSERT INTO {MANY_SCHEMA}.%1$I
             SELECT g, %2$L || g, timestamptz %3$L + g * interval %4$L,
                    (g * 7919 %% 100000) / 100.0, repeat(%5$L, g %% 4)
             FROM generate_series(1, {ROWS_PER_TABLE}) AS g',
            t, t || '-', '2024-01-01 00:00:00+00', '1 hour', 'note ');
        EXECUTE format('CREATE INDEX %1$I ON {MANY_SCHEMA}.%2$I (created_at)',
                       t || '_created_at_idx', t);
    END LOOP;
END
$build$"""


_PARTITIONED_SQL = f"""
CREATE TABLE {MANY_SCHEMA}.{PARTITIONED} (
    device_id integer NOT NULL,
    read_on date NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (device_id, read_on)
) PARTITION BY RANGE (read_on);
CREATE INDEX {PARTITIONED}_value_idx ON {MANY_SCHEMA}.{PARTITIONED} (value);
"""


def _partitions_batch_sql(first: int, last: int) -> str:
    """Partitions first..last of the partitioned table, a week each, and their rows."""
    return f"""
DO $build$
BEGIN
    FOR i IN {first}..{last} LOOP
        EXECUTE format(
            'CREATE TABLE {MANY_SCHEMA}.%1$I PARTITION OF {MANY_SCHEMA}.{PARTITIONED}
             FOR VALUES FROM (%2$L) TO (%3$L)',
            format('{PARTITIONED}_p%s', lpad(i::text, 4, '0')),
            date '2020-01-01' + (i - 1) * 7, date '2020-01-01' + i * 7);
    END LOOP;
    INSERT INTO {MANY_SCHEMA}.{PARTITIONED}
    SELECT d, day::date, (d * 31 + (day::date - date '2020-01-01')) % 1000 / 10.0
    FROM generate_series(1, {DEVICES}) AS d,
         generate_series(date '2020-01-01' + ({first} - 1) * 7,
                         date '2020-01-01' + {last} * 7 - 1, interval '1 day') AS day;
END
$build$"""


def lock_setting(tables: int, partitions: int) -> int:
    """max_locks_per_transaction for servers that hold this source: room for
    every relation in one transaction half again, in the slots of 100
    connections; a power of two, at least PostgreSQL's default 64."""
    relations = (tables + partitions + 1) * RELATIONS_PER_TABLE
    return max(64, int(2 ** math.ceil(math.log2(relations * 1.5 / 100))))


def build_many_tables(server: PgServer, tables: int, partitions: int) -> SourceInfo:
    """`tables` small tables and one table in `partitions` partitions, in schema `many`."""
    server.recreate_database(SOURCE_DB)
    empty = database_size(server, SOURCE_DB)
    started = time.monotonic()
    with server.connect(SOURCE_DB) as conn:
        conn.execute(f"CREATE SCHEMA {MANY_SCHEMA}")
        for first in range(1, tables + 1, BATCH):
            conn.execute(_tables_batch_sql(first, min(first + BATCH - 1, tables)))
        conn.execute(_PARTITIONED_SQL)
        for first in range(1, partitions + 1, BATCH):
            conn.execute(_partitions_batch_sql(first, min(first + BATCH - 1, partitions)))
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
    seconds = time.monotonic() - started
    rows = table_counts(server, SOURCE_DB, MANY_SCHEMA)
    return SourceInfo(
        database_size(server, SOURCE_DB),
        empty,
        tables,
        seconds,
        rows,
        relation_bytes(server, SOURCE_DB, MANY_SCHEMA),
        schema=MANY_SCHEMA,
        kind="many-tables",
        description=(
            f"{tables} small tables ({ROWS_PER_TABLE} rows, a primary key and an index "
            f"each) and {MANY_SCHEMA}.{PARTITIONED} in {partitions} partitions "
            f"({DEVICES * 7} rows, a primary key and an index each)"
        ),
    )
