"""Parallel copy: table streams at once into staging schemas, swapped in at the end.

PostgreSQL cannot share one transaction between sessions, so parallel
sessions cannot load the destination atomically by themselves. Instead:

1. plan     The source schema (pg_dump --schema-only, in the snapshot) is
            restored into a scratch database on the destination server, its
            schemas are renamed to staging names (elt_staging_N), and it is
            dumped again. pg_dump itself thereby writes every definition
            (defaults, views, constraints) for the staging names; nothing is
            rewritten by us. The scratch database is dropped.
2. stage    The staging schemas are created in the destination (pre-data, one
            transaction). The real schemas are not touched.
3. copy     ELT_JOBS workers: each table's rows go by `COPY ... TO STDOUT` in
            the exported snapshot straight into `COPY ... FROM STDIN`, largest
            table first; each table's indexes and constraints are built as soon
            as its rows are in, while other tables still copy. The rest of the
            post-data (triggers, rules, ACLs, ...), sequence values and
            materialized view refreshes follow.
4. swap     One transaction on the coordinator session drops the destination's
            copies of the source schemas and renames the staging schemas into
            their place (elt/sql/replace_schemas.sql), then commits
            synchronously: the workers' commits (synchronous_commit=off) are
            flushed with it, so success is never reported before the data is
            durable.

A failure anywhere before the swap commits drops the staging schemas; the
destination's real schemas were never touched. A run killed outright leaves
elt_staging_* schemas behind, which the next run removes first. The
coordinator works in the run's own destination session (pipeline.run), which
holds the run's lock until validation has finished; there it also takes the
load's lock (the key the streamed load takes in its transaction) from the plan
on.

Sources that this path does not handle (extensions, large objects, event
triggers, publications, casts, ...) raise NotEligible before the destination
is changed, and the job uses the streamed path instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from elt import limits
from elt.config import DatabaseSettings, Settings, ValidationLevel
from elt.connect import Connection, connect
from elt.errors import ConnectionFailed, LoadError, message_lines
from elt.extract import copy_encoding
from elt.failures import FiguresFailed, busy_error, classify, failed, swap_failed
from elt.processes import (
    APPLICATION_NAME,
    LIST_FILE,
    OutputTail,
    ToolFailed,
    child_env,
    connection_args,
    listing_text,
    run_in_memory,
    start_tool,
)
from elt.progress import CopyStats, Progress, mb_per_second
from elt.replace import STAGING_MARKER, STAGING_PREFIX, drop_marked
from elt.sql import LOCK_KEY, read_sql
from elt.validate import (
    RECORD_HASH_MIN_VERSION,
    TableFigures,
    digest_encoding,
    list_relations,
    measure,
    prepare_session,
    table_key,
)

FIRST_USER_OID = 16384  # FirstNormalObjectId
# The scratch database's public carries it until the restore: still there
# after, pg_dump wrote no comment for the source's public.
PUBLIC_COMMENT_MARKER = "elt: no comment written for public"

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
PSQL_FLAGS = ("-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1")
ROWS_MARKER = "elt_rows="
_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_SET_ENCODING = "SELECT pg_catalog.set_config('client_encoding', %s, false)"
_EMPTY_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false)"
# The load's lock that elt/sql/coordinator_lock.sql takes.
_UNLOCK_LOAD = "SELECT pg_catalog.pg_advisory_unlock(%(lock_key)s)"
_SLOW_METHODS = frozenset({"gin", "gist", "spgist", "brin"})


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


def staging_names(schemas: Sequence[str], run_id: int) -> dict[str, str]:
    """Staging schema per source schema, unique to this run (`run_id`: the
    coordinator's backend PID): should this run lose its lock, another run
    can never load into, or swap in, this run's tables."""
    return {schema: f"{STAGING_PREFIX}{run_id}_{i}" for i, schema in enumerate(schemas)}


def scratch_database_name(destination_oid: int) -> str:
    """Per destination database, so that the session lock also guards it."""
    return f"elt_scratch_{destination_oid}"


# --- argument lists (pure: tests assert them) ---------------------------------


def schema_dump_argv(
    db: DatabaseSettings, snapshot: str | None, schemas: Sequence[str]
) -> list[str]:
    """pg_dump of the definitions only, as a custom-format archive on stdout."""
    argv = [
        "pg_dump",
        *connection_args(db),
        "--no-password",
        "--format=custom",
        "--schema-only",
        "--no-subscriptions",
        "--no-security-labels",
    ]
    if snapshot is not None:
        argv.append(f"--snapshot={snapshot}")
    # Exact names, quoted: a pattern would also match other schemas.
    for schema in schemas:
        argv += ["--schema", quote_ident(schema)]
    return argv


def schema_restore_argv(
    db: DatabaseSettings,
    dbname: str,
    *,
    copy_ownership: bool,
    section: str | None = None,
    use_list: bool = False,
) -> list[str]:
    """pg_restore of an archive read from stdin, straight into `dbname`, in one transaction."""
    conn = connection_args(db)
    conn[conn.index("-d") + 1] = dbname
    argv = [
        "pg_restore",
        *conn,
        "--no-password",
        "--format=custom",
        "--single-transaction",
        "--exit-on-error",
        "--no-tablespaces",
    ]
    if section is not None:
        argv.append(f"--section={section}")
    if use_list:
        argv.append(f"--use-list={LIST_FILE}")
    if not copy_ownership:
        argv += ["--no-owner", "--no-privileges"]
    return argv


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def copy_out_argv(db: DatabaseSettings, snapshot_id: str, table: CopyTable) -> list[str]:
    """psql writing one table's rows, as the exported snapshot saw them, to stdout."""
    return [
        "psql",
        *PSQL_FLAGS,
        *connection_args(db),
        "-c",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "-c",
        "SET TRANSACTION SNAPSHOT '" + snapshot_id.replace("'", "''") + "'",
        "-c",
        f"COPY {quote_ident(table.schema)}.{quote_ident(table.name)}{table.column_list} "
        f"TO STDOUT (FORMAT {table.format})",
        "-c",
        "COMMIT",
    ]


def copy_in_argv(db: DatabaseSettings, staging_schema: str, table: CopyTable) -> list[str]:
    """psql loading stdin into the staging table, then printing the row count.

    TRUNCATE makes the table new in this transaction, which COPY FREEZE needs:
    the rows are then written already frozen and all-visible, so the index
    builds, foreign key checks and validation that scan them next skip the
    visibility checks and hint-bit writes of ordinary fresh rows.
    """
    target = f"{quote_ident(staging_schema)}.{quote_ident(table.name)}"
    return [
        "psql",
        *PSQL_FLAGS,
        *connection_args(db),
        "-c",
        "BEGIN",
        "-c",
        f"TRUNCATE {target}",
        "-c",
        f"COPY {target}{table.column_list} FROM STDIN (FORMAT {table.format}, FREEZE)",
        "-c",
        f"\\echo {ROWS_MARKER}:ROW_COUNT",
        "-c",
        "COMMIT",
    ]


def copy_session_options(server_version: int, *, destination: bool) -> str:
    """PGOPTIONS for the COPY sessions: the settings of elt/sql/copy_session.sql and
    elt/sql/no_timeouts.sql, which psql -c cannot run quietly.

    synchronous_commit=off on the destination: the swap's synchronous commit
    flushes the WAL of every commit before it (see the module docstring).
    """
    options = [
        "DateStyle=ISO",
        "IntervalStyle=postgres",
        "extra_float_digits=3",
        "row_security=off",
        "statement_timeout=0",
        "lock_timeout=0",
        "idle_in_transaction_session_timeout=0",
    ]
    if server_version >= 170000:
        options.append("transaction_timeout=0")
    if destination:
        options.append("synchronous_commit=off")
    return " ".join(f"-c {o}" for o in options)


def entry_sql_argv(*, copy_ownership: bool) -> list[str]:
    """pg_restore printing the SQL of the entries in the TOC list it is given."""
    argv = ["pg_restore", "--format=custom", f"--use-list={LIST_FILE}", "--file=-"]
    if not copy_ownership:
        argv += ["--no-owner", "--no-privileges"]
    return argv


# --- the plan -------------------------------------------------------------------


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
    # key would sit waiting for a 10-second GIN build on the same table,
    # holding up its worker (pg_restore -j avoids the same conflict).
    locks: dict[str, bool] = field(default_factory=dict)
    # A "build" task without an entry: the SQL it runs (a key split in two,
    # see build_tasks).
    statement: str | None = None


@dataclass
class Plan:
    archive: bytes  # the staging schema-only archive (definitions, no rows)
    entries: list[TocEntry]
    staged: dict[str, str]  # source schema -> staging schema
    tables: list[CopyTable]
    tasks: list[Task]
    remainder: list[TocEntry]  # post-data entries restored after all tasks
    sequences: list[tuple[str, str, int, bool]]  # staging schema, name, value, is_called
    matviews: list[tuple[str, str]]  # staging names, refresh order
    encoding: str  # text-format COPY data travels in it (extract.copy_encoding)
    archive_encoding: str  # the destination database's: the staging archive's SQL is in it
    source_version: int
    destination_version: int
    validation: ValidationLevel = ValidationLevel.OFF
    record_hash: bool = False
    # validation_tables.sql rows by (source schema, table), per side
    source_listed: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    destination_listed: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    # figures measured while copying, keyed like validate.collect's
    source_figures: dict[str, TableFigures] = field(default_factory=dict)
    destination_figures: dict[str, TableFigures] = field(default_factory=dict)
    # staging schema -> the comment it takes at the swap (the source schema's)
    comments: dict[str, str | None] = field(default_factory=dict)

    def staged_ident(self, table: CopyTable) -> sql.Identifier:
        return sql.Identifier(self.staged[table.schema], table.name)

    @property
    def digest_encoding(self) -> str | None:
        return digest_encoding(self.encoding, self.archive_encoding)


def _copy_key(table: CopyTable) -> str:
    return f"rows:{table.schema}.{table.name}"


def build_tasks(
    tables: list[CopyTable],
    post_data: list[TocEntry],
    catalog: dict[tuple[str, int], tuple[object, ...]],
    staged: dict[str, str],
) -> tuple[list[Task], list[TocEntry]]:
    """Split post-data into per-table tasks (indexes, keys) and the rest.

    An index or constraint on a copied table is built by a worker as soon as
    its table's rows are in; a foreign key also waits for the referenced
    table and the unique index it points at. Anything else (and anything on a
    partitioned parent or a materialized view) is left for the single
    post-data pass after all tasks, in pg_dump's dependency order.
    """
    by_staged = {(staged[t.schema], t.name): t for t in tables}
    tasks = [Task(_copy_key(t), "rows", t, rank=(-t.size, 0)) for t in tables]
    index_task: dict[int, str] = {}  # index OID -> key of the task that builds it
    pending: list[tuple[TocEntry, tuple[object, ...]]] = []
    remainder = []
    for entry in post_data:
        kind = {"INDEX": "i", "CONSTRAINT": "c", "FK CONSTRAINT": "c"}.get(entry.kind)
        row = catalog.get((kind, entry.oid)) if kind else None
        table = by_staged.get((str(row[2]), str(row[3]))) if row else None
        if row is None or table is None:
            remainder.append(entry)
            continue
        if entry.kind == "FK CONSTRAINT":
            pending.append((entry, row))
            continue
        key = f"entry:{entry.dump_id}"
        rows_key = _copy_key(table)
        if entry.kind == "CONSTRAINT" and row[11] is not None:
            # A primary key or unique constraint, in two steps: its unique
            # index under CREATE INDEX's SHARE lock, which lets it build at the
            # same time as the table's other indexes (the largest table's
            # 10-second GIN build, say), then ADD CONSTRAINT ... USING INDEX,
            # which is only a catalog change under the exclusive lock. What it
            # leaves is what ADD CONSTRAINT ... PRIMARY KEY (...) leaves: pg_dump
            # writes the same definition (tests/test_parallel.py checks this).
            index_key = f"index:{entry.dump_id}"
            tasks.append(
                Task(
                    index_key,
                    "build",
                    table,
                    statement=str(row[11]),
                    deps={rows_key},
                    # after the slow index methods: with fewer free workers
                    # than builds, the longest one starts first
                    rank=(-table.size, 3),
                    locks={table.label: False},
                )
            )
            tasks.append(
                Task(
                    key,  # what a foreign key waits for: the constraint
                    "build",
                    table,
                    statement=attach_key_sql(
                        staged_name(table, staged),
                        str(row[10]),
                        primary=row[5] == "p",
                        deferrable=bool(row[12]),
                        deferred=bool(row[13]),
                    ),
                    deps={rows_key, index_key},
                    rank=(-table.size, 1),
                    locks={table.label: True},
                )
            )
        else:
            # Keys first (short, but exclusive), then the slow index methods first.
            order = 1 if entry.kind == "CONSTRAINT" else 2 if row[9] in _SLOW_METHODS else 4
            exclusive = entry.kind == "CONSTRAINT"
            tasks.append(
                Task(
                    key,
                    "build",
                    table,
                    entry,
                    {rows_key},
                    rank=(-table.size, order),
                    locks={table.label: exclusive},
                )
            )
        index_task[int(str(row[6]))] = key
    for entry, row in pending:
        table = by_staged[(str(row[2]), str(row[3]))]
        referenced = by_staged.get((str(row[7]), str(row[8])))
        unique_key = index_task.get(int(str(row[6])))
        if referenced is None or unique_key is None:
            remainder.append(entry)  # e.g. it references a partitioned table
            continue
        deps = {_copy_key(table), _copy_key(referenced), unique_key}
        # SHARE ROW EXCLUSIVE on both tables: conflicts with index builds on either.
        locks = {table.label: True, referenced.label: True}
        key = f"entry:{entry.dump_id}"
        tasks.append(Task(key, "build", table, entry, deps, rank=(-table.size, 5), locks=locks))
    # In pg_dump's order: a comment on a constraint must follow the constraint.
    left = {e.dump_id for e in remainder}
    return tasks, [e for e in post_data if e.dump_id in left]


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
            deps={_copy_key(t)},
            rank=(1, -t.size),
            # Reading the staging table conflicts with ADD CONSTRAINT's lock.
            locks={t.label: False} if kind == "check_destination" else {},
        )
        for t in tables
        for kind in ("check_source", "check_destination")
    ]


