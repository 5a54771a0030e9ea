"""The tasks of a parallel copy: each table's rows, its indexes and keys, its figures.

An index or constraint on a copied table is built by a worker as soon as its
table's rows are in; a foreign key also waits for the referenced table and the
unique index it points at. Each task names the tables it locks, so that the
scheduler never runs two tasks that would block each other on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from elt.parallel.commands import quote_ident
from elt.parallel.tables import CopyTable
from elt.parallel.toc import TocEntry

# A row of elt/sql/staging_catalog.sql, by column name.
CatalogRow = Mapping[str, Any]
# Index methods whose builds take longest: started first.
_SLOW_METHODS = frozenset({"gin", "gist", "spgist", "brin"})
_BUILDABLE = {"INDEX": "i", "CONSTRAINT": "c", "FK CONSTRAINT": "c"}


@dataclass
class Task:
    key: str
    # rows: copy the table's rows; build: restore `entry` (index, key);
    # check_source / check_destination: the table's validation figures.
    kind: str
    table: CopyTable
    entry: TocEntry | None = None  # what a "build" task restores
    deps: set[str] = field(default_factory=set)
    rank: tuple[int, ...] = ()
    # Tables this task locks: True = a lock that conflicts with every other task
    # on that table (ALTER TABLE ... ADD CONSTRAINT), False = one that only
    # conflicts with those (CREATE INDEX's SHARE lock). Without this, a primary
    # key would sit waiting for a long GIN build on the same table, holding up
    # its worker (pg_restore -j avoids the same conflict).
    locks: dict[str, bool] = field(default_factory=dict)
    # A "build" task without an entry: the SQL it runs (a key split in two,
    # see _key_in_two_steps).
    statement: str | None = None


def rows_key(table: CopyTable) -> str:
    """The key of the task that copies the table's rows."""
    return f"rows:{table.schema}.{table.name}"


def build_tasks(
    tables: list[CopyTable],
    post_data: list[TocEntry],
    catalog: Mapping[tuple[str, int], CatalogRow],
    staged: dict[str, str],
) -> tuple[list[Task], list[TocEntry]]:
    """Split post-data into per-table tasks (indexes, keys) and the rest.

    Anything not on a copied table (and anything on a partitioned parent or a
    materialized view) is left for the single post-data pass after all tasks,
    in pg_dump's dependency order.
    """
    by_staged = {(staged[t.schema], t.name): t for t in tables}
    tasks = [Task(rows_key(t), "rows", t, rank=(-t.size, 0)) for t in tables]
    index_task: dict[int, str] = {}  # index OID -> key of the task that builds it
    foreign_keys: list[tuple[TocEntry, CatalogRow]] = []
    remainder = []
    for entry in post_data:
        kind = _BUILDABLE.get(entry.kind)
        row = catalog.get((kind, entry.oid)) if kind else None
        table = by_staged.get((str(row["nspname"]), str(row["relname"]))) if row else None
        if row is None or table is None:
            remainder.append(entry)
        elif entry.kind == "FK CONSTRAINT":
            foreign_keys.append((entry, row))
        else:
            if entry.kind == "CONSTRAINT" and row["index_def"] is not None:
                tasks += _key_in_two_steps(entry, row, table, staged)
            else:
                tasks.append(_index_or_constraint(entry, row, table))
            index_task[int(str(row["conindid"]))] = f"entry:{entry.dump_id}"
    for entry, row in foreign_keys:
        task = _foreign_key(entry, row, by_staged, index_task)
        if task is None:
            remainder.append(entry)  # e.g. it references a partitioned table
        else:
            tasks.append(task)
    # In pg_dump's order: a comment on a constraint must follow the constraint.
    left = {e.dump_id for e in remainder}
    return tasks, [e for e in post_data if e.dump_id in left]


