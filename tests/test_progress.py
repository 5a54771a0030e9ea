"""Progress lines of both copy paths (elt/progress.py): the parallel copy's counters and the
one-stream path's CopyScanner. No database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from elt.progress import CopyScanner, Progress


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == message]


@pytest.fixture
def records() -> Iterator[tuple[logging.Logger, Records]]:
    logger = logging.getLogger("test_progress")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Records()
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


NEVER = 3600.0  # the reporter's interval: it never fires during a test


def fields(record: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in names)


def test_progress_logs_each_table_and_a_final_line(
    records: tuple[logging.Logger, Records],
) -> None:
    logger, handler = records
    progress = Progress(logger, total_tables=2, total_size=1_000, interval=NEVER)
    progress.start()
    try:
        progress.table_started("shop.orders", 600)
        progress.add_bytes("shop.orders", 100)
        progress.add_bytes("shop.orders", 50)
        snap = progress.snapshot()
        assert (snap["tables_done"], snap["percent"], snap["bytes"]) == (0, 15.0, 150)
        progress.table_done("shop.orders", 7, 0.5)
        progress.table_started("shop.customers", 400)
        progress.add_bytes("shop.customers", 200)
        snap = progress.snapshot()
        assert (snap["tables_done"], snap["tables_total"], snap["rows"]) == (1, 2, 7)
        assert (snap["bytes"], snap["percent"]) == (350, 80.0)
        progress.add_bytes("shop.customers", 5_000)  # a COPY stream larger than the table
        assert progress.snapshot()["percent"] == 100.0
        progress.table_done("shop.customers", 3, 0.25)
    finally:
        progress.finish()

    copied = handler.named("Table copied")
    assert [fields(r, "table", "rows", "bytes") for r in copied] == [
        ("shop.orders", 7, 150),
        ("shop.customers", 3, 5_200),
    ]
    assert [r.duration_seconds for r in copied] == [0.5, 0.25]  # type: ignore[attr-defined]
    (final,) = handler.named("Copy progress")  # the reporter never fired: only finish()'s
    assert fields(final, "tables_done", "tables_total", "rows", "bytes", "percent") == (
        2,
        2,
        10,
        5_350,
        100.0,
    )
    assert final.eta_seconds == 0.0  # type: ignore[attr-defined]


def test_progress_final_line_is_100_percent_for_empty_tables(
    records: tuple[logging.Logger, Records],
) -> None:
    logger, handler = records
    progress = Progress(logger, total_tables=1, total_size=0, interval=NEVER)
    progress.table_started("shop.empty", 0)
    progress.add_bytes("shop.empty", 21)  # the binary COPY header and trailer
    progress.table_done("shop.empty", 0, 0.1)
    progress.finish()
    (final,) = handler.named("Copy progress")
    assert fields(final, "tables_done", "percent") == (1, 100.0)


# pg_restore's SQL as psql receives it: headers, a row that looks like a
# terminator but is escaped data, a row starting with \N (NULL), an empty
# table, a "COPY" inside a comment and one not at a line start, a long row.
RESTORE_SQL = (
    b"SET client_encoding = 'UTF8';\n"
    b"--\n-- Data for Name: users; Type: TABLE DATA\n--\n\n"
    b"COPY public.users (id, name) FROM stdin;\n"
    b"1\ta\n2\tb\\nc\n3\t\\\\.\n\\N\t\\.x\n\\.\n\n"
    b'COPY "S"."t t" (a) FROM stdin;\n\\.\n'
    b"SELECT 1; -- COPY x FROM stdin;\n  COPY a FROM stdin;\n"
    b"COPY public.big (a) FROM stdin;\n"
    + b"".join(b"%d\n" % i for i in range(1000))
    + b"\\.\nCOPY public.wide (a) FROM stdin;\n"
    + b"x" * 5000
    + b"\n\\.\n"
)
EXPECTED_TABLES = {"public.users": 4, '"S"."t t"': 0, "public.big": 1000, "public.wide": 1}


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64, 1000, 4096, len(RESTORE_SQL)])
def test_copy_scanner_counts_every_table_whatever_the_chunking(
    records: tuple[logging.Logger, Records], chunk: int
) -> None:
    logger, handler = records
    progress = Progress(logger, total_tables=4, total_size=1, interval=NEVER)
    scanner = CopyScanner(progress, {})
    for start in range(0, len(RESTORE_SQL), chunk):
        scanner.feed(RESTORE_SQL[start : start + chunk])
    copied = {r.table: r.rows for r in handler.named("Table copied")}  # type: ignore[attr-defined]
    assert copied == EXPECTED_TABLES
    assert progress.rows == sum(EXPECTED_TABLES.values())
    # bytes: every data line of every block, without the "\." terminators
    assert progress.bytes == 4 + 6 + 6 + 8 + sum(len(b"%d\n" % i) for i in range(1000)) + 5001


def test_copy_scanner_holds_no_row_in_memory(records: tuple[logging.Logger, Records]) -> None:
    logger, handler = records
    progress = Progress(logger, total_tables=1, total_size=1, interval=NEVER)
    scanner = CopyScanner(progress, {})
    scanner.feed(b"COPY public.blobs (b) FROM stdin;\n\\\\x")
    megabyte = b"ab" * (1 << 19)
    for _ in range(20):  # one 20 MB row, fed as the relay does, 1 MB at a time
        scanner.feed(megabyte)
        assert len(scanner._carry) <= 2
    scanner.feed(b"\n\\.\n")
    (line,) = handler.named("Table copied")
    assert line.rows == 1  # type: ignore[attr-defined]
    assert progress.bytes == 3 + 20 * len(megabyte) + 1