# --- the scheduler ----------------------------------------------------------------


class Scheduler:
    """Hands out ready tasks, most important first, to worker threads.

    At most `max_copies` row copies run at once; the job passes half the
    workers. One COPY stream alone keeps two cores busy (source backend,
    destination backend and the two psql), so a second stream only slows the
    largest table's copy, and with it the start of its index builds, the
    longest chain of the run (docs/performance.md).
    """

    def __init__(self, tasks: list[Task], max_copies: int) -> None:
        self._waiting = list(tasks)
        self._done: set[str] = set()
        self._running = 0
        self._copies = 0
        self.max_copies = max_copies
        self._held: dict[str, list[bool]] = {}  # table -> modes of the running tasks' locks
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopped = False

    def next(self) -> Task | None:
        with self._cond:
            while True:
                if self.stopped or (not self._waiting and self._running == 0):
                    return None
                ready = [
                    t
                    for t in self._waiting
                    if t.deps <= self._done
                    and (t.kind != "rows" or self._copies < self.max_copies)
                    and self._lockable(t)
                ]
                if ready:
                    task = min(ready, key=lambda t: t.rank)
                    self._waiting.remove(task)
                    self._running += 1
                    self._copies += task.kind == "rows"
                    for table, exclusive in task.locks.items():
                        self._held.setdefault(table, []).append(exclusive)
                    return task
                if self._running == 0:  # nothing runs, and nothing can: a planning bug
                    self.error = RuntimeError(
                        f"unschedulable tasks: {[t.key for t in self._waiting]}"
                    )
                    self.stopped = True
                    self._cond.notify_all()
                    return None
                self._cond.wait()

    def _lockable(self, task: Task) -> bool:
        for table, exclusive in task.locks.items():
            held = self._held.get(table, [])
            if held and (exclusive or any(held)):
                return False
        return True

    def done(self, task: Task) -> None:
        with self._cond:
            self._running -= 1
            self._copies -= task.kind == "rows"
            for table, exclusive in task.locks.items():
                self._held[table].remove(exclusive)
            self._done.add(task.key)
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._running -= 1  # the failed task's slot; no new task starts anyway
            if self.error is None and not self.stopped:
                self.error = error
            self.stopped = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """True when every task is done or the run stopped."""
        with self._cond:
            finished = self.stopped or (not self._waiting and self._running == 0)
            if not finished:
                self._cond.wait(timeout)
            return self.stopped or (not self._waiting and self._running == 0)


