"""A worker's database sessions, each opened when a task first needs it."""

from __future__ import annotations

import contextlib
import threading

import psycopg
from psycopg import sql

from elt.config import DatabaseSettings, Settings
from elt.connect import Connection, connect
from elt.sql import read_sql
from elt.validate import prepare_session


class WorkerSessions:
    def __init__(self, settings: Settings, snapshot_id: str, archive_encoding: str) -> None:
        self.settings = settings
        self.snapshot_id = snapshot_id
        self.archive_encoding = archive_encoding
        self._source: Connection | None = None  # in the snapshot, for validation figures
        self._destination: Connection | None = None  # index and key builds
        self._checker: Connection | None = None  # destination validation figures
        self._conns: list[Connection] = []  # the three above, as they are opened
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Cancel whatever statement each session runs (called from the main thread)."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=5)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _open(self, db: DatabaseSettings) -> Connection:
        """A session of this worker: cancel() and close() reach it from now on."""
        conn = connect(db, self.settings)
        with self._lock:
            self._conns.append(conn)
        conn.execute(read_sql("no_timeouts.sql"))
        conn.execute(read_sql("one_process_per_task.sql"))
        return conn

    def checker(self) -> Connection:
        """A destination session for validation figures."""
        if self._checker is None:
            conn = self._checker = self._open(self.settings.destination)
            prepare_session(conn)
            conn.commit()
        return self._checker

    def destination(self) -> Connection:
        """A destination session for index and key builds."""
        if self._destination is None:
            conn = self._destination = self._open(self.settings.destination)
            conn.execute(read_sql("copy_session.sql"))
            # The entries' SQL is in the staging archive's encoding: the
            # destination database's (the scratch database was created with it).
            conn.execute(read_sql("client_encoding.sql"), {"encoding": self.archive_encoding})
            # Durability is kept by the swap's synchronous commit, which flushes
            # the WAL of every commit before it (docs/parallel-copy.md, "Durability").
            conn.execute(read_sql("synchronous_commit_off.sql"))
            conn.commit()
        return self._destination

    def source(self) -> Connection:
        """A source session in the exported snapshot, for validation figures."""
        if self._source is None:
            conn = self._source = self._open(self.settings.source)
            conn.commit()
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute(
                sql.SQL(read_sql("snapshot_transaction.sql")).format(
                    snapshot=sql.Literal(self.snapshot_id)
                )
            )
            # The same settings as the destination's figures (checker): the
            # text form of many types depends on them (TimeZone, say).
            prepare_session(conn)
        return self._source
