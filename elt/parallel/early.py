"""The source's validation figures, taken in the snapshot while the copy is planned.

Planning mostly waits on pg_dump, pg_restore and the scratch database, and a
core is idle meanwhile: a session in the run's snapshot measures the source's
tables then, largest first, and the copy has no source-side task for them.
When the copy starts, no further table is begun; the one being measured is
finished (cancelled, its work would be lost), and the copy collects it before
the swap (docs/performance.md, "The floor on 2 cores").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING

from psycopg import sql

from elt.config import Settings, ValidationLevel
from elt.connect import Connection, server_encoding
from elt.extract import copy_encoding
from elt.parallel.sessions import WorkerSessions
from elt.parallel.tables import CopyTable
from elt.parallel.tasks import Task
from elt.validate import (
    RECORD_HASH_MIN_VERSION,
    TableFigures,
    digest_encoding,
    list_relations,
    measure,
    table_key,
)

if TYPE_CHECKING:
    from elt.parallel.staging import Coordinator

# How long stop() waits for the thread before it sends the cancel again: a
# cancel that arrives between two queries is lost.
CANCEL_AGAIN_SECONDS = 1.0


def hashing(snapshot: Connection, coordinator: Coordinator) -> tuple[bool, str | None]:
    """(record_hash, convert_to) for measure(), made as make_plan makes the plan's
    (Plan.record_hash, Plan.digest_encoding)."""
    versions = (snapshot.info.server_version, coordinator.conn.info.server_version)
    encoding = copy_encoding(server_encoding(snapshot), coordinator.encoding)
    record_hash = min(versions) >= RECORD_HASH_MIN_VERSION
    return record_hash, digest_encoding(encoding, coordinator.encoding)


class EarlySourceFigures:
    """Measures `tables` in a thread of its own, in a session of its own that
    imports the snapshot, until no_more(). A failure here is no failure of the
    run: the table is measured again, by its task or, if no_more() had named it,
    with the rest after the copy (figures.measure), which reports what fails."""

    def __init__(
        self,
        settings: Settings,
        snapshot_id: str,
        tables: list[CopyTable],
        logger: logging.Logger,
        *,
        hashing: tuple[bool, str | None],
    ) -> None:
        self._settings = settings
        self._tables = sorted(tables, key=lambda t: -t.size)
        self._logger = logger
        self.hashing = hashing  # (record_hash, convert_to), see hashing()
        # Only its source session is used: the archive's encoding never matters.
        self._sessions = WorkerSessions(settings, snapshot_id, "")
        self._stop = threading.Event()
        self._lock = threading.Lock()  # _stop against the start of the next table
        self._current: str | None = None  # the table being measured, by table_key
        self._figures: dict[str, TableFigures] = {}
        self._ended = threading.Event()  # its session closed: see ended()
        self._thread = threading.Thread(target=self._run, name="elt-early-figures", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def done(self) -> bool:
        """Whether every table is measured, or the measuring failed."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def ended(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the measuring to end and its session to
        close. A worker waits for it before it opens a source session of its own,
        so that the run never has more source sessions than sizing.py counted."""
        return self._ended.wait(timeout)

    def no_more(self) -> set[str]:
        """Begin no further table; the tables measured or being measured (by
        validate.table_key): collect() has their figures, unless one fails."""
        with self._lock:
            self._stop.set()
            return set(self._figures) | ({self._current} if self._current else set())

    def collect(self) -> dict[str, TableFigures]:
        """Wait for the table being measured, close the session; the figures."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self._sessions.close()
        return dict(self._figures)

    def stop(self) -> dict[str, TableFigures]:
        """End the measuring (a running query is cancelled) and close the session;
        the figures of the tables measured to the end, by validate.table_key."""
        self._stop.set()
        if self._thread.ident is not None:
            while self._thread.is_alive():
                self._sessions.cancel()
                self._thread.join(CANCEL_AGAIN_SECONDS)
        self._sessions.close()
        return dict(self._figures)

    def _run(self) -> None:
        schemas = sorted({t.schema for t in self._tables})
        level: ValidationLevel = self._settings.validation
        try:
            conn = self._sessions.source()
            listed = {(r.schema, r.name): r for r in list_relations(conn, schemas)}
            for table in self._tables:
                name = (table.schema, table.name)
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._current = table_key(*name)
                result = measure(
                    conn,
                    sql.Identifier(*name),
                    listed[name],
                    level,
                    record_hash=self.hashing[0],
                    convert_to=self.hashing[1],
                )
                with self._lock:
                    self._figures[table_key(*name)], self._current = result, None
                self._logger.debug(
                    "Measured while planning",
                    extra={"table": table.label, "duration_seconds": round(result.seconds, 3)},
                )
        except Exception as exc:  # measured again: by its task, or after the copy
            with self._lock:
                self._current = None
            if not self._stop.is_set():  # else: our own cancel
                self._logger.debug(
                    "Source figures while planning stopped", extra={"error": str(exc)[:200]}
                )
        finally:
            self._sessions.close()
            self._ended.set()


def without_measured(tasks: list[Task], measured: Collection[str]) -> list[Task]:
    """`tasks` less the source-side figures of the tables `measured` (validate.table_key)."""
    return [
        t
        for t in tasks
        if t.kind != "check_source" or table_key(t.table.schema, t.table.name) not in measured
    ]
