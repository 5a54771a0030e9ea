"""The run itself: wait, snapshot, copy, validate. Callable without the CLI.

    run: login -> read the source (snapshot) -> take the run's lock
         -> copy (parallel.copy, or stream_copy.StreamCopy) -> validate (figures.py)

Every failure is raised as an EltError subclass (errors.py), classified by
failures.py the same way on both paths; leaving any block early (error or
signal) stops the child processes and rolls back both the load and the
source snapshot transaction.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from elt import limits, replace, stream_copy
from elt.config import Settings, ValidationLevel
from elt.connect import Connection, server_encoding, wait_and_login
from elt.errors import ExtractError, LoadError
from elt.extract import SourceSnapshot, check_pg_dump_version, copy_encoding
from elt.failures import busy_error, encoding_error, failed, source_failed
from elt.figures import TAIL_MAX_TABLES, Measuring, SourceFigures, measure
from elt.progress import CopyStats
from elt.sql import LOCK_KEY, read_sql
from elt.startup import HeadStart
from elt.validate import (
    compare_sequences,
    compare_tables,
    list_tables,
    prepare_session,
    report,
    sequence_values,
    table_key,
)


@dataclass(frozen=True)
class RunSummary:
    schemas: list[str]
    tables: int | None
    rows: int | None
    seconds: float
    copy_path: str  # "parallel" or "streamed"
    bytes: int | None = None  # COPY data streamed (the parallel path counts it)


@dataclass(frozen=True)
class SourceView:
    """What the run read in the source's snapshot before copying anything."""

    schemas: list[str]
    rowless: frozenset[str]  # unlogged tables of a hot standby: no rows to copy
    recreated: list[str]  # database-wide objects that depend on the schemas
    relations: limits.Relations  # for the destination's lock check
    sequences_before: dict[str, int | None]  # ELT_VALIDATION=full only


def run(settings: Settings, logger: logging.Logger) -> RunSummary:
    started = time.monotonic()
    level = settings.validation
    # Holds the run's locks on the destination until validation is done.
    with contextlib.ExitStack() as hold:
        head = hold.enter_context(HeadStart.start(settings, logger))
        source_session, session = wait_and_login(settings, logger, head)
        hold.callback(session.close)
        snapshot = hold.enter_context(SourceSnapshot.open(settings, source_session))
        check_pg_dump_version(snapshot.conn.info.server_version, head.pg_dump_version())
        source = _read_source(snapshot, level, logger)
        table_sizes = _source_sizes(snapshot, source.schemas)
        ahead = None
        if _streams(settings, snapshot, len(table_sizes), logger):
            # The one-stream copy: its dump reads the source while the destination is checked.
            ahead = hold.enter_context(
                _one_stream(
                    settings, snapshot, source, session, table_sizes=table_sizes, logger=logger
                )
            )
        _hold_run_lock(session)
        # Before any copying, on both paths (each load checks again at its swap).
        replace.remove_leftovers(session, logger)
        replace.check_dependents(session, source.schemas, source.recreated, logger)
        how = Measuring.of(
            source.schemas, level, source.rowless, source=snapshot.conn, destination=session
        )
        # Stops the source's figures, if still being taken, before the snapshot closes.
        with SourceFigures(snapshot.conn, how) as source_side:
            path, stats = _copy(
                settings,
                snapshot,
                source,
                session,
                logger,
                source_side=source_side,
                table_sizes=table_sizes,
                ahead=ahead,
            )
            if level is ValidationLevel.OFF:
                logger.info("Validation skipped", extra={"validation_level": level.value})
                seconds = time.monotonic() - started
                return RunSummary(
                    source.schemas, stats.tables, stats.rows, seconds, path, stats.bytes
                )
            figures = measure(settings, how, source_side, stats, session)
    checks = compare_tables(figures.source, figures.destination)
    bad_sequences = (
        compare_sequences(source.sequences_before, figures.after, figures.destination.sequences)
        if level is ValidationLevel.FULL
        else []
    )
    report(logger, checks, bad_sequences, level)
    rows = sum(c.source_rows or 0 for c in checks)
    seconds = time.monotonic() - started
    return RunSummary(source.schemas, len(checks), rows, seconds, path, stats.bytes)


