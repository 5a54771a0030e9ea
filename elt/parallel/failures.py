"""What a failure inside the parallel copy is reported as (an EltError)."""

from __future__ import annotations

import psycopg

from elt.errors import (
    ConnectionFailed,
    EltError,
    ExtractError,
    LoadError,
    ValidationFailed,
    message_lines,
)
from elt.parallel.tools import ToolFailed

# The server's login refusals for want of a connection slot (SQLSTATE 53300).
_NO_SLOT = ("too many clients", "too many connections", "connection slots are reserved")


class SourceFailed(Exception):
    def __init__(self, stderr_tail: list[str]) -> None:
        super().__init__("reading from the source failed")
        self.stderr_tail = stderr_tail


class CheckFailed(Exception):
    def __init__(self, side: str, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.side = side
        self.error = error


class Cancelled(Exception):
    """The main thread stopped the run; the reason is reported there."""


def load_error(message: str, exc: BaseException) -> LoadError:
    lines = getattr(exc, "stderr_tail", None) or message_lines(exc)
    return LoadError(
        message,
        hint="Read stderr_tail. The destination's schemas are unchanged (the staging "
        "schemas were removed); fix the cause and run again.",
        stderr_tail=lines,
    )


def classify(error: BaseException) -> EltError | BaseException:
    """The EltError a worker's failure is reported as (anything else is a bug)."""
    result: EltError | BaseException = error
    if isinstance(error, ConnectionFailed):
        # A worker's login failing mid-run: the server went away after the job
        # had connected, which is a failed extract or load, not a setup problem.
        failed = ExtractError if error.context.get("database") == "source" else LoadError
        hint = "Read stderr_tail. Check that the server is up, then run again; "
        if any(marker in line for line in error.stderr_tail for marker in _NO_SLOT):
            # Sessions opened by others after the workers were sized took the room.
            hint = "The server accepts no more connections for this role: lower ELT_JOBS, "
            hint += "or close other sessions, then run again; "
        result = failed(
            f"{error.message} during the parallel copy; nothing was changed",
            hint=hint + "the destination's schemas are unchanged.",
            stderr_tail=error.stderr_tail,
        )
    elif isinstance(error, SourceFailed):
        result = ExtractError(
            "Reading a table from the source failed; nothing was committed",
            hint="Read stderr_tail. Check that the source is up and that "
            "SOURCE_POSTGRES_USER may read every table; the destination is unchanged.",
            stderr_tail=error.stderr_tail,
        )
    elif isinstance(error, CheckFailed):
        result = ValidationFailed(
            f"Validation could not be completed: the {error.side} figures could not be "
            "computed; nothing was changed",
            hint="Read stderr_tail, fix the cause (connection, permissions) and run again. "
            "The destination's schemas are unchanged.",
            stderr_tail=message_lines(error.error),
        )
    elif isinstance(error, OSError):
        result = LoadError(
            f"Starting a client tool failed: {error}",
            hint="Install the PostgreSQL client tools (psql, pg_dump, pg_restore) of the "
            "destination's major version, or put them on PATH.",
        )
    elif isinstance(error, psycopg.Error | ToolFailed):
        result = load_error("Loading the staging schemas failed", error)
    return result
