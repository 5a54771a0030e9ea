"""A worker thread: takes tasks from the scheduler until none is left.

A task copies a table's rows (insession.py or transfer.py), builds an index or key, or
measures a table for validation. cancel() and kill() reach every session the
worker opened (sessions.py) and every psql it started.
"""

from __future__ import annotations

import signal
import threading
import time

import psycopg
from psycopg import sql

from elt.config import Settings
from elt.failures import FiguresFailed, source_failed
from elt.parallel.entries import entry_sql, runnable_sql
from elt.parallel.insession import (
    Cancelled,
    SessionPair,
    SessionPool,
    SourceReadFailed,
    copy_rows,
    in_session,
)
from elt.parallel.plan import Plan
from elt.parallel.scheduler import Scheduler
from elt.parallel.sessions import WorkerSessions
from elt.parallel.tables import CopyTable
from elt.parallel.tasks import Task
from elt.parallel.transfer import Process, relay, rows_loaded, start_pair
from elt.progress import Progress
from elt.validate import measure, table_key


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
        pool: SessionPool,
    ) -> None:
        super().__init__(name=f"elt-copy-{number}", daemon=True)
        self.settings = settings
        self.snapshot_id = snapshot_id
        self.plan = plan
        self.scheduler = scheduler
        self.progress = progress
        self.pool = pool
        self._pair: SessionPair | None = None  # the session pair of a copy running now
        self.sessions = WorkerSessions(settings, snapshot_id, plan.archive_encoding)
        self.cancelled = False
        self._procs: list[Process] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            self._take_tasks()
        except Cancelled:
            self.scheduler.stop()
        except BaseException as exc:  # handed to the main thread, which reports it
            self.scheduler.fail(exc)
        finally:
            self.sessions.close()

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
            for proc in self._procs:
                if proc.poll() is None:
                    # SIGINT, not SIGTERM: psql then sends the server a cancel
                    # request, so a COPY waiting on a lock there ends too
                    # instead of holding locks the clean-up needs.
                    proc.send_signal(signal.SIGINT)
            pair = self._pair
        if pair is not None:
            pair.cancel()
        self.sessions.cancel()

    def _take_tasks(self) -> None:
        while (task := self.scheduler.next()) is not None:
            if task.kind == "rows":
                self._transfer(task.table)
            elif task.kind == "build":
                self._build(task)
            else:
                self._measure(task)
            self.scheduler.done(task)

    def _transfer(self, table: CopyTable) -> None:
        """The table's rows into its staging table: a small table's through a pair
        of long-lived sessions (insession.py), a large one's by a psql pair."""
        started = time.monotonic()
        self.progress.table_started(table.label, table.size)
        by_sessions = in_session(table, self.plan.encoding)
        if by_sessions:
            rows = self._transfer_in_session(table)
        else:
            with self.pool.psql_slot():
                rows = self._transfer_by_psql(table)
        through = "sessions" if by_sessions else "psql"
        self.progress.logger.debug("Rows moved", extra={"table": table.label, "through": through})
        self.progress.table_done(table.label, rows, time.monotonic() - started)

    def _transfer_in_session(self, table: CopyTable) -> int:
        try:
            with self.pool.pair(self._register) as pair:
                if self.cancelled:
                    raise Cancelled
                return copy_rows(
                    pair,
                    self.progress,
                    table,
                    self.plan.staged[table.schema],
                    encoding=self.plan.encoding,
                    cancelled=lambda: self.cancelled,
                )
        except SourceReadFailed as exc:
            if self.cancelled:  # the cancel request's own error
                raise Cancelled from None
            raise source_failed("copying the tables", exc.cause) from None
        except psycopg.Error:
            if self.cancelled:
                raise Cancelled from None
            raise

    def _register(self, pair: SessionPair | None) -> None:
        """The session pair cancel() reaches (None: none in use)."""
        with self._lock:
            self._pair = pair
        if pair is not None and self.cancelled:
            raise Cancelled

    def _transfer_by_psql(self, table: CopyTable) -> int:
        try:
            with self._lock:  # cancel() must see every process started
                if self.cancelled:
                    raise Cancelled
                out, into = start_pair(
                    self.settings, self.plan, self.snapshot_id, table, self._procs
                )
            tails, loader_gone = relay(self.progress, table, out, into)
        finally:
            with self._lock:
                for proc in self._procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                self._procs = []
        if self.cancelled:
            raise Cancelled
        return rows_loaded(out, into, tails, loader_gone=loader_gone)

    def _build(self, task: Task) -> None:
        started = time.monotonic()
        destination = self.sessions.destination()
        if task.statement is not None:
            statement, what = task.statement, task.statement
        else:
            assert task.entry is not None
            encoding = destination.info.encoding
            printed = self.plan.printed.get(task.entry.dump_id)
            if printed is None:
                statement = entry_sql(self.plan.archive, [task.entry], self.settings, encoding)
            else:
                statement = runnable_sql(printed, encoding)
            what = task.entry.line
        if self.cancelled:
            raise Cancelled
        destination.execute(statement)
        destination.commit()
        self.progress.logger.debug(
            "Built",
            extra={"entry": what, "duration_seconds": round(time.monotonic() - started, 3)},
        )

    def _measure(self, task: Task) -> None:
        table, plan = task.table, self.plan
        name = (table.schema, table.name)
        if self.cancelled:
            raise Cancelled
        try:
            if task.kind == "check_source":
                conn = self.sessions.source()
                relation = sql.Identifier(table.schema, table.name)
                listed = plan.source_listed[name]
                figures = plan.source_figures
            else:
                conn = self.sessions.checker()
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
