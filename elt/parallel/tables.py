"""The tables the parallel copy copies, as the source's snapshot lists them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.rows import dict_row

from elt.connect import Connection
from elt.parallel.commands import quote_ident
from elt.sql import read_sql


@dataclass(frozen=True)
class CopyTable:
    schema: str  # in the source (and, after the swap, in the destination)
    name: str
    size: int
    columns: tuple[str, ...]
    binary: bool
    oid_columns: tuple[str, ...] = ()  # see elt/sql/copy_tables.sql

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_list(self) -> str:
        """` (a, b)`, or nothing for a table without copyable columns (it can still
        hold rows, and `COPY t ()` is a syntax error)."""
        if not self.columns:
            return ""
        return " (" + ", ".join(quote_ident(c) for c in self.columns) + ")"

    @property
    def format(self) -> str:
        return "binary" if self.binary else "text"


def source_tables(snapshot: Connection, schemas: Sequence[str]) -> list[CopyTable]:
    """The copied schemas' tables, largest first (elt/sql/copy_tables.sql)."""
    cursor = snapshot.cursor(row_factory=dict_row)
    rows = cursor.execute(read_sql("copy_tables.sql"), {"schemas": list(schemas)})
    return [
        CopyTable(
            str(row["nspname"]),
            str(row["relname"]),
            int(str(row["size"])),
            tuple(str(c) for c in row["columns"]),
            bool(row["binary"]),
            tuple(str(c) for c in row["oid_columns"]),
        )
        for row in rows
    ]
