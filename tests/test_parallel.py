"""The parallel copy path (elt/parallel_copy.py) and its progress lines (elt/progress.py).

Tier 0 (no database): TOC parsing, task planning, the scheduler, the exact
argument lists of the tools, the progress counters.

Tier 1 (real servers), with the parallel path forced on the small seed: log
lines and totals, the fallbacks to the streamed path, staging leftovers, a
busy destination, and faults inside an index or key build. As in
test_faults.py, no test waits on the clock: a run is held inside a build by an
event trigger that waits for an advisory lock the test owns, and the test goes
on when pg_stat_activity shows the job waiting there.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_faults import descendants, loaded_then_changed, rerun_succeeds

from conftest import (
    REFUSAL,
    REFUSE_FILM_ACTORS_KEYS,
    RELEASE_REFUSAL,
    SEED_COUNTS,
    Databases,
    PgServer,
    elt_sessions,
    finish,
    run_elt,
    start_job,
    the_error,
    the_interruption,
    wait_until,
)
from elt.config import DatabaseSettings
from elt.parallel_copy import (
    CopyTable,
    Scheduler,
    Task,
    TocEntry,
    build_tasks,
    copy_in_argv,
    copy_out_argv,
    copy_session_options,
    entry_sql_argv,
    parse_toc,
    schema_dump_argv,
    schema_restore_argv,
)
from elt.progress import CopyScanner, Progress
from elt.replace import STAGING_MARKER
from elt.sql import LOCK_KEY

# ============================================================================
# Tier 0: no database
# ============================================================================

# --- parse_toc ------------------------------------------------------------------

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


# --- build_tasks ----------------------------------------------------------------

STAGING = "elt_staging_0"
STAGED = {"shop": STAGING}
ORDERS = CopyTable("shop", "orders", 90_000, ("id", "customer_id", "tags"), binary=True)
CUSTOMERS = CopyTable("shop", "customers", 5_000, ("id", "name"), binary=True)


def toc(dump_id: int, kind: str, oid: int, name: str) -> TocEntry:
    return TocEntry(dump_id, oid, kind, f"{dump_id}; 1259 {oid} {kind} shop {name} postgres")


def index_row(oid: int, table: str, method: str, relkind: str = "r") -> tuple[object, ...]:
    # (kind, oid, schema, relname, relkind, contype, conindid, ref_schema, ref_table, method,
    #  conname, index_def, condeferrable, condeferred): see elt/sql/staging_catalog.sql
    return (
        "i",
        oid,
        STAGING,
        table,
        relkind,
        None,
        oid,
        None,
        None,
        method,
        None,
        None,
        None,
        None,
    )


def constraint_row(
    oid: int,
    table: str,
    contype: str,
    index: int,
    references: str | None = None,
    *,
    name: str = "",
    method: str = "btree",
) -> tuple[object, ...]:
    ref_schema = None if references is None else STAGING
    index_def = (
        f"CREATE UNIQUE INDEX {name} ON {STAGING}.{table} USING btree (id)"
        if contype in ("p", "u")
        else None
    )
    return (
        "c", oid, STAGING, table, "r", contype, index, ref_schema, references, method,
        name, index_def, False, False,
    )  # fmt: skip


# The post-data of a small shop schema, in pg_dump's order.
ORDERS_PKEY = toc(10, "CONSTRAINT", 2001, "orders orders_pkey")
CUSTOMERS_PKEY = toc(11, "CONSTRAINT", 2002, "customers customers_pkey")
ORDERS_PLACED = toc(12, "INDEX", 1001, "orders_placed_idx")
ORDERS_TAGS = toc(13, "INDEX", 1002, "orders_tags_idx")
TOTALS_DAY = toc(14, "INDEX", 1003, "daily_totals_day_idx")  # on a materialized view
EVENTS_KIND = toc(15, "INDEX", 1004, "events_kind_idx")  # on a partitioned parent
ORDERS_TRIGGER = toc(16, "TRIGGER", 3001, "orders orders_audit")
ORDERS_CUSTOMER_FK = toc(17, "FK CONSTRAINT", 2003, "orders orders_customer_fk")
ORDERS_EVENT_FK = toc(18, "FK CONSTRAINT", 2004, "orders orders_event_fk")
ORDERS_LEGACY_FK = toc(19, "FK CONSTRAINT", 2005, "orders orders_legacy_fk")
ORDERS_NO_OVERLAP = toc(21, "CONSTRAINT", 2006, "orders orders_no_overlap")  # EXCLUDE
POST_DATA = [
    ORDERS_PKEY,
    CUSTOMERS_PKEY,
    ORDERS_PLACED,
    ORDERS_TAGS,
    TOTALS_DAY,
    EVENTS_KIND,
    ORDERS_TRIGGER,
    ORDERS_CUSTOMER_FK,
    ORDERS_EVENT_FK,
    ORDERS_LEGACY_FK,
    ORDERS_NO_OVERLAP,
]
CATALOG = {
    ("c", 2001): constraint_row(2001, "orders", "p", 1101, name="orders_pkey"),
    ("c", 2002): constraint_row(2002, "customers", "p", 1102, name="customers_pkey"),
    ("c", 2006): constraint_row(2006, "orders", "x", 1103, name="orders_no_overlap", method="gist"),
    ("i", 1001): index_row(1001, "orders", "btree"),
    ("i", 1002): index_row(1002, "orders", "gin"),
    ("i", 1003): index_row(1003, "daily_totals", "btree", relkind="m"),
    ("i", 1004): index_row(1004, "events", "btree", relkind="p"),
    # references the customers' primary key, built by a task
    ("c", 2003): constraint_row(2003, "orders", "f", 1102, references="customers"),
    # references the partitioned parent's index, which no task builds
    ("c", 2004): constraint_row(2004, "orders", "f", 1004, references="events"),
    # references a copied table through an index no task builds
    ("c", 2005): constraint_row(2005, "orders", "f", 1999, references="customers"),
}
ROWS_ORDERS, ROWS_CUSTOMERS = "rows:shop.orders", "rows:shop.customers"


def test_build_tasks_splits_post_data_into_per_table_builds_and_the_rest() -> None:
    tasks, remainder = build_tasks([CUSTOMERS, ORDERS], POST_DATA, CATALOG, STAGED)

    summary = {
        t.key: (
            t.kind,
            t.table.label,
            t.entry.dump_id if t.entry else t.statement,
            t.deps,
            t.locks,
        )
        for t in tasks
    }
    orders, customers = '"elt_staging_0"."orders"', '"elt_staging_0"."customers"'
    assert summary == {
        ROWS_ORDERS: ("rows", "shop.orders", None, set(), {}),
        ROWS_CUSTOMERS: ("rows", "shop.customers", None, set(), {}),
        # A primary key in two steps. Its unique index takes CREATE INDEX's
        # SHARE lock, which only conflicts with the keys ...
        "index:10": (
            "build",
            "shop.orders",
            "CREATE UNIQUE INDEX orders_pkey ON elt_staging_0.orders USING btree (id)",
            {ROWS_ORDERS},
            {"shop.orders": False},
        ),
        # ... and then the constraint, under its name (what a foreign key waits
        # for), locks its table against every other build on it.
        "entry:10": (
            "build",
            "shop.orders",
            f'ALTER TABLE ONLY {orders} ADD CONSTRAINT "orders_pkey" '
            'PRIMARY KEY USING INDEX "orders_pkey"',
            {ROWS_ORDERS, "index:10"},
            {"shop.orders": True},
        ),
        "index:11": (
            "build",
            "shop.customers",
            "CREATE UNIQUE INDEX customers_pkey ON elt_staging_0.customers USING btree (id)",
            {ROWS_CUSTOMERS},
            {"shop.customers": False},
        ),
        "entry:11": (
            "build",
            "shop.customers",
            f'ALTER TABLE ONLY {customers} ADD CONSTRAINT "customers_pkey" '
            'PRIMARY KEY USING INDEX "customers_pkey"',
            {ROWS_CUSTOMERS, "index:11"},
            {"shop.customers": True},
        ),
        "entry:12": ("build", "shop.orders", 12, {ROWS_ORDERS}, {"shop.orders": False}),
        "entry:13": ("build", "shop.orders", 13, {ROWS_ORDERS}, {"shop.orders": False}),
        # a foreign key waits for both tables' rows and the referenced key
        "entry:17": (
            "build",
            "shop.orders",
            17,
            {ROWS_ORDERS, ROWS_CUSTOMERS, "entry:11"},
            {"shop.orders": True, "shop.customers": True},
        ),
        # an exclusion constraint has no USING INDEX form: restored whole
        "entry:21": ("build", "shop.orders", 21, {ROWS_ORDERS}, {"shop.orders": True}),
    }
    assert sorted(e.dump_id for e in remainder) == [14, 15, 16, 18, 19]


def test_build_tasks_ranks_the_largest_table_first_and_slow_index_methods_early() -> None:
    tasks, _ = build_tasks([CUSTOMERS, ORDERS], POST_DATA, CATALOG, STAGED)
    assert [t.key for t in sorted(tasks, key=lambda t: t.rank)] == [
        ROWS_ORDERS,
        "entry:10",  # attaching orders' primary key: exclusive, but only a catalog change
        "entry:21",  # an exclusion constraint, exclusive too
        "entry:13",  # GIN: the longest build starts first
        "index:10",  # the primary key's unique index
        "entry:12",  # btree
        "entry:17",  # foreign key
        ROWS_CUSTOMERS,
        "entry:11",
        "index:11",
    ]


# pg_restore --use-list restores the remainder in the order of its list, and
# pg_dump writes the COMMENT on a constraint right after the constraint.
def test_build_tasks_keeps_the_remainder_in_pg_dump_order() -> None:
    fk_comment = TocEntry(
        20, 0, "COMMENT", "20; 0 0 COMMENT shop CONSTRAINT orders_event_fk ON orders postgres"
    )
    post_data = [*POST_DATA[:9], fk_comment, *POST_DATA[9:]]
    _, remainder = build_tasks([CUSTOMERS, ORDERS], post_data, CATALOG, STAGED)
    assert [e.dump_id for e in remainder] == [14, 15, 16, 18, 20, 19]


# --- Scheduler ------------------------------------------------------------------

STEP_SAFETY_NET_SECONDS = 30.0


def task(
    key: str,
    kind: str = "build",
    *,
    rank: tuple[int, ...],
    deps: tuple[str, ...] = (),
    locks: dict[str, bool] | None = None,
) -> Task:
    return Task(key, kind, ORDERS, deps=set(deps), rank=rank, locks=locks or {})


def step(scheduler: Scheduler) -> Task | None:
    """scheduler.next(), called only when a task is ready or none is left: it must not block.

    It runs in a thread so that a scheduler that does block fails the test
    (after a safety net) instead of hanging it.
    """
    result: list[Task | None] = []
    thread = threading.Thread(target=lambda: result.append(scheduler.next()))
    thread.start()
    thread.join(STEP_SAFETY_NET_SECONDS)
    if thread.is_alive():
        scheduler.stop()  # wakes it up
        thread.join()
        pytest.fail("Scheduler.next() blocked although a task was ready")
    return result[0]


# Each case: max_copies, the tasks, and a script of ("next", the key it must
# hand out, or None: nothing left) and ("done", key) steps. "spare" tasks rank
# last and are always ready: handing one out proves that a better-ranked task
# was held back on purpose.
SPARE = task("spare", rank=(9,))
SPARE_2 = task("spare 2", rank=(10,))
SCHEDULES: dict[str, tuple[int, list[Task], list[tuple[str, str | None]]]] = {
    "a build waits for its table's rows": (
        2,
        [
            task("rows:t", "rows", rank=(0, 0)),
            task("index:t", rank=(0, 1), deps=("rows:t",)),
            SPARE,
        ],
        [
            ("next", "rows:t"),
            ("next", "spare"),
            ("done", "rows:t"),
            ("next", "index:t"),
            ("done", "index:t"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
    "a foreign key waits for every dependency": (
        2,
        [
            task("rows:a", "rows", rank=(0, 0)),
            task("rows:b", "rows", rank=(1, 0)),
            task("fk", rank=(0, 5), deps=("rows:a", "rows:b")),
            SPARE,
        ],
        [
            ("next", "rows:a"),
            ("next", "rows:b"),
            ("done", "rows:a"),
            ("next", "spare"),
            ("done", "rows:b"),
            ("next", "fk"),
            ("done", "spare"),
            ("done", "fk"),
            ("next", None),
        ],
    ),
    "at most max_copies row copies at once": (
        2,
        [
            task("rows:a", "rows", rank=(-3, 0)),
            task("rows:b", "rows", rank=(-2, 0)),
            task("rows:c", "rows", rank=(-1, 0)),
            SPARE,
        ],
        [
            ("next", "rows:a"),
            ("next", "rows:b"),
            ("next", "spare"),
            ("done", "rows:a"),
            ("next", "rows:c"),
            ("done", "rows:b"),
            ("done", "rows:c"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
    "an exclusive lock waits for shared ones": (
        4,
        [
            task("index 1", rank=(0, 1), locks={"t": False}),
            task("pkey", rank=(0, 2), locks={"t": True}),
            task("index 2", rank=(0, 3), locks={"t": False}),
            SPARE,
            SPARE_2,
        ],
        [
            ("next", "index 1"),
            ("next", "index 2"),  # shared with shared: fine
            ("next", "spare"),
            ("done", "index 1"),
            ("next", "spare 2"),  # "index 2" still holds its shared lock
            ("done", "index 2"),
            ("next", "pkey"),
            ("done", "pkey"),
            ("done", "spare"),
            ("done", "spare 2"),
            ("next", None),
        ],
    ),
    "shared locks wait for an exclusive one; other tables do not": (
        4,
        [
            task("pkey", rank=(0, 1), locks={"t": True}),
            task("index t", rank=(0, 2), locks={"t": False}),
            task("index u", rank=(0, 3), locks={"u": False}),
            SPARE,
        ],
        [
            ("next", "pkey"),
            ("next", "index u"),
            ("next", "spare"),
            ("done", "pkey"),
            ("next", "index t"),
            ("done", "index t"),
            ("done", "index u"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
    "a foreign key locks both of its tables": (
        4,
        [
            task("index u", rank=(0, 1), locks={"u": False}),
            task("fk", rank=(0, 2), locks={"t": True, "u": True}),
            task("index t", rank=(0, 3), locks={"t": False}),
            SPARE,
        ],
        [
            ("next", "index u"),
            ("next", "index t"),
            ("next", "spare"),
            ("done", "index u"),
            ("done", "index t"),
            ("next", "fk"),
            ("done", "fk"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
}


@pytest.mark.parametrize(("max_copies", "tasks", "script"), SCHEDULES.values(), ids=SCHEDULES)
def test_scheduler_hands_out_tasks_in_a_safe_order(
    max_copies: int, tasks: list[Task], script: list[tuple[str, str | None]]
) -> None:
    scheduler = Scheduler(tasks, max_copies=max_copies)
    running: dict[str, Task] = {}
    for number, (action, key) in enumerate(script):
        if action == "next":
            got = step(scheduler)
            assert (got.key if got else None) == key, f"step {number}"
            if got is not None:
                running[got.key] = got
        else:
            assert key is not None
            scheduler.done(running.pop(key))
    assert running == {}
    assert scheduler.error is None


def test_scheduler_stop_ends_the_hand_out() -> None:
    scheduler = Scheduler([task("a", rank=(0,)), task("b", rank=(1,))], max_copies=2)
    first = step(scheduler)
    assert first is not None
    assert first.key == "a"
    scheduler.stop()
    assert step(scheduler) is None  # "b" is ready, but the run stopped
    assert scheduler.stopped
    assert scheduler.error is None


@pytest.mark.parametrize(
    "tasks",
    [
        [task("orphan", rank=(0,), deps=("missing",))],
        [task("a", rank=(0,), deps=("b",)), task("b", rank=(1,), deps=("a",))],
    ],
    ids=["missing dependency", "dependency cycle"],
)
def test_scheduler_reports_tasks_that_can_never_run(tasks: list[Task]) -> None:
    scheduler = Scheduler(tasks, max_copies=2)
    assert step(scheduler) is None
    assert isinstance(scheduler.error, RuntimeError)
    for t in tasks:
        assert t.key in str(scheduler.error)
    assert scheduler.stopped


# --- argument lists -------------------------------------------------------------

SECRET = "s3cr'et pw-" + "x" * 8
SOURCE = DatabaseSettings("source", "src.example", 5433, "shop", "reader", SECRET)
DESTINATION = DatabaseSettings("destination", "dst.example", 6432, "warehouse", "loader", SECRET)
QUOTED = CopyTable("Sales", 'Order "Items"', 1, ("id", "naïve col"), binary=False)
PLAIN = CopyTable("public", "users", 1, ("id",), binary=True)
PSQL = ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"]
SRC = ["-h", "src.example", "-p", "5433", "-U", "reader", "-d", "shop"]
DST = ["-h", "dst.example", "-p", "6432", "-U", "loader", "-d", "warehouse"]
SNAPSHOT = "00000003-0000001A-1"

ARGVS: dict[str, tuple[list[str], list[str]]] = {
    "copy out, text": (
        copy_out_argv(SOURCE, SNAPSHOT, QUOTED),
        [
            *PSQL,
            *SRC,
            "-c",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            "-c",
            "SET TRANSACTION SNAPSHOT '00000003-0000001A-1'",
            "-c",
            'COPY "Sales"."Order ""Items""" ("id", "naïve col") TO STDOUT (FORMAT text)',
            "-c",
            "COMMIT",
        ],
    ),
    "copy in, binary": (
        copy_in_argv(DESTINATION, "elt_staging_0", PLAIN),
        [
            *PSQL,
            *DST,
            "-c",
            "BEGIN",
            "-c",
            'TRUNCATE "elt_staging_0"."users"',
            "-c",
            'COPY "elt_staging_0"."users" ("id") FROM STDIN (FORMAT binary, FREEZE)',
            "-c",
            "\\echo elt_rows=:ROW_COUNT",
            "-c",
            "COMMIT",
        ],
    ),
    "copy in, text": (
        copy_in_argv(DESTINATION, "elt_staging_1", QUOTED),
        [
            *PSQL,
            *DST,
            "-c",
            "BEGIN",
            "-c",
            'TRUNCATE "elt_staging_1"."Order ""Items"""',
            "-c",
            'COPY "elt_staging_1"."Order ""Items""" ("id", "naïve col") '
            "FROM STDIN (FORMAT text, FREEZE)",
            "-c",
            "\\echo elt_rows=:ROW_COUNT",
            "-c",
            "COMMIT",
        ],
    ),
    "schema dump in the snapshot": (
        schema_dump_argv(SOURCE, SNAPSHOT, []),
        [
            "pg_dump",
            *SRC,
            "--no-password",
            "--format=custom",
            "--schema-only",
            "--no-subscriptions",
            "--no-security-labels",
            "--snapshot=00000003-0000001A-1",
        ],
    ),
    "schema dump of exact schemas": (
        schema_dump_argv(DESTINATION, None, ["elt_staging_0", 'we"ird']),
        [
            "pg_dump",
            *DST,
            "--no-password",
            "--format=custom",
            "--schema-only",
            "--no-subscriptions",
            "--no-security-labels",
            "--schema",
            '"elt_staging_0"',
            "--schema",
            '"we""ird"',
        ],
    ),
    "schema restore into the scratch database": (
        schema_restore_argv(DESTINATION, "elt_scratch_16384", copy_ownership=False),
        [
            "pg_restore",
            *DST[:-1],
            "elt_scratch_16384",
            "--no-password",
            "--format=custom",
            "--single-transaction",
            "--exit-on-error",
            "--no-tablespaces",
            "--no-owner",
            "--no-privileges",
        ],
    ),
    "schema restore of pre-data, keeping owners": (
        schema_restore_argv(DESTINATION, "warehouse", copy_ownership=True, section="pre-data"),
        [
            "pg_restore",
            *DST,
            "--no-password",
            "--format=custom",
            "--single-transaction",
            "--exit-on-error",
            "--no-tablespaces",
            "--section=pre-data",
        ],
    ),
    "schema restore of a list": (
        schema_restore_argv(DESTINATION, "warehouse", copy_ownership=False, use_list=True),
        [
            "pg_restore",
            *DST,
            "--no-password",
            "--format=custom",
            "--single-transaction",
            "--exit-on-error",
            "--no-tablespaces",
            "--use-list=/dev/fd/{list}",
            "--no-owner",
            "--no-privileges",
        ],
    ),
    "entry SQL": (
        entry_sql_argv(copy_ownership=False),
        [
            "pg_restore",
            "--format=custom",
            "--use-list=/dev/fd/{list}",
            "--file=-",
            "--no-owner",
            "--no-privileges",
        ],
    ),
    "entry SQL, keeping owners": (
        entry_sql_argv(copy_ownership=True),
        ["pg_restore", "--format=custom", "--use-list=/dev/fd/{list}", "--file=-"],
    ),
}


