"""The source's schema as pg_restore lists it, and whether staging can copy it.

pg_restore --list names each archive entry's type; the staged path knows how
to place only some types, and a few properties of the source (large objects,
OID alias columns, user-defined code in expressions) rule it out as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from elt.connect import Connection
from elt.replace import STAGING_PREFIX
from elt.sql import read_sql

if TYPE_CHECKING:
    from elt.parallel.tables import CopyTable

# TOC entry types the staged path knows how to place. Anything else in the
# source's schema (EXTENSION, EVENT TRIGGER, PUBLICATION, CAST, DEFAULT ACL,
# FOREIGN TABLE, SERVER, ...) is database-wide or reaches outside the copied
# schemas, so it cannot wait in a staging schema: the streamed path copies it.
STAGEABLE = frozenset(
    {
        "ACL",
        "AGGREGATE",
        "CHECK CONSTRAINT",
        "COLLATION",
        "COMMENT",
        "CONSTRAINT",
        "CONVERSION",
        "DEFAULT",
        "DOMAIN",
        "FK CONSTRAINT",
        "FUNCTION",
        "INDEX",
        "INDEX ATTACH",
        "MATERIALIZED VIEW",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "POLICY",
        "PROCEDURE",
        "ROW SECURITY",
        "RULE",
        "SCHEMA",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SHELL TYPE",
        "STATISTICS",
        "TABLE",
        "TABLE ATTACH",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TRIGGER",
        "TYPE",
        "VIEW",
    }
)
# Longest first, so that "FK CONSTRAINT" is not read as "FK" + ..., nor
# "SEQUENCE OWNED BY" as "SEQUENCE".
_KNOWN_TYPES = sorted(
    STAGEABLE
    | {
        "ACCESS METHOD",
        "BLOB",
        "BLOBS",
        "CAST",
        "DATABASE",
        "DATABASE PROPERTIES",
        "DEFAULT ACL",
        "ENCODING",
        "EVENT TRIGGER",
        "EXTENSION",
        "FOREIGN DATA WRAPPER",
        "FOREIGN SERVER",
        "FOREIGN TABLE",
        "LARGE OBJECT",
        "PROCEDURAL LANGUAGE",
        "PUBLICATION",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "SEARCHPATH",
        "SERVER",
        "STDSTRINGS",
        "SUBSCRIPTION",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TRANSFORM",
        "USER MAPPING",
    },
    key=len,
    reverse=True,
)
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


class NotEligible(Exception):
    """The source needs the streamed path; nothing in the destination was changed."""


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    oid: int
    kind: str
    line: str


def parse_toc(listing: str) -> list[TocEntry]:
    """The entries of `pg_restore -l` output, with their type (kind); '?' when unknown."""
    entries = []
    for line in listing.splitlines():
        match = _TOC_LINE.match(line)
        if match is None:
            continue  # the header and comments start with ';'
        rest = match.group(4)
        kind = next((t for t in _KNOWN_TYPES if rest.startswith(t + " ")), "?")
        entries.append(TocEntry(int(match.group(1)), int(match.group(3)), kind, line))
    return entries


def check_eligible(
    entries: list[TocEntry],
    extras: Sequence[Mapping[str, Any]],
    tables: list[CopyTable],
    schemas: list[str],
) -> None:
    """Raise NotEligible, naming why, for a source the staging design cannot copy.

    `extras`: the rows of elt/sql/source_extras.sql.
    """
    unsupported = sorted({e.kind for e in entries if e.kind not in STAGEABLE})
    if unsupported:
        raise NotEligible(f"the source has objects of type {', '.join(unsupported)}")
    if any(row["relkind"] == "L" for row in extras):
        raise NotEligible("the source has large objects")
    with_oids = [f"{t.label}.{c}" for t in tables for c in t.oid_columns]
    if with_oids:
        raise NotEligible(
            "columns of OID alias types (regclass, regtype, ...) name objects that the "
            f"swap would move: {', '.join(with_oids[:5])}"
        )
    if any(s.startswith(STAGING_PREFIX) for s in schemas):
        raise NotEligible(f"a source schema name starts with {STAGING_PREFIX}")


def check_expression_code(snapshot: Connection, schemas: list[str]) -> None:
    """NotEligible when loading or indexing a copied table runs user-defined code
    (elt/sql/expression_functions.sql): it could read other copied tables by name,
    and those are only staged while it runs."""
    cursor = snapshot.cursor(row_factory=dict_row)
    calls = cursor.execute(read_sql("expression_functions.sql"), {"schemas": schemas}).fetchall()
    if calls:
        named = "; ".join(f"{c['used_by']} calls {c['uses']}" for c in calls[:5])
        raise NotEligible(
            "user-defined code runs while tables load or are indexed, and could read other "
            f"copied tables, which are only staged then ({len(calls)}): {named}"
        )
