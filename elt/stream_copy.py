"""The one-stream copy: pg_dump | pg_restore | psql, in one destination transaction.

    source --pg_dump -Fc--> pg_restore --SQL--> psql --one transaction--> destination

pg_dump reads the run's snapshot (pipeline.run holds it open); psql applies
prepare_destination.sql and then the restore script, whose final COMMIT is
the only one: a failure anywhere, or a stream that ends early, leaves the
destination as it was. The parallel copy (elt/parallel/) is the other path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from elt.config import Settings
from elt.extract import pg_dump_argv
from elt.failures import stream_failure
from elt.load import pg_restore_argv, psql_load_argv
from elt.processes import Pipeline, Stage, StageResult, child_env
from elt.progress import CopyScanner, CopyStats, Progress, mb_per_second


def stages(
    settings: Settings,
    schemas: list[str],
    snapshot_id: str,
    *,
    encoding: str | None,
    recreated: list[str],
    observe: Callable[[bytes], None],
) -> list[Stage]:
    """pg_dump | pg_restore | psql, each with its own side's environment only;
    `observe` sees the SQL on its way into psql (progress)."""
    timeout = settings.connect_timeout_seconds
    return [
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
            psql_load_argv(settings.destination, schemas, recreated),
            child_env(settings.destination, timeout),
            observe=observe,
        ),
    ]


class StreamCopy:
    """Stream the snapshot into the destination in one transaction, the dump
    started ahead of the load: pg_dump and pg_restore start here and read the
    source only; psql, the only stage that touches the destination, starts at
    load(). Meanwhile the restore script waits in a pipe. Leaving the block
    stops whatever still runs.

    `table_sizes` ("schema.table": bytes on the source's disk) is for the
    progress estimate only; `encoding` is the dump's client encoding, when
    not the source's (extract.copy_encoding). `recreated`: the source's
    database-wide objects that depend on its schemas (replace.database_wide_dependents).
    """

    def __init__(
        self,
        settings: Settings,
        schemas: list[str],
        snapshot_id: str,
        logger: logging.Logger,
        *,
        table_sizes: dict[str, int],
        encoding: str | None = None,
        recreated: list[str] | None = None,
    ) -> None:
        self._logger = logger
        self._schemas, self._snapshot_id = schemas, snapshot_id
        self._progress = Progress(
            logger, len(table_sizes), sum(table_sizes.values()), settings.progress_seconds
        )
        pipeline_stages = stages(
            settings,
            schemas,
            snapshot_id,
            encoding=encoding,
            recreated=recreated or [],
            observe=CopyScanner(self._progress, table_sizes).feed,
        )
        # Entered here, so that pg_dump and pg_restore start now; psql is held.
        self._pipeline = Pipeline(pipeline_stages, held=1).__enter__()

    def load(self, after_dump: Callable[[], None] | None = None) -> CopyStats:
        """Start psql and wait for all three. `after_dump` is called once pg_dump
        has exited successfully, while psql may still be building indexes and
        keys; it must return at once."""
        logger = self._logger

        def on_exit(result: StageResult) -> None:
            if result.name == "pg_dump" and result.ok:
                logger.info(
                    "Data extraction completed successfully",
                    extra={"duration_seconds": round(result.seconds, 3)},
                )
                if after_dump is not None:
                    after_dump()

        logger.info(
            "Starting data extraction from source database",
            extra={"schemas": self._schemas, "snapshot": self._snapshot_id},
        )
        self._progress.start()
        try:
            self._pipeline.start_rest()
            results = self._pipeline.wait(on_exit)
        finally:
            self._progress.stop()
            self._pipeline.terminate()
        failure = stream_failure(results)
        if failure is not None:
            raise failure
        return _finished(results, self._progress, logger)

    def __enter__(self) -> StreamCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipeline.terminate()


def _finished(results: list[StageResult], progress: Progress, logger: logging.Logger) -> CopyStats:
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