def _read_source(
    snapshot: SourceSnapshot, level: ValidationLevel, logger: logging.Logger
) -> SourceView:
    """The schemas and what the copy and validation need to know of them, in the snapshot."""
    try:
        schemas = snapshot.schemas()
        rowless = _rowless_tables(snapshot, schemas, logger)
        recreated = replace.database_wide_dependents(snapshot.conn, schemas)
        # Before the job locks the tables itself, and before the destination.
        _, relations = limits.source_locks(snapshot.conn, schemas, logger)
        if level is not ValidationLevel.OFF:
            prepare_session(snapshot.conn)
            snapshot.lock_tables(list_tables(snapshot.conn, schemas))
        # Sequences are outside the snapshot: read them before pg_dump does.
        before = sequence_values(snapshot.conn, schemas) if level is ValidationLevel.FULL else {}
    except psycopg.Error as exc:
        raise source_failed("the snapshot's catalogs", exc) from None
    return SourceView(schemas, rowless, recreated, relations, before)


def _hold_run_lock(conn: Connection) -> None:
    """Take the run's lock (elt/sql/run_lock.sql) in the run's destination session
    (autocommit), which run() closes after validation; refuse if another run
    holds it. The parallel copy coordinates in this session."""
    try:
        conn.execute(read_sql("no_timeouts.sql"))
        cursor = conn.cursor(row_factory=dict_row)
        row = cursor.execute(read_sql("run_lock.sql"), {"lock_key": LOCK_KEY}).fetchone()
    except psycopg.Error as exc:
        raise failed(
            "destination",
            "Taking the run's lock on the destination failed; nothing was changed",
            exc,
            hint="Check that the destination is up, then run again.",
        ) from None
    if row is None or not row["pg_try_advisory_lock"]:
        raise busy_error()


def _check_destination_locks(
    session: Connection, source: SourceView, logger: logging.Logger, *, parallel: bool
) -> None:
    try:
        limits.destination_locks(
            session, source.schemas, source.relations, parallel=parallel, logger=logger
        )
    except psycopg.Error as exc:
        raise failed(
            "destination",
            "Reading the destination's catalogs failed; nothing was changed",
            exc,
            hint="Check that the destination is up and that "
            "DESTINATION_POSTGRES_USER may read its catalogs.",
        ) from None


def _copy(
    settings: Settings,
    snapshot: SourceSnapshot,
    source: SourceView,
    session: Connection,
    logger: logging.Logger,
    *,
    source_side: SourceFigures,
    table_sizes: dict[str, int],
    ahead: stream_copy.StreamCopy | None,
) -> tuple[str, CopyStats]:
    """The copy path taken ("parallel" or "streamed") and what it copied.

    `ahead`: the one-stream copy, its dump started (_streams said so); None: the
    parallel copy is tried first. The one-stream copy starts `source_side` as
    soon as pg_dump has exited."""
    check_locks = functools.partial(_check_destination_locks, session, source, logger)
    encodings = (server_encoding(snapshot.conn), server_encoding(session))
    after_dump = source_side.start if _during_tail(settings, table_sizes) else None
    try:
        if ahead is None:
            copied = _copy_in_parallel(
                settings, snapshot, source, logger, session, check_locks=check_locks
            )
            if copied is not None:
                return "parallel", copied
        check_locks(parallel=False)
        if ahead is not None:
            return "streamed", ahead.load(after_dump)
        late = _one_stream(
            settings, snapshot, source, session, table_sizes=table_sizes, logger=logger
        )
        with late:
            return "streamed", late.load(after_dump)
    except (ExtractError, LoadError) as exc:
        raise encoding_error(exc, *encodings) or exc from None


def _streams(
    settings: Settings, snapshot: SourceSnapshot, tables: int, logger: logging.Logger
) -> bool:
    """Whether the run copies in one stream without trying the parallel copy:
    ELT_JOBS=1, or the parallel copy would not pay off (_parallel_pays_off)."""
    return settings.jobs < 2 or not _parallel_pays_off(settings, snapshot, tables, logger)


def _one_stream(
    settings: Settings,
    snapshot: SourceSnapshot,
    source: SourceView,
    session: Connection,
    *,
    table_sizes: dict[str, int],
    logger: logging.Logger,
) -> stream_copy.StreamCopy:
    """The one-stream copy, its dump started: nothing reaches the destination
    before its load() (stream_copy.StreamCopy)."""
    source_encoding = server_encoding(snapshot.conn)
    dump_encoding = copy_encoding(source_encoding, server_encoding(session))
    return stream_copy.StreamCopy(
        settings,
        source.schemas,
        snapshot.snapshot_id,
        logger,
        table_sizes=table_sizes,
        encoding=None if dump_encoding == source_encoding else dump_encoding,
        recreated=source.recreated,
    )


def _during_tail(settings: Settings, table_sizes: dict[str, int]) -> bool:
    """Whether the source's figures start at pg_dump's exit, beside the restore's tail."""
    on = settings.validation is not ValidationLevel.OFF
    return on and len(table_sizes) < TAIL_MAX_TABLES


