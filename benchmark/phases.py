"""Where one job run's wall time went, phase by phase, from its JSON log lines.

Each log line has a `timestamp`; the measuring worker (benchmark/methods.py)
notes the wall-clock time just before it starts the job and just after the job
has exited. A phase runs from one mark to the next: the marks are log messages
that the job writes at the boundaries, in the order it writes them on its copy
path. A mark missing from a run (a message another path or setting does not
write) merges its phase into the next one, so the phases always add up to the
run's wall time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

START = "process start"
EXIT = "process exit"
CONNECTED = "Database connection successful"

# (mark that ends the phase, what the phase is), in the order the job logs them.
_HEAD = [
    ("Starting ELT pipeline", "start-up: Python, imports, logging (to the first log line)"),
    ("Waiting for databases to be ready", "settings read"),
    (CONNECTED, "waits and logins, both sides (pg_isready, login, identity)"),
]
_PARALLEL = [
    (
        "Parallel copy workers sized",
        "snapshot, pg_dump --version, catalog reads, run lock, checks; size, table list, "
        "lock check, connection room",
    ),
    ("Parallel copy planned", "planning (the schema through the scratch database)"),
    ("Starting data extraction from source database", "staging schemas created (pre-data)"),
    (
        "Data extraction completed successfully",
        "copy: rows, indexes and keys, per-table validation figures",
    ),
    ("Data load completed successfully", "staging finished, swap and commit"),
]
_STREAMED = [
    (
        "Parallel copy not used",
        "snapshot, pg_dump --version, catalog reads, run lock, checks; size (the path's choice)",
    ),
    ("Starting data extraction from source database", "lock check, table sizes"),
    (
        "Data extraction completed successfully",
        "copy: pg_dump | pg_restore | psql to pg_dump's end",
    ),
    (
        "Data load completed successfully",
        "the restore's tail: indexes and keys, swap and commit (to psql's exit)",
    ),
]
_TAIL = [
    ("Validation summary", "validation after the copy"),
    ("ELT pipeline completed successfully", "snapshot and sessions closed"),
]


def when(line: dict[str, Any]) -> float:
    """A log line's timestamp, in seconds since the epoch."""
    stamp = str(line["timestamp"]).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(stamp).timestamp()


def _marks(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    parallel = any(x.get("message") == "Parallel copy planned" for x in logs)
    return _HEAD + (_PARALLEL if parallel else _STREAMED) + _TAIL


def _mark_time(logs: list[dict[str, Any]], message: str) -> float | None:
    found = [x for x in logs if x.get("message") == message]
    if not found:
        return None
    # Both sides log a successful connection: the waits end with the last one.
    return when(found[-1] if message == CONNECTED else found[0])


def job_phases(
    logs: list[dict[str, Any]], started_at: float | None, ended_at: float | None
) -> list[tuple[str, float]]:
    """[(phase, seconds)] from process start to process exit; [] without the times."""
    if started_at is None or ended_at is None or not logs:
        return []
    phases: list[tuple[str, float]] = []
    previous, pending = started_at, []
    for message, what in _marks(logs):
        pending.append(what)
        at = _mark_time(logs, message)
        if at is None or at < previous:  # not logged (or out of order): merge on
            continue
        phases.append((" + ".join(pending), at - previous))
        previous, pending = at, []
    pending.append("exit: interpreter shutdown (last log line to process exit)")
    phases.append((" + ".join(pending), max(ended_at - previous, 0.0)))
    return phases


def median_run(runs: list[Any]) -> Any | None:
    """The run whose wall time is the median (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.wall_s)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def format_phases(phases: list[tuple[str, float]]) -> list[str]:
    """One line a phase: seconds, share of the total, what it is; then the total."""
    total = sum(seconds for _, seconds in phases) or 1.0
    lines = [
        f"    {seconds:7.3f} s {100 * seconds / total:5.1f}%  {what}" for what, seconds in phases
    ]
    lines.append(f"    {sum(s for _, s in phases):7.3f} s 100.0%  total (process start to exit)")
    return lines