@pytest.mark.parametrize(("argv", "expected"), ARGVS.values(), ids=ARGVS)
def test_tool_argv_is_exact_and_carries_no_password(argv: list[str], expected: list[str]) -> None:
    assert argv == expected
    assert not any(SECRET in arg for arg in argv)


SESSION_BASE = (
    "-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c row_security=off "
    "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
)


@pytest.mark.parametrize(
    ("version", "destination", "expected"),
    [
        (150000, False, SESSION_BASE),
        (150000, True, SESSION_BASE + " -c synchronous_commit=off"),
        (170000, False, SESSION_BASE + " -c transaction_timeout=0"),
        (170000, True, SESSION_BASE + " -c transaction_timeout=0 -c synchronous_commit=off"),
    ],
)
def test_copy_session_options(version: int, destination: bool, expected: str) -> None:
    assert copy_session_options(version, destination=destination) == expected


# --- Progress -------------------------------------------------------------------


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
    logger = logging.getLogger("test_parallel.progress")
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


# ============================================================================
# Tier 1: real servers, the parallel path forced
# ============================================================================

HOLD_KEY = 4242


@pytest.fixture
def dbs(dbs: Databases) -> Databases:
    dbs.path = "parallel"
    return dbs


def leftovers(dbs: Databases) -> tuple[list[str], list[str]]:
    """Staging schemas in destination_db and scratch databases on the destination server."""
    schemas = dbs.destination.query(
        "destination_db",
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'elt_staging_') ORDER BY 1",
    )
    databases = dbs.destination.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'elt_scratch_') ORDER BY 1",
    )
    return [str(r[0]) for r in schemas], [str(r[0]) for r in databases]


