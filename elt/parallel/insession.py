"""Small tables' rows through long-lived driver sessions, a COPY relayed chunk by chunk.

A psql pair costs two process starts and two logins per table, which is most
of a small table's copy; the driver's cost per row only matters for large
tables, which keep the pair (transfer.py). The sessions have the psql pair's
settings, and there is one pair of them per copy slot (Scheduler.max_copies),
so that the job never opens more connections than sizing.py counted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from elt.config import Settings
from elt.connect import Connection, connect
from elt.parallel.commands import copy_in_statement, copy_out_statement, truncate_statement
from elt.parallel.tables import CopyTable
from elt.progress import Progress
from elt.sql import read_sql

# Tables smaller than this go through the sessions (docs/performance.md).
SMALL_TABLE_BYTES = 4 << 20
# Rows are gathered into writes of about this size: one driver call per row
# would cost more than the row.
_WRITE_BYTES = 1 << 16
_PROGRESS_BYTES = 1 << 20


class SourceReadFailed(Exception):
    """Reading the source failed (the worker reports it as an extract error)."""

    def __init__(self, cause: psycopg.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Cancelled(Exception):
    """The main thread stopped the run; the reason is reported there. Raised by
    the worker (worker.py), and here when it is cancelled while a copy runs."""


def in_session(table: CopyTable, encoding: str) -> bool:
    """Whether the table's rows go through the sessions: a small table's, if the
    sessions' client encoding (UTF8, see connect()) is the one its rows travel in
    or they are text, whose encoding COPY's ENCODING option sets."""
    return table.size < SMALL_TABLE_BYTES and (not table.binary or encoding == "UTF8")


@dataclass
class SessionPair:
    source: Connection  # in the run's snapshot, read only, for the whole run
    destination: Connection

    def cancel(self) -> None:
        for conn in (self.source, self.destination):
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=5)

    def close(self) -> None:
        for conn in (self.source, self.destination):
            with contextlib.suppress(psycopg.Error):
                conn.close()


class SessionPool:
    """Session pairs shared by the workers; with the psql pairs running, never more
    than `slots` at once on each server."""

    def __init__(self, settings: Settings, snapshot_id: str, slots: int) -> None:
        self.settings = settings
        self.snapshot_id = snapshot_id
        self.slots = slots
        self._idle: list[SessionPair] = []
        self._open = 0  # session pairs open, idle or in use
        self._psql = 0  # psql pairs running
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def pair(self, register: Callable[[SessionPair | None], None]) -> Iterator[SessionPair]:
        """An idle session pair, or a new one. `register` makes it reachable by the
        worker's cancel() while in use. A pair that failed is closed, not reused."""
        with self._lock:
            pair = self._idle.pop() if self._idle else None
            if pair is None:
                self._open += 1
        try:
            if pair is None:
                pair = self._open_pair()
            register(pair)
            yield pair
        except BaseException:
            with self._lock:
                self._open -= 1
            if pair is not None:
                pair.close()
            raise
        finally:
            register(None)
        with self._lock:
            self._idle.append(pair)

    @contextlib.contextmanager
    def psql_slot(self) -> Iterator[None]:
        """Room for a psql pair: an idle session pair is closed if it needs its slot."""
        with self._lock:
            spare = None
            if self._open + self._psql >= self.slots and self._idle:
                spare = self._idle.pop()
                self._open -= 1
            self._psql += 1
        if spare is not None:
            spare.close()
        try:
            yield
        finally:
            with self._lock:
                self._psql -= 1

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pair in idle:
            pair.close()

    def _open_pair(self) -> SessionPair:
        source = connect(self.settings.source, self.settings)
        try:
            _prepare_source(source, self.snapshot_id)
            destination = connect(self.settings.destination, self.settings)
        except BaseException:
            source.close()
            raise
        try:
            for name in ("no_timeouts.sql", "copy_session.sql", "synchronous_commit_off.sql"):
                destination.execute(read_sql(name))
            destination.commit()
        except BaseException:
            source.close()
            destination.close()
            raise
        return SessionPair(source, destination)


def _prepare_source(conn: Connection, snapshot_id: str) -> None:
    """The settings psql's PGOPTIONS give the pair's source side, then the snapshot."""
    try:
        conn.execute(read_sql("no_timeouts.sql"))
        conn.execute(read_sql("copy_session.sql"))
        conn.commit()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(
            sql.SQL(read_sql("snapshot_transaction.sql")).format(snapshot=sql.Literal(snapshot_id))
        )
    except psycopg.Error as exc:
        raise SourceReadFailed(exc) from None


def copy_rows(
    pair: SessionPair,
    progress: Progress,
    table: CopyTable,
    staging_schema: str,
    *,
    encoding: str,
    cancelled: Callable[[], bool],
) -> int:
    """Copy the table's rows into its staging table and commit; the rows loaded.

    A failure to read the source raises SourceReadFailed; one on the
    destination, the driver's error.
    """
    into_cursor = pair.destination.cursor()
    into_cursor.execute(truncate_statement(staging_schema, table))
    out_cursor = pair.source.cursor()
    with (
        into_cursor.copy(copy_in_statement(staging_schema, table, encoding)) as into,
        contextlib.ExitStack() as stack,
    ):
        try:
            out = stack.enter_context(out_cursor.copy(copy_out_statement(table, encoding)))
        except psycopg.Error as exc:
            raise SourceReadFailed(exc) from None
        _relay(out, into, progress, table.label, cancelled)
    rows = into_cursor.rowcount
    pair.destination.commit()
    return rows


def _relay(
    out: psycopg.Copy,
    into: psycopg.Copy,
    progress: Progress,
    label: str,
    cancelled: Callable[[], bool],
) -> None:
    """Rows from `out` to `into`, in writes of about _WRITE_BYTES: memory stays flat."""
    buffer = bytearray()
    unreported = 0
    while True:
        try:
            row = out.read()
        except psycopg.Error as exc:
            raise SourceReadFailed(exc) from None
        buffer += row
        if len(buffer) >= _WRITE_BYTES or not row:
            if cancelled():
                raise Cancelled
            into.write(buffer)
            unreported += len(buffer)
            buffer = bytearray()
        if unreported >= _PROGRESS_BYTES or not row:
            progress.add_bytes(label, unreported)
            unreported = 0
        if not row:
            return