def _copy_in_parallel(
    settings: Settings,
    snapshot: SourceSnapshot,
    source: SourceView,
    logger: logging.Logger,
    session: Connection,
    *,
    check_locks: Callable[..., None],
) -> CopyStats | None:
    """The parallel copy, when the source allows it (_streams found that it
    pays off); None: stream instead.

    `check_locks(parallel=True)` refuses a destination whose lock table is too
    small for it, before anything is staged."""
    # Imported only here: a run that streams (every small one) never loads it.
    from elt import parallel  # noqa: PLC0415

    schemas = source.schemas
    try:
        if settings.validation is ValidationLevel.OFF:
            # What pg_dump does first: ACCESS SHARE on every table, so that a
            # TRUNCATE (not MVCC-safe) cannot empty a table under the snapshot.
            # With validation on, the snapshot holds these locks already.
            snapshot.lock_tables(list_tables(snapshot.conn, schemas))
        tables = parallel.source_tables(snapshot.conn, schemas)
    except psycopg.Error as exc:
        raise source_failed("locking and listing its tables", exc) from None
    check_locks(parallel=True)
    try:
        return parallel.copy(
            settings,
            snapshot=snapshot.conn,
            snapshot_id=snapshot.snapshot_id,
            schemas=schemas,
            tables=tables,
            logger=logger,
            session=session,
        )
    except parallel.NotEligible as why:
        logger.info("Parallel copy not used", extra={"reason": str(why)})
        return None


def _parallel_pays_off(
    settings: Settings, snapshot: SourceSnapshot, tables: int, logger: logging.Logger
) -> bool:
    """Whether the source is large enough (ELT_PARALLEL_MIN_MB), in tables that are
    large enough on average (ELT_PARALLEL_MIN_TABLE_MB), for the parallel copy."""
    try:
        cursor = snapshot.conn.cursor(row_factory=dict_row)
        row = cursor.execute(read_sql("database_size.sql")).fetchone()
    except psycopg.Error as exc:
        raise source_failed("its size", exc) from None
    assert row is not None
    size_mb = int(str(row["bytes"])) / 1_000_000
    per_table_mb = size_mb / max(tables, 1)
    if size_mb < settings.parallel_min_mb:
        reason = (
            f"the source database ({size_mb:.1f} MB) is smaller than "
            f"ELT_PARALLEL_MIN_MB ({settings.parallel_min_mb:g}); one stream is faster"
        )
    elif per_table_mb < settings.parallel_min_table_mb:
        reason = (
            f"the source's {tables} tables hold {per_table_mb:.2f} MB each on average, less "
            f"than ELT_PARALLEL_MIN_TABLE_MB ({settings.parallel_min_table_mb:g}); "
            "one stream is faster for many small tables"
        )
    else:
        return True
    logger.info("Parallel copy not used", extra={"reason": reason})
    return False


def _rowless_tables(
    snapshot: SourceSnapshot, schemas: list[str], logger: logging.Logger
) -> frozenset[str]:
    """Unlogged tables of a hot-standby source (standby_unlogged_tables.sql): both
    paths copy their definitions without data, as pg_dump does there, and say so."""
    cursor = snapshot.conn.cursor(row_factory=dict_row)
    rows = cursor.execute(read_sql("standby_unlogged_tables.sql"), {"schemas": schemas}).fetchall()
    names = {
        kind: [f"{r['nspname']}.{r['relname']}" for r in rows if r["relkind"] == kind]
        for kind in ("r", "S")
    }
    if rows:
        logger.warning(
            "Unlogged tables copied without their rows",
            extra={
                "tables": names["r"],
                **({"sequences": names["S"]} if names["S"] else {}),
                "reason": "the source is a hot standby, which holds no data of unlogged "
                "tables and sequences (only their definitions); copy from the primary "
                "to include it",
            },
        )
    return frozenset(
        table_key(str(r["nspname"]), str(r["relname"])) for r in rows if r["relkind"] == "r"
    )


def _source_sizes(snapshot: SourceSnapshot, schemas: list[str]) -> dict[str, int]:
    """Each table's size on the source's disk (partitions included), for the
    progress estimate and the path's choice (ELT_PARALLEL_MIN_TABLE_MB)."""
    try:
        cursor = snapshot.conn.cursor(row_factory=dict_row)
        rows = cursor.execute(read_sql("source_table_sizes.sql"), {"schemas": schemas}).fetchall()
    except psycopg.Error as exc:
        raise source_failed("its table sizes", exc) from None
    return {str(r["table_name"]): max(int(str(r["bytes"])), 0) for r in rows}