def destination_oid(dbs: Databases) -> int:
    rows = dbs.destination.query(
        "postgres", "SELECT oid FROM pg_database WHERE datname = 'destination_db'"
    )
    return int(rows[0][0])


def fingerprint_outside_staging(server: PgServer) -> str:
    """PgServer.fingerprint, without the elt_staging_* schemas."""
    proc = subprocess.run(
        [
            *server.client_argv("pg_dump", "destination_db"),
            "--no-owner",
            "--no-privileges",
            "--exclude-schema=elt_staging_*",
        ],
        env=server.client_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    # as PgServer.fingerprint: pg_dump >= 15.14 brackets its output with a random key
    restrict = ("\\restrict", "\\unrestrict")
    keep = (line for line in proc.stdout.splitlines() if not line.startswith(restrict))
    return "\n".join(keep)


def assert_no_staging_left(dbs: Databases) -> None:
    assert leftovers(dbs) == ([], [])


# --- lines and totals ------------------------------------------------------------


def test_parallel_run_logs_every_table_and_consistent_totals(dbs: Databases) -> None:
    run = run_elt(dbs.env())

    assert run.returncode == 0, run.stdout
    assert run.stderr == ""
    copied = run.find("Table copied")
    assert sorted(line["table"] for line in copied) == sorted(f"public.{t}" for t in SEED_COUNTS)
    assert {line["table"]: line["rows"] for line in copied} == {
        f"public.{t}": n for t, n in SEED_COUNTS.items()
    }
    assert all(line["bytes"] > 0 for line in copied)
    progress = run.find("Copy progress")
    last = progress[-1]
    assert (last["tables_done"], last["tables_total"], last["rows"]) == (5, 5, 113)
    assert last["percent"] == 100.0
    assert run.logs.index(last) > max(run.logs.index(line) for line in copied)
    (planned,) = run.find("Parallel copy planned")
    (staging,) = planned["staging_schemas"]
    assert re.fullmatch(r"elt_staging_[0-9]+_0", staging), staging  # unique to the run
    final = run.logs[-1]
    assert final["message"] == "ELT pipeline completed successfully"
    assert final["copy_path"] == "parallel"
    assert (final["tables"], final["rows"]) == (5, 113)
    assert final["bytes"] == sum(line["bytes"] for line in copied) == last["bytes"]
    assert isinstance(final["mb_per_second"], int | float)
    assert not isinstance(final["mb_per_second"], bool)
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- fallbacks to the streamed path --------------------------------------------

LOADER = "parallel_loader"
LOADER_PASSWORD = "loader pw ' with quote"


@contextmanager
def non_superuser_owner(dbs: Databases) -> Iterator[dict[str, str]]:
    """A role without CREATEDB that owns destination_db; yields the job's settings for it."""
    quoted = LOADER_PASSWORD.replace("'", "''")
    dbs.destination.execute(
        "postgres", f"CREATE ROLE {LOADER} LOGIN NOCREATEDB PASSWORD '{quoted}'"
    )
    try:
        dbs.destination.execute("postgres", f"ALTER DATABASE destination_db OWNER TO {LOADER}")
        yield {
            "DESTINATION_POSTGRES_USER": LOADER,
            "DESTINATION_POSTGRES_PASSWORD": LOADER_PASSWORD,
        }
    finally:
        dbs.destination.execute("destination_db", f"REASSIGN OWNED BY {LOADER} TO postgres")
        dbs.destination.execute("postgres", "ALTER DATABASE destination_db OWNER TO postgres")
        dbs.destination.execute("postgres", f"DROP ROLE {LOADER}")


@contextmanager
def superuser_owner(dbs: Databases) -> Iterator[dict[str, str]]:
    yield {}


DestinationOwner = Callable[[Databases], AbstractContextManager[dict[str, str]]]

# (SQL run on the source first, how the destination is reached, text the reason must contain)
FALLBACKS: dict[str, tuple[str, DestinationOwner, str]] = {
    "large object": ("SELECT lo_from_bytea(0, 'x')", superuser_owner, "large objects"),
    "extension": ("CREATE EXTENSION citext", superuser_owner, "EXTENSION"),
    "destination user without CREATEDB": ("", non_superuser_owner, "CREATEDB"),
}


@pytest.mark.parametrize(("source_sql", "owner", "reason"), FALLBACKS.values(), ids=FALLBACKS)
def test_sources_the_parallel_path_cannot_stage_are_streamed(
    dbs: Databases, source_sql: str, owner: DestinationOwner, reason: str
) -> None:
    if source_sql:
        dbs.source.execute("source_db", source_sql)
    with owner(dbs) as overrides:
        run = run_elt(dbs.env(**overrides))

    assert run.returncode == 0, run.stdout
    assert run.stderr == ""
    (not_used,) = run.find("Parallel copy not used")
    assert reason in not_used["reason"]
    assert run.find("Parallel copy planned") == []
    assert run.logs[-1]["copy_path"] == "streamed"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- leftovers of a run that was killed outright --------------------------------

# (staging schemas left in destination_db, whether a scratch database was left)
LEFTOVERS = {
    "staging schemas and scratch database": (["elt_staging_0", "elt_staging_1"], True),
    "staging schemas only": (["elt_staging_0"], False),
    "scratch database only": ([], True),
}


@pytest.mark.parametrize(("schemas", "scratch"), LEFTOVERS.values(), ids=LEFTOVERS)
def test_leftovers_of_a_killed_run_are_removed_first(
    dbs: Databases, schemas: list[str], scratch: bool
) -> None:
    for schema in schemas:
        dbs.destination.execute(
            "destination_db",
            f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.film_actors (film_id int); "
            f"COMMENT ON SCHEMA {schema} IS '{STAGING_MARKER}'",
        )
    scratch_name = f"elt_scratch_{destination_oid(dbs)}"
    if scratch:
        dbs.destination.execute("postgres", f"CREATE DATABASE {scratch_name}")
    assert leftovers(dbs) == (schemas, [scratch_name] if scratch else [])

    run = run_elt(dbs.env())

    assert run.returncode == 0, run.stdout
    warnings = run.find("Removing staging schemas left by an interrupted run")
    assert [(w["level"], w["schemas"]) for w in warnings] == (
        [("WARNING", schemas)] if schemas else []
    )
    assert run.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- a busy destination -----------------------------------------------------------


def test_a_run_refuses_while_another_run_holds_the_destination(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    with dbs.destination.connect("destination_db") as other_run:
        other_run.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        other_run.execute("CREATE SCHEMA elt_staging_0")
        other_run.execute("CREATE TABLE elt_staging_0.film_actors (film_id int)")
        other_run.execute(f"COMMENT ON SCHEMA elt_staging_0 IS '{STAGING_MARKER}'")
        before = dbs.destination.fingerprint("destination_db")

        run = run_elt(dbs.env())

        assert run.returncode == 5
        error = the_error(run)
        assert "Another ELT run" in error["error"]
        assert "Wait for the other run" in error["hint"]
        assert leftovers(dbs) == (["elt_staging_0"], [])  # the other run's staging is kept
        assert dbs.destination.fingerprint("destination_db") == before
    # Once the other run is gone, its staging is a leftover like any other.
    rerun_succeeds(dbs)
    assert_no_staging_left(dbs)


# --- a failure inside a build -----------------------------------------------------


def test_a_failing_build_leaves_the_destination_as_it_was(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    dbs.destination.execute("destination_db", REFUSE_FILM_ACTORS_KEYS)
    before = dbs.destination.fingerprint("destination_db")

    run = run_elt(dbs.env())

    assert run.returncode == 5
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert REFUSAL in " ".join(error["stderr_tail"])
    assert run.find("Parallel copy planned"), "the failure must be in the parallel path"
    assert dbs.destination.fingerprint("destination_db") == before
    assert_no_staging_left(dbs)
    dbs.destination.execute("destination_db", RELEASE_REFUSAL)
    rerun_succeeds(dbs)


# --- held inside a build: signals and a stopped destination ----------------------

HOLD_BUILD = f"""
CREATE SCHEMA guard;
CREATE FUNCTION guard.hold() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A key of film_actors, built in the staging schema: wait for the test.
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
               WHERE object_identity LIKE '%.film_actors') THEN
        PERFORM pg_advisory_lock({HOLD_KEY});
        PERFORM pg_advisory_unlock({HOLD_KEY});
    END IF;
END $$;
CREATE EVENT TRIGGER hold_build ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION guard.hold();
"""
RELEASE_BUILD = "DROP EVENT TRIGGER hold_build; DROP SCHEMA guard CASCADE"


@contextmanager
def build_held(dbs: Databases) -> Iterator[None]:
    """Make the next parallel run stop inside a build of film_actors until the context ends."""
    dbs.destination.execute("destination_db", HOLD_BUILD)
    holder = dbs.destination.connect("destination_db")
    holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
    try:
        yield
    finally:
        with suppress(psycopg.Error):
            holder.close()  # releases the lock (or the server is already gone)


def build_is_waiting(dbs: Databases) -> bool:
    return elt_sessions(dbs.destination, "wait_event = 'advisory'") == 1


def start_held_run(dbs: Databases, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """Start a run and wait until it is held inside the build; returns it and the fingerprint."""
    before = dbs.destination.fingerprint("destination_db")
    job = start_job(env)
    wait_until(lambda: build_is_waiting(dbs), "the job to wait inside a build")
    return job, before


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_inside_a_build_stops_everything_and_cleans_up(
    dbs: Databases, signum: int, code: int
) -> None:
    loaded_then_changed(dbs)
    env = dbs.env()
    with build_held(dbs):
        job, before = start_held_run(dbs, env)
        (staging,) = leftovers(dbs)[0]  # it is inside the parallel path
        assert re.fullmatch(r"elt_staging_[0-9]+_0", staging), staging
        children = descendants(job.pid)
        job.send_signal(signum)
        run = finish(job, env)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the job"
        # The held build was cancelled, not left waiting: every session is gone
        # while the test still holds the lock.
        wait_until(lambda: elt_sessions(dbs.destination) == 0, "the destination sessions to end")
        wait_until(lambda: elt_sessions(dbs.source) == 0, "the source sessions to end")

    the_interruption(run, signum, code)
    assert_no_staging_left(dbs)
    assert dbs.destination.fingerprint("destination_db") == before
    dbs.destination.execute("destination_db", RELEASE_BUILD)
    rerun_succeeds(dbs)


def other_builds_done(dbs: Databases) -> bool:
    """Every key outside film_actors is built in the staging schema: the other worker is idle."""
    keys = """
        SELECT count(*) FROM pg_constraint
        WHERE connamespace = '{0}'::regnamespace AND contype IN ('p', 'f')
          AND conrelid <> '{0}.film_actors'::regclass
    """
    expected = dbs.source.query("source_db", keys.format("public"))
    staging = dbs.destination.query(
        "destination_db", r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'elt\_staging\_%'"
    )
    if len(staging) != 1:
        return False
    built = dbs.destination.query("destination_db", keys.format(staging[0][0]))
    return bool(built == expected)


def test_destination_stopped_inside_a_build_then_a_plain_rerun_recovers(dbs: Databases) -> None:
    loaded_then_changed(dbs)
    # Validation off, and the stop only once the other worker has nothing left
    # to do: then the held build is the only work the stop interrupts, and the
    # failing step (and so the error) is always the same.
    env = dbs.env(ELT_VALIDATION="off")
    with build_held(dbs):
        job, before = start_held_run(dbs, env)
        wait_until(lambda: other_builds_done(dbs), "the other builds to be committed")
        dbs.destination.stop("fast")
        run = finish(job, env)
    dbs.destination.restart()

    assert run.returncode == 5
    error = the_error(run)
    assert error["message"] == "Data load failed"
    # It could not remove its staging schemas, and said so; the real schemas are untouched.
    assert run.find("Could not remove the staging schemas; the next run removes them")
    (left,), scratch = leftovers(dbs)
    assert re.fullmatch(r"elt_staging_[0-9]+_0", left), left
    assert scratch == []
    assert fingerprint_outside_staging(dbs.destination) == before
    dbs.destination.execute("destination_db", RELEASE_BUILD)

    again = run_elt(dbs.env())

    assert again.returncode == 0, again.stdout
    (warning,) = again.find("Removing staging schemas left by an interrupted run")
    assert warning["schemas"] == [left]
    assert again.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    assert_no_staging_left(dbs)


# --- a dependent object created while the copy runs --------------------------------


def test_a_dependent_created_during_the_copy_is_refused_at_the_swap(dbs: Databases) -> None:
    # The run checks before copying, and again in the swap's transaction.
    loaded_then_changed(dbs)
    env = dbs.env()
    with build_held(dbs):
        job, _ = start_held_run(dbs, env)
        dbs.destination.execute(
            "destination_db",
            "CREATE SCHEMA reports; CREATE TABLE reports.r (u int REFERENCES public.users (id))",
        )
        before = fingerprint_outside_staging(dbs.destination)
    run = finish(job, env)

    assert run.returncode == 5, run.stdout
    error = the_error(run)
    assert error["message"] == "Data load failed"
    assert "r_u_fkey on reports.r" in " ".join(error["stderr_tail"])
    assert run.find("Table copied"), "the refusal must come at the swap"
    assert_no_staging_left(dbs)
    assert dbs.destination.fingerprint("destination_db") == before


# --- keys built in two steps ------------------------------------------------------

# Every form of primary key and unique constraint that ADD CONSTRAINT ... USING
# INDEX has to reproduce (NULLS NOT DISTINCT: PostgreSQL 15), plus a foreign
# key and a comment that wait for one of them.
KEY_FORMS = """
CREATE SCHEMA "Key Forms";
CREATE TABLE "Key Forms"."T" (
    id int, code text, a int, b int, c int, d int,
    CONSTRAINT "T pk" PRIMARY KEY (id) WITH (fillfactor = 70),
    CONSTRAINT t_code UNIQUE NULLS NOT DISTINCT (code),
    CONSTRAINT t_a_incl UNIQUE (a) INCLUDE (b),
    CONSTRAINT t_c_deferred UNIQUE (c) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT t_d_deferrable UNIQUE (d) DEFERRABLE
);
CREATE TABLE "Key Forms".child (t_id int CONSTRAINT child_t REFERENCES "Key Forms"."T" (id));
COMMENT ON CONSTRAINT "T pk" ON "Key Forms"."T" IS 'the key';
INSERT INTO "Key Forms"."T" SELECT i, CASE WHEN i > 1 THEN 'c' || i END, i, i, i, i
FROM generate_series(1, 50) AS i;
INSERT INTO "Key Forms".child SELECT i FROM generate_series(1, 50, 7) AS i;
"""
KEY_CATALOG = """
SELECT c.conname, c.contype, c.condeferrable, c.condeferred, c.conindid::regclass::text,
       i.indisprimary, i.indimmediate, i.indnullsnotdistinct, ic.reloptions,
       pg_get_constraintdef(c.oid), d.deptype
FROM pg_constraint AS c
JOIN pg_index AS i ON i.indexrelid = c.conindid
JOIN pg_class AS ic ON ic.oid = c.conindid
LEFT JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = c.conindid
    AND d.refclassid = 'pg_constraint'::regclass
WHERE c.connamespace = '"Key Forms"'::regnamespace
ORDER BY c.conname
"""


def test_keys_built_as_an_index_then_attached_match_the_source(dbs: Databases) -> None:
    dbs.source.execute("source_db", KEY_FORMS)

    run = run_elt(dbs.env(ELT_LOG_LEVEL="DEBUG"))

    assert run.returncode == 0, run.stdout
    assert run.logs[-1]["copy_path"] == "parallel"
    attached = [
        line["entry"]
        for line in run.find("Built")
        if line["entry"].startswith("ALTER TABLE ONLY") and '."T" ' in line["entry"]
    ]
    assert len(attached) == 5, attached  # each key took the two-step route
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")
    source = dbs.source.query("source_db", KEY_CATALOG)
    assert len(source) == 6  # five keys, one foreign key
    assert dbs.destination.query("destination_db", KEY_CATALOG) == source


# --- bugs found while writing these tests (fixed; each test failed before) ---------


def test_a_comment_on_a_foreign_key_to_a_partitioned_table(dbs: Databases) -> None:
    dbs.source.execute(
        "source_db",
        """
        CREATE TABLE regions (id int PRIMARY KEY) PARTITION BY RANGE (id);
        CREATE TABLE regions_low PARTITION OF regions FOR VALUES FROM (0) TO (100);
        CREATE TABLE stores (region_id int CONSTRAINT stores_region_fkey REFERENCES regions (id));
        INSERT INTO regions VALUES (1);
        INSERT INTO stores VALUES (1);
        COMMENT ON CONSTRAINT stores_region_fkey ON stores IS 'a key to a partitioned table';
        """,
    )
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    assert run.logs[-1]["copy_path"] == "parallel"
    assert dbs.destination.fingerprint("destination_db") == dbs.source.fingerprint("source_db")


def test_the_final_progress_line_is_100_percent_for_empty_tables(dbs: Databases) -> None:
    dbs.source.execute("source_db", "TRUNCATE users, films, film_category, actors, film_actors")
    run = run_elt(dbs.env())
    assert run.returncode == 0, run.stdout
    last = run.find("Copy progress")[-1]
    assert (last["tables_done"], last["rows"], last["percent"]) == (5, 0, 100.0)


# A built-in function only: user-defined code in a CHECK sends the source to the
# one-stream path (docs/parallel-copy.md, "When it is not used"). The source's INSERT runs before
# the test takes the lock; on the destination, the staging COPY waits for it.
GATED_COPY = """
CREATE DOMAIN public.gated AS int
    CHECK (VALUE IS NOT NULL AND pg_catalog.pg_advisory_xact_lock_shared(4243)::text = '');
CREATE TABLE public.gated_rows (v public.gated);
INSERT INTO public.gated_rows VALUES (1);
"""
# A safety net: a signalled job ends in well under a second.
PROMPT_EXIT_SECONDS = 10.0


def test_sigterm_while_a_copy_waits_in_the_destination_ends_the_job(dbs: Databases) -> None:
    dbs.source.execute("source_db", GATED_COPY)
    env = dbs.env()
    with dbs.destination.connect("destination_db") as holder:
        holder.execute("SELECT pg_advisory_lock(4243)")
        job = start_job(env)
        wait_until(lambda: build_is_waiting(dbs), "the COPY into the staging table to wait")
        children = descendants(job.pid)
        assert any("FROM STDIN" in cmdline for cmdline in children.values()), children
        job.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            job.wait(timeout=PROMPT_EXIT_SECONDS)
        ended_while_held = job.returncode is not None
    run = finish(job, env)  # the lock is released: the job ends either way

    assert ended_while_held, "the job waited for the COPY it had abandoned"
    assert run.returncode == 143
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived the job"
    assert_no_staging_left(dbs)


# --- CopyScanner: the one-stream path's per-table counts ------------------------

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
