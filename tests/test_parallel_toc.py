"""The parallel copy's reading of pg_restore's TOC listing (elt/parallel/toc.py). No database."""

from __future__ import annotations

import pytest

from elt.parallel.toc import TocEntry, parse_toc

TOC_HEADER = """\
;
; Archive created at 2026-01-05 10:00:00 UTC
;     dbname: shop
;     TOC Entries: 42
;     Compression: -1
;     Dump Version: 1.14-0
;     Format: CUSTOM
;     Integer: 4 bytes
;     Offset: 8 bytes
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;     Dumped by pg_dump version: 15.18 (Debian 15.18-0+deb12u1)
;
;
; Selected TOC Entries:
;
"""

# (pg_restore --list line, dump id, oid, kind)
TOC_LINES = [
    ("6; 2615 16385 SCHEMA - shop postgres", 6, 16385, "SCHEMA"),
    ("2; 3079 16434 EXTENSION - citext ", 2, 16434, "EXTENSION"),
    ("3480; 0 0 COMMENT - EXTENSION citext ", 3480, 0, "COMMENT"),
    ("216; 1259 16386 TABLE shop customers postgres", 216, 16386, "TABLE"),
    ("215; 1259 16385 SEQUENCE shop customers_id_seq postgres", 215, 16385, "SEQUENCE"),
    (
        "217; 1259 16386 SEQUENCE OWNED BY shop customers_id_seq postgres",
        217,
        16386,
        "SEQUENCE OWNED BY",
    ),
    (
        "226; 1259 16465 MATERIALIZED VIEW shop daily_totals postgres",
        226,
        16465,
        "MATERIALIZED VIEW",
    ),
    ("3311; 2604 16389 DEFAULT shop customers id postgres", 3311, 16389, "DEFAULT"),
    (
        "3312; 826 16501 DEFAULT ACL shop DEFAULT PRIVILEGES FOR TABLES postgres",
        3312,
        16501,
        "DEFAULT ACL",
    ),
    (
        "3317; 2606 16391 CONSTRAINT shop customers customers_pkey postgres",
        3317,
        16391,
        "CONSTRAINT",
    ),
    (
        "3249; 2606 16448 FK CONSTRAINT shop events events_customer_fk postgres",
        3249,
        16448,
        "FK CONSTRAINT",
    ),
    ("3324; 1259 16470 INDEX shop events_payload_idx postgres", 3324, 16470, "INDEX"),
    (
        "3325; 0 16471 INDEX ATTACH shop events_2026_payload_idx postgres",
        3325,
        16471,
        "INDEX ATTACH",
    ),
    ("3400; 3466 16500 EVENT TRIGGER - audit_ddl postgres", 3400, 16500, "EVENT TRIGGER"),
    ("3401; 0 0 ACL - SCHEMA shop postgres", 3401, 0, "ACL"),
    ("3500; 9999 16600 SHINY NEW THING shop gadget postgres", 3500, 16600, "?"),
]


@pytest.mark.parametrize(
    ("line", "dump_id", "oid", "kind"), TOC_LINES, ids=[case[3] for case in TOC_LINES]
)
def test_parse_toc_reads_each_entry(line: str, dump_id: int, oid: int, kind: str) -> None:
    assert parse_toc(line) == [TocEntry(dump_id, oid, kind, line)]


def test_parse_toc_skips_the_header_comments_and_blank_lines() -> None:
    body = [case[0] for case in TOC_LINES]
    listing = (
        TOC_HEADER
        + "\n".join(body[:3])
        + "\n;3264; 2606 16400 CONSTRAINT shop orders orders_pkey postgres\n\n"
        + "\n".join(body[3:])
        + "\n"
    )
    entries = parse_toc(listing)
    assert [e.line for e in entries] == body
    assert [e.kind for e in entries] == [case[3] for case in TOC_LINES]