class _Cancelled(Exception):
    """The main thread stopped the run; the reason is reported there."""


class Worker(threading.Thread):
    def __init__(
        self,
        number: int,
        *,
        settings: Settings,
        snapshot_id: str,
        plan: Plan,
        scheduler: Scheduler,
        progress: Progress,
    ) -> None:
        super().__init__(name=f"elt-copy-{number}", daemon=True)
        self.settings = settings
        self.snapshot_id = snapshot_id
        self.plan = plan
        self.scheduler = scheduler
        self.progress = progress
        self.source: Connection | None = None  # in the snapshot, for validation figures
        self.destination: Connection | None = None  # index and key builds
        self.checker: Connection | None = None  # destination validation figures
        self.cancelled = False
        self._conns: list[Connection] = []  # the three above, as they are opened
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            self._run()
        except _Cancelled:
            self.scheduler.stop()
        except BaseException as exc:  # handed to the main thread, which reports it
            self.scheduler.fail(exc)
        finally:
            for conn in self._conns:
                with contextlib.suppress(psycopg.Error):
                    conn.close()

    def kill(self) -> None:
        """SIGKILL this worker's psql processes (when cancel() was not enough)."""
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()

    def cancel(self) -> None:
        """Stop whatever runs now (called from the main thread)."""
        with self._lock:
            self.cancelled = True
            conns = list(self._conns)
            for proc in self._procs:
                if proc.poll() is None:
                    # SIGINT, not SIGTERM: psql then sends the server a cancel
                    # request, so a COPY waiting on a lock there ends too
                    # instead of holding locks the clean-up needs.
                    proc.send_signal(signal.SIGINT)
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=5)

    def _run(self) -> None:
        while (task := self.scheduler.next()) is not None:
            if task.kind == "rows":
                self._copy(task.table)
            elif task.kind == "build":
                self._build(task)
            else:
                self._check(task)
            self.scheduler.done(task)

    def _check(self, task: Task) -> None:
        table, plan = task.table, self.plan
        name = (table.schema, table.name)
        if self.cancelled:
            raise _Cancelled
        try:
            if task.kind == "check_source":
                conn = self._source()
                relation = sql.Identifier(table.schema, table.name)
                listed = plan.source_listed[name]
                figures = plan.source_figures
            else:
                conn = self._checker()
                relation = plan.staged_ident(table)
                listed = plan.destination_listed[name]
                figures = plan.destination_figures
            figures[table_key(*name)] = result = measure(
                conn,
                relation,
                listed,
                plan.validation,
                record_hash=plan.record_hash,
                convert_to=plan.digest_encoding,
            )
            self.progress.logger.debug(
                "Measured",
                extra={"task": task.key, "duration_seconds": round(result.seconds, 3)},
            )
            if task.kind == "check_destination":
                conn.commit()  # read-only; do not hold a snapshot between tasks
        except psycopg.Error as exc:
            raise FiguresFailed(task.kind.removeprefix("check_"), exc) from None

    def _open(self, db: DatabaseSettings) -> Connection:
        """A session of this worker: cancel() and the clean-up reach it from now on."""
        conn = connect(db, self.settings)
        with self._lock:
            self._conns.append(conn)
        conn.execute(read_sql("no_timeouts.sql"))
        conn.execute(read_sql("one_process_per_task.sql"))
        return conn

    def _checker(self) -> Connection:
        if self.checker is None:
            conn = self.checker = self._open(self.settings.destination)
            prepare_session(conn)
            conn.commit()
        return self.checker

    def _destination(self) -> Connection:
        """A destination session for index and key builds."""
        if self.destination is None:
            conn = self.destination = self._open(self.settings.destination)
            conn.execute(read_sql("copy_session.sql"))
            # The entries' SQL is in the staging archive's encoding: the
            # destination database's (the scratch database was created with it).
            conn.execute(_SET_ENCODING, (self.plan.archive_encoding,))
            # Durability is kept by the swap's synchronous commit, which flushes
            # the WAL of every commit before it (see the module docstring).
            conn.execute("SET synchronous_commit = off")
            conn.commit()
        return self.destination

    def _source(self) -> Connection:
        """A source session in the exported snapshot, for validation figures."""
        if self.source is None:
            conn = self.source = self._open(self.settings.source)
            conn.commit()
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute(
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot_id))
            )
            # The same settings as the destination's figures (_checker): the
            # text form of many types depends on them (TimeZone, say).
            prepare_session(conn)
        return self.source

    def _copy(self, table: CopyTable) -> None:
        """psql | (splice) | psql: rows never pass through Python objects.

        Relaying with the driver costs a Python round per row (COPY sends one
        message per row), CPU that the servers need (docs/performance.md). The
        kernel moves the bytes here (os.splice), and the count it returns is
        the progress figure.
        """
        started = time.monotonic()
        self.progress.table_started(table.label, table.size)
        try:
            out, into = self._start_pair(table)
            tails, loader_gone = self._relay(table, out, into)
        finally:
            with self._lock:
                for proc in self._procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                self._procs = []
        if self.cancelled:
            raise _Cancelled
        # Whoever failed first is to blame: a source cut short mid-row also
        # makes the loading side fail ("unexpected EOF"), and a loading side
        # that failed made us stop the source.
        if out.returncode != 0 and not loader_gone:
            raise ToolFailed("psql", out.returncode, tails[0].lines, side="source")
        if into.returncode != 0:
            raise ToolFailed("psql", into.returncode, tails[1].lines, side="destination")
        rows = next(
            (
                int(line[len(ROWS_MARKER) :])
                for line in tails[2].lines
                if line.startswith(ROWS_MARKER)
            ),
            None,
        )
        if rows is None:
            raise ToolFailed(
                "psql", 0, ["psql did not report the number of rows loaded"], side="destination"
            )
        self.progress.table_done(table.label, rows, time.monotonic() - started)

    def _start_pair(
        self, table: CopyTable
    ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
        settings, plan = self.settings, self.plan
        timeout = settings.connect_timeout_seconds
        env_out = child_env(settings.source, timeout)
        env_out["PGOPTIONS"] = copy_session_options(plan.source_version, destination=False)
        env_in = child_env(settings.destination, timeout)
        env_in["PGOPTIONS"] = copy_session_options(plan.destination_version, destination=True)
        for env in (env_out, env_in):
            env["PGCLIENTENCODING"] = plan.encoding  # text rows travel in the source's encoding
        pipe = subprocess.PIPE
        with self._lock:  # cancel() must see every process started
            if self.cancelled:
                raise _Cancelled
            argv = copy_out_argv(settings.source, self.snapshot_id, table)
            out = start_tool(argv, env_out, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe)
            self._procs.append(out)
            argv = copy_in_argv(settings.destination, plan.staged[table.schema], table)
            into = start_tool(argv, env_in, stdin=pipe, stdout=pipe, stderr=pipe)
            self._procs.append(into)
        return out, into

    def _relay(
        self, table: CopyTable, out: subprocess.Popen[bytes], into: subprocess.Popen[bytes]
    ) -> tuple[list[OutputTail], bool]:
        """Move the bytes until the source side ends.

        Returns the three output tails, and whether the loading side went away
        first (then the source psql is stopped at once: it would otherwise read
        the rest of the table from the server before noticing).
        """
        assert out.stdout is not None
        assert into.stdin is not None
        streams = (out.stderr, into.stderr, into.stdout)
        tails = [OutputTail(s) for s in streams if s is not None]
        for tail in tails:
            tail.start()
        loader_gone = False
        try:
            while moved := os.splice(out.stdout.fileno(), into.stdin.fileno(), 1 << 20):
                self.progress.add_bytes(table.label, moved)
        except BrokenPipeError:
            loader_gone = True  # psql loading it has exited: its exit code says why
            out.kill()
        finally:
            out.stdout.close()
            into.stdin.close()
        out.wait()
        into.wait()
        for tail in tails:
            tail.join()
        return tails, loader_gone

    def _build(self, task: Task) -> None:
        started = time.monotonic()
        destination = self._destination()
        if task.statement is not None:
            statement, what = task.statement, task.statement
        else:
            assert task.entry is not None
            encoding = destination.info.encoding
            statement = entry_sql(self.plan, [task.entry], self.settings, encoding)
            what = task.entry.line
        if self.cancelled:
            raise _Cancelled
        destination.execute(statement)
        destination.commit()
        self.progress.logger.debug(
            "Built",
            extra={"entry": what, "duration_seconds": round(time.monotonic() - started, 3)},
        )


def entry_sql(plan: Plan, entries: list[TocEntry], settings: Settings, encoding: str) -> str:
    """The SQL pg_restore writes for these entries, minus psql's \\restrict lines.

    Those two lines (PostgreSQL 17.6/15.14+) are psql meta-commands that keep a
    crafted dump from running other meta-commands; the driver runs no
    meta-commands at all, so they are dropped. Any other backslash line is
    unexpected and refused.
    """
    out = run_in_memory(
        entry_sql_argv(copy_ownership=settings.copy_ownership),
        child_env(None, settings.connect_timeout_seconds),
        plan.archive,
        "".join(e.line + "\n" for e in entries),
    ).decode(encoding)
    lines = []
    for line in out.splitlines():
        if line.startswith(("\\restrict ", "\\unrestrict ")):
            continue
        if line.startswith("\\"):
            raise LoadError(
                "pg_restore wrote a psql meta-command the parallel copy cannot run",
                hint="Set ELT_JOBS=1 to use the streamed path, and report this.",
                stderr_tail=[line[:200]],
            )
        lines.append(line)
    return "\n".join(lines)


# --- the run ----------------------------------------------------------------------


def source_tables(snapshot: Connection, schemas: Sequence[str]) -> list[CopyTable]:
    rows = snapshot.execute(read_sql("copy_tables.sql"), {"schemas": list(schemas)})
    return [
        CopyTable(
            str(schema),
            str(name),
            int(str(size)),
            tuple(str(c) for c in columns),  # type: ignore[attr-defined]
            bool(binary),
            tuple(str(c) for c in oid_columns),  # type: ignore[attr-defined]
        )
        for schema, name, size, columns, binary, oid_columns in rows
    ]


class Coordinator:
    """Owns staging and swaps, in the run's own destination session (autocommit;
    pipeline.run opens it, holds the run's lock in it, and closes it after
    validation). Here that session also takes the load's lock."""

    def __init__(self, conn: Connection, logger: logging.Logger) -> None:
        self.logger = logger
        self.conn = conn
        try:
            row = self.conn.execute(
                read_sql("coordinator_lock.sql"), {"lock_key": LOCK_KEY}
            ).fetchone()
        except psycopg.Error as exc:
            raise failed(
                "destination", "Preparing the parallel copy failed; nothing was changed", exc
            ) from None
        assert row is not None
        if not row[0]:
            raise busy_error()
        self.scratch = scratch_database_name(int(str(row[1])))
        self.encoding, self.collate, self.ctype = str(row[2]), str(row[3]), str(row[4])
        self.staging: list[str] = []

    def release(self) -> None:
        """Give the load's lock back, for a run that goes on with one stream
        (whose load takes it in its own session), or ends."""
        with contextlib.suppress(psycopg.Error):
            self.conn.execute(_UNLOCK_LOAD, {"lock_key": LOCK_KEY})

    def drop_scratch(self) -> None:
        self.conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.scratch))
        )

    def create_scratch(self) -> None:
        try:
            self.conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
                ).format(
                    sql.Identifier(self.scratch),
                    sql.Literal(self.encoding),
                    sql.Literal(self.collate),
                    sql.Literal(self.ctype),
                )
            )
        except psycopg.errors.InsufficientPrivilege:
            raise NotEligible(
                "DESTINATION_POSTGRES_USER may not create databases (CREATEDB), which the "
                "parallel copy needs for a moment to plan its staging schemas"
            ) from None


