"""The staging schemas on the destination: created, finished, swapped in, or removed.

The coordinator works in the run's own destination session, which holds the
run's lock until validation has finished; there it also takes the load's lock
(the key the streamed load takes in its transaction) from the plan on. Until
the swap commits the new copy lives only in the staging schemas, so a failure
before it only has to drop them.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from elt.config import Settings
from elt.connect import Connection
from elt.errors import LoadError, message_lines
from elt.failures import busy_error, failed
from elt.parallel.commands import restore_env, schema_restore_argv, scratch_database_name
from elt.parallel.entries import printed_entries
from elt.parallel.in_memory import run_in_memory
from elt.parallel.plan import Plan
from elt.parallel.toc import NotEligible
from elt.processes import APPLICATION_NAME
from elt.replace import drop_marked
from elt.sql import LOCK_KEY, read_sql
from elt.validate import list_relations


class Coordinator:
    """Owns staging and swaps, in the run's own destination session (autocommit;
    pipeline.run opens it, holds the run's lock in it, and closes it after
    validation). Here that session also takes the load's lock."""

    def __init__(self, conn: Connection, logger: logging.Logger) -> None:
        self.logger = logger
        self.conn = conn
        try:
            cursor = self.conn.cursor(row_factory=dict_row)
            row = cursor.execute(
                read_sql("coordinator_lock.sql"), {"lock_key": LOCK_KEY}
            ).fetchone()
        except psycopg.Error as exc:
            raise failed(
                "destination", "Preparing the parallel copy failed; nothing was changed", exc
            ) from None
        assert row is not None
        if not row["locked"]:
            raise busy_error()
        self.scratch = scratch_database_name(int(str(row["oid"])))
        self.encoding = str(row["encoding"])
        self.collate, self.ctype = str(row["datcollate"]), str(row["datctype"])
        self.staging: list[str] = []
        self._dropping: Future[None] | None = None

    def release(self) -> None:
        """Give the load's lock back, for a run that goes on with one stream
        (whose load takes it in its own session), or ends."""
        with contextlib.suppress(psycopg.Error):
            self.conn.execute(read_sql("load_unlock.sql"), {"lock_key": LOCK_KEY})

    def drop_scratch(self) -> None:
        self.conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.scratch))
        )

    def drop_scratch_soon(self) -> None:
        """drop_scratch in a thread, in this session: DROP DATABASE waits for a
        checkpoint, which need not hold up the plan. scratch_dropped() waits for it."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elt-drop")
        self._dropping = pool.submit(self.drop_scratch)
        pool.shutdown(wait=False)  # the thread ends with the drop

    def scratch_dropped(self) -> None:
        """Wait for drop_scratch_soon's drop; raise its error."""
        dropping, self._dropping = self._dropping, None
        if dropping is not None:
            dropping.result()

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


def create_staging(settings: Settings, coordinator: Coordinator, plan: Plan) -> None:
    """The staging schemas' pre-data, in one transaction; the real schemas are not touched.

    Meanwhile the build entries' SQL is printed (entries.printed_entries) and the
    scratch database dropped (Coordinator.drop_scratch_soon).
    """
    built = [t.entry for t in plan.tasks if t.entry is not None]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="elt-print") as pool:
        printing = pool.submit(printed_entries, plan.archive, built, settings)
        run_in_memory(
            schema_restore_argv(
                settings.destination,
                settings.destination.dbname,
                copy_ownership=settings.copy_ownership,
                section="pre-data",
            ),
            restore_env(settings.destination, settings.connect_timeout_seconds),
            plan.archive,
        )
        unstaged = {v: k for k, v in plan.staged.items()}
        # In the coordinator's session, which the scratch database's drop may still hold.
        plan.destination_listed = {
            (unstaged[str(r[0])], str(r[1])): r
            for r in list_relations(coordinator.conn, list(unstaged))
        }
        coordinator.scratch_dropped()
        plan.printed = printing.result()


def finish_staging(settings: Settings, coordinator: Coordinator, plan: Plan) -> None:
    """Post-data that is not per table, sequence values, materialized views."""
    if plan.remainder:
        run_in_memory(
            schema_restore_argv(
                settings.destination,
                settings.destination.dbname,
                copy_ownership=settings.copy_ownership,
                use_list=True,
            ),
            restore_env(settings.destination, settings.connect_timeout_seconds),
            plan.archive,
            "".join(e.line + "\n" for e in plan.remainder),
        )
    conn = coordinator.conn
    with conn.transaction():
        for schema, name, value, is_called in plan.sequences:
            conn.execute(
                read_sql("sequence_set.sql"),
                {
                    "sequence": sql.Identifier(schema, name).as_string(conn),
                    "value": value,
                    "is_called": is_called,
                },
            )
        for schema, name in plan.matviews:
            conn.execute(
                sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(schema, name))
            )


def swap(coordinator: Coordinator, plan: Plan, schemas: list[str]) -> bool:
    """The one transaction that makes the new copy visible (elt/sql/replace_schemas.sql).

    Returns whether the destination has enabled event triggers: DDL runs their
    code, which may change rows after they were measured.
    """
    conn = coordinator.conn
    with conn.transaction():
        # Synchronous: it flushes the workers' commits (synchronous_commit=off) with it.
        conn.execute(read_sql("swap_session.sql"))
        staged = [plan.staged[s] for s in schemas]
        conn.execute(
            read_sql("swap_settings.sql"),
            {
                "replaced": schemas,
                "staged": staged,
                "comments": [plan.comments.get(s) for s in staged],
                "lock_key": LOCK_KEY,
            },
        )
        # The swap re-creates no database-wide object (a source with any is
        # streamed): every dependent outside the copied schemas is a blocker.
        conn.execute(read_sql("dependents.sql"))
        conn.execute(read_sql("replace_schemas.sql"))
        cursor = conn.cursor(row_factory=dict_row)
        saved = cursor.execute(read_sql("saved_views.sql")).fetchone()
        if saved is not None and saved["saved"]:
            # Views in other schemas that use the copied ones, against the new copy.
            conn.execute(read_sql("recreate_views.sql"))
            conn.execute(read_sql("recreate_views_in_swap.sql"))
        row = cursor.execute(read_sql("enabled_event_triggers.sql")).fetchone()
    return bool(row and row["enabled"])


def clean_up(coordinator: Coordinator, logger: logging.Logger) -> None:
    """Drop this run's staging schemas and scratch database, or say why not."""
    # A drop still running holds the session; dropped or not, drop_scratch follows.
    with contextlib.suppress(psycopg.Error):
        coordinator.scratch_dropped()
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
