"""How many workers the servers' connection limits leave room for."""

from __future__ import annotations

import dataclasses
import logging

import psycopg

from elt import limits
from elt.config import Settings, ValidationLevel
from elt.connect import Connection
from elt.failures import failed
from elt.parallel.toc import NotEligible


def connections_needed(workers: int, *, validation: bool) -> tuple[int, int]:
    """(destination, source) connections the copy opens at once besides the run's
    own sessions: per worker, an index build session and, with validation, a
    measuring session on each side; and a psql pair or a pair of driver sessions
    (insession.py) per table copied at once (half the workers, see Scheduler).
    The plan needs fewer: two, and one."""
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


def sized_settings(
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