def check_eligible(
    entries: list[TocEntry],
    extras: list[tuple[object, ...]],
    tables: list[CopyTable],
    schemas: list[str],
) -> None:
    """Raise NotEligible, naming why, for a source the staging design cannot copy."""
    unsupported = sorted({e.kind for e in entries if e.kind not in STAGEABLE})
    if unsupported:
        raise NotEligible(f"the source has objects of type {', '.join(unsupported)}")
    if any(row[0] == "L" for row in extras):
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
    calls = snapshot.execute(read_sql("expression_functions.sql"), {"schemas": schemas}).fetchall()
    if calls:
        named = "; ".join(f"{used_by} calls {uses}" for used_by, uses in calls[:5])
        raise NotEligible(
            "user-defined code runs while tables load or are indexed, and could read other "
            f"copied tables, which are only staged then ({len(calls)}): {named}"
        )


def _rename_to_staging(
    conn: Connection, staged: dict[str, str], unwritten: str | None
) -> dict[str, str | None]:
    """Rename the scratch copy's schemas to their staging names; return their comments.

    `unwritten`: public's comment before the restore. If public still has it,
    pg_dump wrote none for the source's (initdb's stock comment), and the swap
    keeps the destination's, as the one-stream load does: None for public then,
    and '' (which removes a comment) where pg_dump wrote that it has none."""
    with conn.transaction():
        for schema, staging in staged.items():
            conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(schema), sql.Identifier(staging)
                )
            )
        # Each staging schema is created with the job's marker, the proof
        # that a leftover is the job's own; the swap puts these back.
        comments = {
            str(name): None if comment is None else str(comment)
            for name, comment in conn.execute(
                read_sql("schema_comments.sql"), {"schemas": list(staged.values())}
            )
        }
        for staging in staged.values():
            conn.execute(
                sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                    sql.Identifier(staging), sql.Literal(STAGING_MARKER)
                )
            )
    if "public" in staged:
        written = comments.get(staged["public"])
        comments[staged["public"]] = (
            None if written == unwritten else "" if written is None else written
        )
    return comments


