"""The job itself: wait, snapshot, copy, validate. Callable without the CLI.

    source --pg_dump -Fc--> pg_restore --SQL--> psql --one transaction--> destination
       \\__ snapshot transaction: pg_dump --snapshot, source-side validation figures

Every failure is raised as an EltError subclass (see errors.py); leaving any
block early (error or signal) stops the child processes and rolls back both
the load and the source snapshot transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from elt import limits, parallel, replace
from elt.config import Settings, ValidationLevel, same_database_error
from elt.connect import Connection, connect, log_connected, wait_for_postgres
from elt.errors import ConnectionFailed, ExtractError, LoadError, ValidationFailed, message_lines
from elt.extract import SourceSnapshot, check_pg_dump_version, copy_encoding, pg_dump_argv
from elt.load import BUSY_MARKER, busy_error, encoding_error, pg_restore_argv, psql_load_argv
from elt.processes import Pipeline, Stage, StageResult, child_env
from elt.progress import CopyScanner, CopyStats, Progress, mb_per_second
from elt.sql import LOCK_KEY, read_sql
from elt.validate import (
    RECORD_HASH_MIN_VERSION,
    Figures,
    collect,
    compare_sequences,
    compare_tables,
    digest_encoding,
    list_tables,
    prepare_session,
    report,
    sequence_values,
    table_key,
)

# Who a server is: two databases with the same answer are the same database,
# whatever host names the settings used to reach them.
_IDENTITY_SQL = (
    "SELECT pg_catalog.pg_postmaster_start_time()::text, pg_catalog.current_database(), "
    "pg_catalog.inet_server_port()"
)


@dataclass(frozen=True)
class RunSummary:
    schemas: list[str]
    tables: int | None
    rows: int | None
    seconds: float
    copy_path: str  # "parallel" or "streamed"
    bytes: int | None = None  # COPY data streamed (the parallel path counts it)


def _wait_and_login(settings: Settings, logger: logging.Logger) -> None:
    logger.info("Waiting for databases to be ready")
    identities = []
    for db in (settings.source, settings.destination):
        attempt = wait_for_postgres(db, settings, logger)
        with connect(db, settings, autocommit=True) as conn:
            identities.append(conn.execute(_IDENTITY_SQL).fetchone())
        log_connected(logger, db, attempt, settings)
    if identities[0] == identities[1]:
        raise same_database_error("Source and destination settings lead to the same database")


def _failure(results: list[StageResult]) -> ExtractError | LoadError | None:
    """Name the failed step. The order below does not depend on who exited first.

    psql never fails because of its input (a truncated stream just ends without
    COMMIT), so a psql error is a load problem; then pg_dump's own failure is an
    extract problem; pg_restore failing alone is a load problem.
    """
    by_name = {r.name: r for r in results}
    psql, dump, restore = by_name["psql"], by_name["pg_dump"], by_name["pg_restore"]
    if psql.returncode > 0 and any(BUSY_MARKER in line for line in psql.stderr_tail):
        return busy_error(stderr_tail=psql.stderr_tail, tool="psql", returncode=psql.returncode)
    if psql.returncode > 0:
        return LoadError(
            "psql failed to apply the dump; the load was rolled back",
            hint="Read stderr_tail for the failing statement. The destination is unchanged; "
            "fix the cause and run again.",
            stderr_tail=psql.stderr_tail,
            tool="psql",
            returncode=psql.returncode,
        )
    if not dump.ok:
        return ExtractError(
            "pg_dump failed to read the source; nothing was committed",
            hint="Read stderr_tail. Check that the source is up and that "
            "SOURCE_POSTGRES_USER may read every table; the destination is unchanged.",
            stderr_tail=dump.stderr_tail,
            tool="pg_dump",
            returncode=dump.returncode,
        )
    if not restore.ok or not psql.ok:
        bad = restore if not restore.ok else psql
        return LoadError(
            f"{bad.name} failed; the load was rolled back",
            hint="Read stderr_tail. The destination is unchanged; fix the cause and run again.",
            stderr_tail=bad.stderr_tail,
            tool=bad.name,
            returncode=bad.returncode,
        )
    return None


def copy(
    settings: Settings,
    schemas: list[str],
    snapshot_id: str,
    logger: logging.Logger,
    *,
    table_sizes: dict[str, int],
    encoding: str | None = None,
    recreated: list[str] | None = None,
) -> CopyStats:
    """Stream the snapshot into the destination in one transaction.

    `table_sizes` ("schema.table": bytes on the source's disk) is for the
    progress estimate only; `encoding` is the dump's client encoding, when
    not the source's (extract.copy_encoding). `recreated`: the source's
    database-wide objects that depend on its schemas (replace.database_wide_dependents).
    """
    timeout = settings.connect_timeout_seconds
    progress = Progress(
        logger, len(table_sizes), sum(table_sizes.values()), settings.progress_seconds
    )
    stages = [
        Stage(
            "pg_dump",
            pg_dump_argv(settings.source, snapshot_id, encoding),
            child_env(settings.source, timeout),
        ),
        Stage(
            "pg_restore",
            pg_restore_argv(copy_ownership=settings.copy_ownership),
            child_env(None, timeout),
        ),
        Stage(
            "psql",
            psql_load_argv(settings.destination, schemas, recreated or []),
            child_env(settings.destination, timeout),
            observe=CopyScanner(progress, table_sizes).feed,
        ),
    ]

    def on_exit(result: StageResult) -> None:
        if result.name == "pg_dump" and result.ok:
            logger.info(
                "Data extraction completed successfully",
                extra={"duration_seconds": round(result.seconds, 3)},
            )

    logger.info(
        "Starting data extraction from source database",
        extra={"schemas": schemas, "snapshot": snapshot_id},
    )
    progress.start()
    try:
        with Pipeline(stages) as pipeline:
            results = pipeline.wait(on_exit)
    finally:
        progress.stop()
    failure = _failure(results)
    if failure is not None:
        raise failure
    for result in results:
        if result.stderr_tail:  # succeeded, but said something: pass it on
            logger.warning(
                "Tool reported warnings",
                extra={"tool": result.name, "stderr_tail": result.stderr_tail},
            )
    seconds = max(r.seconds for r in results)
    progress.finish()
    logger.info(
        "Data load completed successfully",
        extra={
            "duration_seconds": round(seconds, 3),
            "tables": progress.tables_done,
            "rows": progress.rows,
            "bytes": progress.bytes,
            "mb_per_second": mb_per_second(progress.bytes, seconds),
        },
    )
    return CopyStats(progress.tables_done, progress.rows, progress.bytes, seconds)


def _validation_error(side: str, exc: BaseException) -> ValidationFailed:
    lines = getattr(exc, "stderr_tail", None) or message_lines(exc)
    return ValidationFailed(
        f"Validation could not be completed: the {side} figures could not be computed",
        hint="The copy was committed but is not proven. Read stderr_tail, fix the cause "
        "(connection, permissions) and run again.",
        stderr_tail=lines,
    )


def _measure(
    settings: Settings,
    snapshot: SourceSnapshot,
    schemas: list[str],
    level: ValidationLevel,
    copied: CopyStats | None,
    *,
    rowless: frozenset[str],
) -> tuple[Figures, dict[str, int | None], Figures]:
    """Both sides' figures, computed at once: the source in its snapshot, in a thread.

    After the streamed copy, everything is measured here: on two cores, hashing
    the source while pg_dump streams it slows the copy by more than it saves
    (docs/performance.md). The parallel copy measured its
    tables while it ran; only the rest (materialized views, sequences, and
    anything it could not vouch for) is measured here. `rowless` tables
    (unlogged ones on a standby source) are measured on neither side.
    """
    known_source = copied.source_figures if copied else {}
    known_destination = copied.destination_figures if copied else {}
    stop = threading.Event()
    try:
        destination = connect(settings.destination, settings)
    except ConnectionFailed as exc:  # after the commit: the copy is there, but unproven
        raise _validation_error("destination", exc) from None
    versions = (snapshot.conn.info.server_version, destination.info.server_version)
    record_hash = min(versions) >= RECORD_HASH_MIN_VERSION
    convert_to = digest_encoding(_server_encoding(snapshot.conn), _server_encoding(destination))

    def source_side() -> tuple[Figures, dict[str, int | None]]:
        figures = collect(
            snapshot.conn,
            schemas,
            level,
            stop,
            record_hash=record_hash,
            recompute_matviews=True,
            skip=frozenset(known_source) | rowless,
            convert_to=convert_to,
        )
        figures.tables.update(known_source)
        return figures, sequence_values(snapshot.conn, schemas)

    with destination, ThreadPoolExecutor(1) as executor:
        source_future = executor.submit(source_side)
        try:
            try:
                prepare_session(destination)
                destination_figures = collect(
                    destination,
                    schemas,
                    level,
                    record_hash=record_hash,
                    skip=frozenset(known_destination) | rowless,
                    convert_to=convert_to,
                )
                destination_figures.tables.update(known_destination)
                destination.rollback()  # read-only work; end the transaction before closing
            except psycopg.Error as exc:
                raise _validation_error("destination", exc) from None
            try:
                source_figures, after = source_future.result()
            except psycopg.Error as exc:
                raise _validation_error("source", exc) from None
        except BaseException:
            if not source_future.done():
                stop.set()  # no further table ...
                with contextlib.suppress(psycopg.Error):
                    snapshot.conn.cancel_safe()  # ... and the running query ends now
            raise
    return source_figures, after, destination_figures


def run(settings: Settings, logger: logging.Logger) -> RunSummary:
    started = time.monotonic()
    _wait_and_login(settings, logger)
    level = settings.validation
    # Holds the run's locks on the destination until validation is done.
    with contextlib.ExitStack() as hold, SourceSnapshot.open(settings) as snapshot:
        check_pg_dump_version(snapshot.conn.info.server_version, settings.connect_timeout_seconds)
        try:
            schemas = snapshot.schemas()
            rowless = _rowless_tables(snapshot, schemas, logger)
            recreated = replace.database_wide_dependents(snapshot.conn, schemas)
            # Before the job locks the tables itself, and before the destination.
            _, source_relations = limits.source_locks(snapshot.conn, schemas, logger)
            if level is not ValidationLevel.OFF:
                prepare_session(snapshot.conn)
                snapshot.lock_tables(list_tables(snapshot.conn, schemas))
            # Sequences are outside the snapshot: read them before pg_dump does.
            before = (
                sequence_values(snapshot.conn, schemas) if level is ValidationLevel.FULL else {}
            )
        except psycopg.Error as exc:
            raise _catalog_error("Reading the source snapshot failed", exc) from None
        session = _hold_run_lock(settings, hold)
        # Before any copying, on both paths (each load checks again at its swap).
        replace.remove_leftovers(session, logger)
        replace.check_dependents(session, schemas, recreated, logger)

        def check_locks(*, parallel: bool) -> None:
            try:
                limits.destination_locks(
                    session, schemas, source_relations, parallel=parallel, logger=logger
                )
            except psycopg.Error as exc:
                raise LoadError(
                    "Reading the destination's catalogs failed; nothing was changed",
                    hint="Check that the destination is up and that "
                    "DESTINATION_POSTGRES_USER may read its catalogs.",
                    stderr_tail=message_lines(exc),
                ) from None

        encodings = (_server_encoding(snapshot.conn), _server_encoding(session))
        try:
            copied = _copy_in_parallel(
                settings, snapshot, schemas, logger, session, check_locks=check_locks
            )
            if copied is None:
                check_locks(parallel=False)
                dump_encoding = copy_encoding(*encodings)
                streamed = copy(
                    settings,
                    schemas,
                    snapshot.snapshot_id,
                    logger,
                    table_sizes=_source_sizes(snapshot, schemas),
                    encoding=None if dump_encoding == encodings[0] else dump_encoding,
                    recreated=recreated,
                )
        except (ExtractError, LoadError) as exc:
            raise encoding_error(exc, *encodings) or exc from None
        path = "streamed" if copied is None else "parallel"
        stats = streamed if copied is None else copied
        if level is ValidationLevel.OFF:
            logger.info("Validation skipped", extra={"validation_level": level.value})
            return RunSummary(
                schemas, stats.tables, stats.rows, time.monotonic() - started, path, stats.bytes
            )
        source_figures, after, destination_figures = _measure(
            settings, snapshot, schemas, level, copied, rowless=rowless
        )

    checks = compare_tables(source_figures, destination_figures)
    bad_sequences = (
        compare_sequences(before, after, destination_figures.sequences)
        if level is ValidationLevel.FULL
        else []
    )
    report(logger, checks, bad_sequences, level)
    rows = sum(c.source_rows or 0 for c in checks)
    return RunSummary(schemas, len(checks), rows, time.monotonic() - started, path, stats.bytes)


def _hold_run_lock(settings: Settings, hold: contextlib.ExitStack) -> Connection:
    """The run's destination session (autocommit), which `hold` closes after
    validation, holding the run's lock (elt/sql/run_lock.sql); refuse if another
    run holds it. The parallel copy coordinates in this session."""
    conn = connect(settings.destination, settings, autocommit=True)
    hold.callback(conn.close)
    try:
        conn.execute(read_sql("no_timeouts.sql"))
        row = conn.execute(read_sql("run_lock.sql"), {"lock_key": LOCK_KEY}).fetchone()
    except psycopg.Error as exc:
        raise LoadError(
            "Taking the run's lock on the destination failed; nothing was changed",
            hint="Check that the destination is up, then run again.",
            stderr_tail=message_lines(exc),
        ) from None
    if row is None or not row[0]:
        raise busy_error()
    return conn


def _server_encoding(conn: Connection) -> str:
    return conn.info.parameter_status("server_encoding") or ""


def _rowless_tables(
    snapshot: SourceSnapshot, schemas: list[str], logger: logging.Logger
) -> frozenset[str]:
    """Unlogged tables of a hot-standby source (standby_unlogged_tables.sql): both
    paths copy their definitions without data, as pg_dump does there, and say so."""
    rows = snapshot.conn.execute(
        read_sql("standby_unlogged_tables.sql"), {"schemas": schemas}
    ).fetchall()
    names = {kind: [f"{s}.{n}" for k, s, n in rows if k == kind] for kind in ("r", "S")}
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
    return frozenset(table_key(str(s), str(n)) for k, s, n in rows if k == "r")


def _catalog_error(message: str, exc: psycopg.Error) -> ExtractError:
    """A failed read of the source's catalogs (in the snapshot), before any copy."""
    if isinstance(exc, psycopg.errors.CharacterNotInRepertoire):
        # The job reads catalogs as UTF-8 (connect()); a SQL_ASCII database can
        # hold names in any bytes, which the server then refuses to send.
        return ExtractError(
            f"{message}: the source has names or definitions that are not valid UTF-8",
            hint="Rename those objects on the source with UTF-8 (or ASCII) names; "
            "the job reads the source's catalogs as UTF-8.",
            stderr_tail=message_lines(exc),
        )
    return ExtractError(
        message,
        hint="Check that the source is up and SOURCE_POSTGRES_USER may read its catalogs.",
        stderr_tail=message_lines(exc),
    )


def _source_sizes(snapshot: SourceSnapshot, schemas: list[str]) -> dict[str, int]:
    """Each table's size on the source's disk, for the progress estimate."""
    try:
        rows = snapshot.conn.execute(
            read_sql("source_table_sizes.sql"), {"schemas": schemas}
        ).fetchall()
    except psycopg.Error as exc:
        raise _catalog_error("Reading the source's table list failed", exc) from None
    return {str(name): max(int(str(size)), 0) for name, size in rows}


def _copy_in_parallel(
    settings: Settings,
    snapshot: SourceSnapshot,
    schemas: list[str],
    logger: logging.Logger,
    session: Connection,
    *,
    check_locks: Callable[..., None],
) -> CopyStats | None:
    """The parallel copy when it pays off and the source allows it; None: stream instead.

    `check_locks(parallel=True)` refuses a destination whose lock table is too
    small for it, before anything is staged."""
    if settings.jobs < 2:
        return None
    try:
        # pg_database_size reads the directory and takes no lock, so a locked
        # source table cannot hold up this decision.
        row = snapshot.conn.execute("SELECT pg_catalog.pg_database_size(current_database())")
        size_mb = int(str(row.fetchone()[0])) / 1_000_000  # type: ignore[index]
        if size_mb < settings.parallel_min_mb:
            logger.info(
                "Parallel copy not used",
                extra={
                    "reason": f"the source database ({size_mb:.1f} MB) is smaller than "
                    f"ELT_PARALLEL_MIN_MB ({settings.parallel_min_mb:g}); one stream is faster"
                },
            )
            return None
        if settings.validation is ValidationLevel.OFF:
            # What pg_dump does first: ACCESS SHARE on every table, so that a
            # TRUNCATE (not MVCC-safe) cannot empty a table under the snapshot.
            # With validation on, the snapshot holds these locks already.
            snapshot.lock_tables(list_tables(snapshot.conn, schemas))
        tables = parallel.source_tables(snapshot.conn, schemas)
    except psycopg.Error as exc:
        raise _catalog_error("Reading the source's table list failed", exc) from None
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