def _key_in_two_steps(
    entry: TocEntry, row: CatalogRow, table: CopyTable, staged: dict[str, str]
) -> list[Task]:
    """A primary key or unique constraint: its unique index under CREATE INDEX's
    SHARE lock, which lets it build alongside the table's other indexes, then
    ADD CONSTRAINT ... USING INDEX, only a catalog change under the exclusive
    lock. pg_dump writes the same definition as for ADD CONSTRAINT ... PRIMARY
    KEY (...) (tests/test_parallel_copy.py checks this)."""
    index_key, rows = f"index:{entry.dump_id}", rows_key(table)
    index = Task(
        index_key,
        "build",
        table,
        statement=str(row["index_def"]),
        deps={rows},
        # after the slow index methods: with fewer free workers than builds,
        # the longest one starts first
        rank=(-table.size, 3),
        locks={table.label: False},
    )
    attach = Task(
        f"entry:{entry.dump_id}",  # what a foreign key waits for: the constraint
        "build",
        table,
        statement=attach_key_sql(
            staged_name(table, staged),
            str(row["conname"]),
            primary=row["contype"] == "p",
            deferrable=bool(row["condeferrable"]),
            deferred=bool(row["condeferred"]),
        ),
        deps={rows, index_key},
        rank=(-table.size, 1),
        locks={table.label: True},
    )
    return [index, attach]


def _index_or_constraint(entry: TocEntry, row: CatalogRow, table: CopyTable) -> Task:
    """An index, or a constraint restored whole (an exclusion constraint, say)."""
    # Keys first (short, but exclusive), then the slow index methods first.
    constraint = entry.kind == "CONSTRAINT"
    order = 1 if constraint else 2 if row["method"] in _SLOW_METHODS else 4
    return Task(
        f"entry:{entry.dump_id}",
        "build",
        table,
        entry,
        {rows_key(table)},
        rank=(-table.size, order),
        locks={table.label: constraint},
    )


def _foreign_key(
    entry: TocEntry,
    row: CatalogRow,
    by_staged: dict[tuple[str, str], CopyTable],
    index_task: dict[int, str],
) -> Task | None:
    """The foreign key's task, or None when a task cannot wait for what it references."""
    table = by_staged[(str(row["nspname"]), str(row["relname"]))]
    referenced = by_staged.get((str(row["ref_schema"]), str(row["ref_table"])))
    unique_key = index_task.get(int(str(row["conindid"])))
    if referenced is None or unique_key is None:
        return None
    deps = {rows_key(table), rows_key(referenced), unique_key}
    # SHARE ROW EXCLUSIVE on both tables: conflicts with index builds on either.
    locks = {table.label: True, referenced.label: True}
    key = f"entry:{entry.dump_id}"
    return Task(key, "build", table, entry, deps, rank=(-table.size, 5), locks=locks)


def staged_name(table: CopyTable, staged: dict[str, str]) -> str:
    """The table's staging name, quoted: `"elt_staging_1_0"."orders"`."""
    return f"{quote_ident(staged[table.schema])}.{quote_ident(table.name)}"


def attach_key_sql(
    table: str, name: str, *, primary: bool, deferrable: bool, deferred: bool
) -> str:
    """ADD CONSTRAINT ... USING INDEX for an index built under the constraint's
    own name (so nothing is renamed). The key columns are already NOT NULL: a
    dumped table declares them so."""
    kind = "PRIMARY KEY" if primary else "UNIQUE"
    timing = " DEFERRABLE" if deferrable else ""
    timing += " INITIALLY DEFERRED" if deferred else ""
    return (
        f"ALTER TABLE ONLY {table} ADD CONSTRAINT {quote_ident(name)} "
        f"{kind} USING INDEX {quote_ident(name)}{timing}"
    )


def check_tasks(tables: list[CopyTable]) -> list[Task]:
    """Validation figures of each table, on both sides, after its rows are in.

    They rank last: they fill the time a worker would otherwise wait (while
    the largest table's slowest index builds, typically), and they only read,
    so they take no lock that matters to the builds.
    """
    return [
        Task(
            f"{kind}:{t.label}",
            kind,
            t,
            deps={rows_key(t)},
            rank=(1, -t.size),
            # Reading the staging table conflicts with ADD CONSTRAINT's lock.
            locks={t.label: False} if kind == "check_destination" else {},
        )
        for t in tables
        for kind in ("check_source", "check_destination")
    ]