def plan(
    settings: Settings,
    *,
    coordinator: Coordinator,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
) -> Plan:
    env_source = child_env(settings.source, settings.connect_timeout_seconds)
    env_destination = child_env(settings.destination, settings.connect_timeout_seconds)
    source_archive = run_in_memory(
        schema_dump_argv(settings.source, snapshot_id, []), env_source, b""
    )
    listing = listing_text(run_in_memory(["pg_restore", "--list"], env_source, source_archive))
    extras = snapshot.execute(read_sql("source_extras.sql"), {"schemas": schemas}).fetchall()
    check_eligible(parse_toc(listing), extras, tables, schemas)
    check_expression_code(snapshot, schemas)
    staged = staging_names(schemas, coordinator.conn.info.backend_pid)

    # A killed run's scratch database (replace.remove_leftovers has removed its
    # staging schemas); only now: a source that is not eligible changes nothing.
    coordinator.drop_scratch()
    coordinator.create_scratch()
    try:
        scratch = DatabaseSettings(
            "destination",
            settings.destination.host,
            settings.destination.port,
            coordinator.scratch,
            settings.destination.user,
            settings.destination.password,
        )
        try:
            conn = connect(scratch, settings, autocommit=True)
        except ConnectionFailed as exc:  # pg_hba.conf may allow destination_db only
            raise NotEligible(
                f"DESTINATION_POSTGRES_USER cannot log in to the scratch database "
                f"{coordinator.scratch} ({' '.join(exc.stderr_tail)[:200]})"
            ) from None
        with conn:
            # A marker on public tells whether pg_dump writes a comment for the
            # source's (only its owner may comment: before PostgreSQL 15, a superuser).
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL("COMMENT ON SCHEMA public IS {}").format(
                        sql.Literal(PUBLIC_COMMENT_MARKER)
                    )
                )
            rows = conn.execute(read_sql("schema_comments.sql"), {"schemas": ["public"]})
            unwritten = next((None if c is None else str(c) for _, c in rows), None)
            run_in_memory(
                schema_restore_argv(
                    settings.destination,
                    coordinator.scratch,
                    copy_ownership=settings.copy_ownership,
                ),
                env_destination,
                source_archive,
            )
            comments = _rename_to_staging(conn, staged, unwritten)
            archive = run_in_memory(
                schema_dump_argv(scratch, None, list(staged.values())), env_destination, b""
            )
            entries = parse_toc(
                listing_text(run_in_memory(["pg_restore", "--list"], env_destination, archive))
            )
            post_ids = {
                e.dump_id
                for e in parse_toc(
                    listing_text(
                        run_in_memory(
                            ["pg_restore", "--list", "--section=post-data"],
                            env_destination,
                            archive,
                        )
                    )
                )
            }
            post_data = [e for e in entries if e.dump_id in post_ids]
            conn.execute(_EMPTY_SEARCH_PATH)  # see staging_catalog.sql: index_def
            catalog_rows = conn.execute(
                read_sql("staging_catalog.sql"),
                {
                    "constraints": [e.oid for e in post_data if e.kind.endswith("CONSTRAINT")],
                    "indexes": [e.oid for e in post_data if e.kind == "INDEX"],
                    "matviews": [e.oid for e in entries if e.kind == "MATERIALIZED VIEW"],
                },
            ).fetchall()
    finally:
        coordinator.drop_scratch()

    catalog = {(str(r[0]), int(str(r[1]))): tuple(r) for r in catalog_rows}
    tasks, remainder = build_tasks(tables, post_data, catalog, staged)
    populated = {(str(s), str(n)) for kind, s, n in extras if kind == "m"}
    unstaged = {v: k for k, v in staged.items()}
    matviews = []
    for e in entries:
        row = catalog.get(("m", e.oid)) if e.kind == "MATERIALIZED VIEW" else None
        if row is not None and (unstaged[str(row[2])], str(row[3])) in populated:
            matviews.append((str(row[2]), str(row[3])))
    sequences = []
    for kind, seq_schema, seq_name in extras:
        if kind == "S":
            schema, name = str(seq_schema), str(seq_name)
            value = snapshot.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
            ).fetchone()
            assert value is not None
            sequences.append((staged[str(schema)], str(name), int(str(value[0])), bool(value[1])))
    encoding = copy_encoding(
        snapshot.info.parameter_status("server_encoding") or "", coordinator.encoding
    )
    versions = (snapshot.info.server_version, coordinator.conn.info.server_version)
    if settings.validation is not ValidationLevel.OFF:
        tasks += check_tasks(tables)
    return Plan(
        archive,
        entries,
        staged,
        tables,
        tasks,
        remainder,
        sequences,
        matviews,
        encoding,
        coordinator.encoding,
        *versions,
        validation=settings.validation,
        record_hash=min(versions) >= RECORD_HASH_MIN_VERSION,
        source_listed={(str(r[0]), str(r[1])): r for r in list_relations(snapshot, schemas)},
        comments=comments,
    )


