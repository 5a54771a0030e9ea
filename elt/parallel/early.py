"""The source's validation figures, taken in the snapshot while the copy is planned.

Planning mostly waits on pg_dump, pg_restore and the scratch database, and a
core is idle meanwhile: a session in the run's snapshot measures the source's
tables then, largest first, and the copy has no source-side task for them.
The plan's end stops it: a table still being measured is cancelled and left to
its task, as measuring it beside the largest table's rows would slow the run's
longest chain (docs/performance.md, "The floor on 2 cores").
"""

from __future__ import annotations

import logging
import threading
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
    imports the snapshot, until stop(). A failure here is no failure of the run:
    the table's source-side task measures it again, and reports what fails then."""

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
        self._figures: dict[str, TableFigures] = {}
        self._thread = threading.Thread(target=self._run, name="elt-early-figures", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def done(self) -> bool:
        """Whether every table is measured, or the measuring failed."""
        return self._thread.ident is not None and not self._thread.is_alive()

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
                if self._stop.is_set():
                    return
                name = (table.schema, table.name)
                self._figures[table_key(*name)] = result = measure(
                    conn,
                    sql.Identifier(*name),
                    listed[name],
                    level,
                    record_hash=self.hashing[0],
                    convert_to=self.hashing[1],
                )
                self._logger.debug(
                    "Measured while planning",
                    extra={"table": table.label, "duration_seconds": round(result.seconds, 3)},
                )
        except Exception as exc:  # the table's task measures it again and reports a failure
            if not self._stop.is_set():  # else: our own cancel
                self._logger.debug(
                    "Source figures while planning stopped", extra={"error": str(exc)[:200]}
                )


def without_measured(tasks: list[Task], measured: dict[str, TableFigures]) -> list[Task]:
    """`tasks` less the source-side figures of tables already `measured`."""
    return [
        t
        for t in tasks
        if t.kind != "check_source" or table_key(t.table.schema, t.table.name) not in measured
    ]