def _finish_staging(settings: Settings, coordinator: Coordinator, plan: Plan) -> None:
    """Post-data that is not per table, sequence values, materialized views."""
    if plan.remainder:
        run_in_memory(
            schema_restore_argv(
                settings.destination,
                settings.destination.dbname,
                copy_ownership=settings.copy_ownership,
                use_list=True,
            ),
            child_env(settings.destination, settings.connect_timeout_seconds),
            plan.archive,
            "".join(e.line + "\n" for e in plan.remainder),
        )
    with coordinator.conn.transaction():
        for schema, name, value, is_called in plan.sequences:
            coordinator.conn.execute(
                "SELECT pg_catalog.setval(%s::regclass, %s, %s)",
                (sql.Identifier(schema, name).as_string(coordinator.conn), value, is_called),
            )
        for schema, name in plan.matviews:
            coordinator.conn.execute(
                sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(schema, name))
            )


def swap(coordinator: Coordinator, plan: Plan, schemas: list[str]) -> bool:
    """The one transaction that makes the new copy visible (elt/sql/replace_schemas.sql).

    Returns whether the destination has enabled event triggers: DDL runs their
    code, which may change rows after they were measured.
    """
    conn = coordinator.conn
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("SET LOCAL client_min_messages = error")
        staged = [plan.staged[s] for s in schemas]
        conn.execute(
            "SELECT pg_catalog.set_config('elt.replaced_schemas', %s::text[]::text, true), "
            "pg_catalog.set_config('elt.staged_schemas', %s::text[]::text, true), "
            "pg_catalog.set_config('elt.staged_comments', %s::text[]::text, true), "
            "pg_catalog.set_config('elt.lock_key', %s::text, true)",
            (schemas, staged, [plan.comments.get(s) for s in staged], str(LOCK_KEY)),
        )
        # The swap re-creates no database-wide object (a source with any is
        # streamed): every dependent outside the copied schemas is a blocker.
        conn.execute(read_sql("dependents.sql"))
        conn.execute(read_sql("replace_schemas.sql"))
        saved = conn.execute(read_sql("saved_views.sql")).fetchone()
        if saved is not None and saved[0]:
            # Views in other schemas that use the copied ones, against the new copy.
            conn.execute(read_sql("recreate_views.sql"))
            conn.execute(read_sql("recreate_views_in_swap.sql"))
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtenabled <> 'D')"
        ).fetchone()
    return bool(row and row[0])


def connections_needed(workers: int, *, validation: bool) -> tuple[int, int]:
    """(destination, source) connections the copy opens at once besides the run's
    own sessions: per worker, an index build session and, with validation, a
    measuring session on each side; and a psql pair per table copied at once
    (half the workers, see Scheduler). The plan needs fewer: two, and one."""
    copies = max(1, workers // 2)
    return workers * (1 + validation) + copies, workers * validation + copies


def size_workers(jobs: int, destination_free: int, source_free: int, *, validation: bool) -> int:
    """The most workers, up to `jobs`, whose connections both servers accept; 0 if
    not even one worker's."""
    for workers in range(jobs, 0, -1):
        destination, source = connections_needed(workers, validation=validation)
        if destination <= destination_free and source <= source_free:
            return workers
    return 0


def _sized(
    settings: Settings, snapshot: Connection, destination: Connection, logger: logging.Logger
) -> Settings:
    """`settings` with ELT_JOBS lowered to the connections the roles may open now, in
    one log line; NotEligible when not even one worker fits."""
    try:
        destination_room = limits.connection_room(destination)
    except psycopg.Error as exc:
        raise failed(
            "destination",
            "Reading the destination's connection limits failed; nothing was changed",
            exc,
        ) from None
    try:
        source_room = limits.connection_room(snapshot)
    except psycopg.Error as exc:
        raise failed(
            "source", "Reading the source's connection limits failed; nothing was changed", exc
        ) from None
    rooms = destination_room, source_room
    validation = settings.validation is not ValidationLevel.OFF
    workers = size_workers(settings.jobs, rooms[0].free, rooms[1].free, validation=validation)
    needs = connections_needed(max(workers, 1), validation=validation)
    figures = {
        "destination_connections_free": rooms[0].free,
        "source_connections_free": rooms[1].free,
        "destination_connections_needed": needs[0],
        "source_connections_needed": needs[1],
    }
    if workers == 0:
        raise NotEligible(
            f"one worker needs {needs[0]} more connections to the destination and "
            f"{needs[1]} to the source, and DESTINATION_POSTGRES_USER may open "
            f"{rooms[0].free} there, SOURCE_POSTGRES_USER {rooms[1].free} (max_connections, "
            "reserved connections, CONNECTION LIMIT of the role or database, sessions open)"
        )
    logger.info(
        "Parallel copy workers sized",
        extra={
            "jobs": settings.jobs,
            "workers": workers,
            **figures,
            "reason": "ELT_JOBS"
            if workers == settings.jobs
            else "the connections the roles may open (max_connections, reserved "
            "connections, CONNECTION LIMIT of the role or database, sessions open)",
        },
    )
    return dataclasses.replace(settings, jobs=workers)


def copy(
    settings: Settings,
    *,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
    logger: logging.Logger,
    session: Connection,
) -> CopyStats:
    """Copy in parallel and swap in; raise NotEligible (nothing changed) or an EltError.

    `session` is the run's destination session (autocommit), which holds the
    run's lock. After a successful swap the load's lock stays held in it too,
    until the caller closes it after validation.
    """
    started = time.monotonic()
    coordinator = Coordinator(session, logger)
    swapped = False
    try:
        settings = _sized(settings, snapshot, coordinator.conn, logger)
        try:
            the_plan = plan(
                settings,
                coordinator=coordinator,
                snapshot=snapshot,
                snapshot_id=snapshot_id,
                schemas=schemas,
                tables=tables,
            )
        except (ToolFailed, psycopg.Error) as exc:
            raise classify(exc, step="planning the parallel copy") from None
        logger.info(
            "Parallel copy planned",
            extra={
                "jobs": settings.jobs,
                "tables": len(tables),
                "tasks": len(the_plan.tasks),
                "staging_schemas": sorted(the_plan.staged.values()),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        coordinator.staging = list(the_plan.staged.values())
        try:
            run_in_memory(
                schema_restore_argv(
                    settings.destination,
                    settings.destination.dbname,
                    copy_ownership=settings.copy_ownership,
                    section="pre-data",
                ),
                child_env(settings.destination, settings.connect_timeout_seconds),
                the_plan.archive,
            )
            unstaged = {v: k for k, v in the_plan.staged.items()}
            the_plan.destination_listed = {
                (unstaged[str(r[0])], str(r[1])): r
                for r in list_relations(coordinator.conn, list(unstaged))
            }
        except (ToolFailed, psycopg.Error) as exc:
            raise classify(exc, step="creating the staging schemas") from None
        stats = _copy_rows(settings, snapshot, snapshot_id, the_plan, logger)
        try:
            _finish_staging(settings, coordinator, the_plan)
        except (ToolFailed, psycopg.Error) as exc:
            raise classify(exc, step="finishing the staging schemas") from None
        try:
            event_triggers = swap(coordinator, the_plan, schemas)
        except psycopg.Error as exc:
            raise swap_failed(exc) from None
        swapped = True
        logger.info(
            "Data load completed successfully",
            extra={
                "duration_seconds": round(time.monotonic() - started, 3),
                "tables": stats.tables,
                "rows": stats.rows,
                "bytes": stats.bytes,
                "mb_per_second": mb_per_second(stats.bytes, stats.seconds),
            },
        )
        if event_triggers:
            # They ran user code inside the swap (and during the builds), after
            # the destination figures were taken: measure the destination again.
            the_plan.destination_figures.clear()
        return CopyStats(
            stats.tables,
            stats.rows,
            stats.bytes,
            time.monotonic() - started,
            the_plan.source_figures,
            the_plan.destination_figures,
        )
    finally:
        if not swapped:
            _clean_up(coordinator, logger)
            coordinator.release()


def _clean_up(coordinator: Coordinator, logger: logging.Logger) -> None:
    try:
        if coordinator.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            coordinator.conn.rollback()
        # Whatever of this run still runs on the destination (a COPY whose psql
        # was killed, say) would hold locks on the staging tables.
        if coordinator.staging:
            coordinator.conn.execute(
                read_sql("end_own_sessions.sql"),
                {"name": APPLICATION_NAME, "schemas": coordinator.staging},
            )
        # Only what carries the job's marker: a schema of that name that this
        # run could not create (a user's own, say) is not the run's to drop.
        drop_marked(coordinator.conn, coordinator.staging)
        coordinator.drop_scratch()
    except (psycopg.Error, LoadError) as exc:  # LoadError: drop_marked found the lock taken
        logger.warning(
            "Could not remove the staging schemas; the next run removes them",
            extra={"schemas": coordinator.staging, "stderr_tail": message_lines(exc)},
        )


def _copy_rows(
    settings: Settings, snapshot: Connection, snapshot_id: str, plan: Plan, logger: logging.Logger
) -> CopyStats:
    progress = Progress(
        logger, len(plan.tables), sum(t.size for t in plan.tables), settings.progress_seconds
    )
    scheduler = Scheduler(plan.tasks, max_copies=max(1, settings.jobs // 2))
    workers = [
        Worker(
            i + 1,
            settings=settings,
            snapshot_id=snapshot_id,
            plan=plan,
            scheduler=scheduler,
            progress=progress,
        )
        for i in range(max(1, min(settings.jobs, len(plan.tasks))))
    ]
    logger.info(
        "Starting data extraction from source database",
        extra={"schemas": list(plan.staged), "snapshot": snapshot_id, "jobs": len(workers)},
    )
    progress.start()
    for worker in workers:
        worker.start()
    try:
        while not scheduler.wait(0.5):
            pass
    except BaseException:
        scheduler.stop()
        raise
    finally:
        _stop_workers(workers, stopping=scheduler.stopped)
        progress.stop()
    if scheduler.error is not None:
        raise classify(scheduler.error, step="copying the tables")
    progress.finish()
    logger.info(
        "Data extraction completed successfully",
        extra={"duration_seconds": round(time.monotonic() - progress.started, 3)},
    )
    return CopyStats(
        progress.tables_done, progress.rows, progress.bytes, time.monotonic() - progress.started
    )


def _stop_workers(workers: list[Worker], *, stopping: bool) -> None:
    """Join the workers; when stopping, cancel again until each has ended.

    A cancel can land between two statements and be missed, and psql ignores
    SIGINT between its commands: so the cancel is repeated, and after a few
    rounds the psql processes are killed (the clean-up then ends their
    sessions on the destination).
    """
    rounds = 0
    while alive := [w for w in workers if w.is_alive()]:
        for worker in alive:
            if stopping:
                worker.cancel()
                if rounds >= 5:
                    worker.kill()
            worker.join(timeout=1.0)
        rounds += 1
