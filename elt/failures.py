"""One classification of failures for both copy paths.

Whatever fails (a client tool, a driver call, a worker, a login mid-run) is
turned here into the job's EltError, so that the same failure ends with the
same exit code and the same kind of error line on either path:

* a client tool missing from PATH: SettingsError, 2 (processes.tool_not_found);
* the source: ExtractError, 4, "Reading the source failed (<step>); nothing was changed";
* the destination: LoadError, 5, "Loading the destination failed (<step>); nothing was changed";
* another run holding the destination (busy_error) or text the destination's
  encoding cannot store (encoding_error): LoadError, 5;
* validation figures that could not be computed: ValidationFailed, 6.

Each error line names the `side` that failed and, where a tool failed, the
`tool` and its `returncode`; its hint says when the connection was lost or the
server had no connection slot left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import psycopg

from elt.errors import (
    ConnectionFailed,
    EltError,
    ExtractError,
    LoadError,
    ValidationFailed,
    message_lines,
)
from elt.processes import StageResult, ToolFailed, tool_not_found

Side = Literal["source", "destination"]

# Raised by replace_schemas.sql (both paths) when another run holds the lock.
BUSY_MARKER = "another ELT run is loading this destination"
# PostgreSQL's two messages for text that the destination's encoding cannot hold.
ENCODING_MARKERS = ("invalid byte sequence for encoding", "has no equivalent in encoding")
# The server's login refusals for want of a connection slot (SQLSTATE 53300).
NO_SLOT = ("too many clients", "too many connections", "connection slots are reserved")
# libpq's and the server's words for a session that ended under the client.
LOST = (
    "terminating connection",
    "server closed the connection unexpectedly",
    "could not receive data from server",
    "no connection to the server",
    "connection to server was lost",
    "the connection is lost",
)
_HINTS = {
    "source": "Read stderr_tail. Check that the source is up and that SOURCE_POSTGRES_USER "
    "may read every table; the destination is unchanged.",
    "destination": "Read stderr_tail for the failing statement. The destination is "
    "unchanged; fix the cause and run again.",
}


class FiguresFailed(Exception):
    """A worker could not take a table's validation figures on `side`."""

    def __init__(self, side: str, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.side = side
        self.error = error


def busy_error(*, stderr_tail: Sequence[str] = (), **context: Any) -> LoadError:
    """Another run holds one of the destination's locks (the run's, the load's or
    the parallel copy's coordinator's): this run refuses and changes nothing."""
    return LoadError(
        "Another ELT run is loading this destination database right now (or still "
        "validating it); nothing was changed",
        hint="Wait for the other run to finish, then run again.",
        stderr_tail=stderr_tail,
        **context,
    )


def encoding_error(
    error: EltError, source_encoding: str, destination_encoding: str
) -> LoadError | None:
    """The copy failed on text that the destination's encoding cannot hold: a limit
    of PostgreSQL, said as such with the setting to change; None for any other failure.

    A SQL_ASCII source's bytes are declared in the destination's encoding
    (extract.copy_encoding): the source's server checks them as it sends them,
    so pg_dump or the COPY out fails. Any other pair converts on the
    destination, which fails on characters its encoding lacks.
    """
    if source_encoding == destination_encoding:
        return None  # no conversion: not a mismatch of encodings
    if not any(m in line for line in error.stderr_tail for m in ENCODING_MARKERS):
        return None
    fit = "SQL_ASCII" if source_encoding == "SQL_ASCII" else "UTF8"
    return LoadError(
        f"The source database ({source_encoding}) holds text that the destination's "
        f"encoding ({destination_encoding}) cannot store; nothing was changed",
        hint=f"Copy into a destination database created with ENCODING '{fit}' "
        f"(CREATE DATABASE ... ENCODING '{fit}' TEMPLATE template0), or correct the "
        "values named in stderr_tail on the source.",
        stderr_tail=error.stderr_tail,
        source_encoding=source_encoding,
        destination_encoding=destination_encoding,
    )


def _lines(cause: BaseException | Sequence[str] | None) -> list[str]:
    if cause is None:
        return []
    if not isinstance(cause, BaseException):
        return list(cause)
    tail = getattr(cause, "stderr_tail", None)
    return list(tail) if tail else message_lines(cause)


def _says(lines: Sequence[str], markers: Sequence[str]) -> bool:
    return any(marker in line for line in lines for marker in markers)


def failed(
    side: Side,
    message: str,
    cause: BaseException | Sequence[str] | None = None,
    *,
    hint: str | None = None,
    **context: Any,
) -> EltError:
    """The error for a failure on `side` (ExtractError for the source, LoadError for
    the destination), with the cause's lines as stderr_tail."""
    lines = _lines(cause)
    if side == "destination" and _says(lines, (BUSY_MARKER,)):
        return busy_error(stderr_tail=lines, **context)
    if side == "source" and isinstance(cause, psycopg.errors.CharacterNotInRepertoire):
        # The job reads catalogs as UTF-8 (connect()); a SQL_ASCII database can
        # hold names in any bytes, which the server then refuses to send.
        message = message.replace(
            "; nothing was changed",
            ": the source has names or definitions that are not valid UTF-8",
        )
        hint = (
            "Rename those objects on the source with UTF-8 (or ASCII) names; "
            "the job reads the source's catalogs as UTF-8."
        )
    hint = hint or _HINTS[side]
    if _says(lines, NO_SLOT):
        # Sessions opened by others after the parallel copy was sized took the room.
        hint = "The server accepts no more connections for this role: lower ELT_JOBS, or "
        hint += "close other sessions, then run again; the destination is unchanged."
    elif _says(lines, LOST):
        hint = f"The connection to the {side} was lost mid-run: check that it is up. " + hint
    kind = ExtractError if side == "source" else LoadError
    return kind(message, hint=hint, stderr_tail=lines, side=side, **context)


def source_failed(
    step: str, cause: BaseException | Sequence[str] | None = None, **context: Any
) -> EltError:
    """Reading the source failed at `step` (a tool's name or what was being read)."""
    return failed(
        "source", f"Reading the source failed ({step}); nothing was changed", cause, **context
    )


def destination_failed(
    step: str, cause: BaseException | Sequence[str] | None = None, **context: Any
) -> EltError:
    """Loading the destination failed at `step`; its transaction rolled back."""
    message = f"Loading the destination failed ({step}); nothing was changed"
    return failed("destination", message, cause, **context)


def side_failed(
    side: Side, step: str, cause: BaseException | Sequence[str] | None = None, **context: Any
) -> EltError:
    return (source_failed if side == "source" else destination_failed)(step, cause, **context)


def figures_failed(side: str, cause: BaseException, *, committed: bool) -> ValidationFailed:
    """Validation figures that could not be computed on `side`: before the swap
    (the parallel copy's workers) nothing was changed; after a commit, the copy
    is there but unproven."""
    message = f"Validation could not be completed: the {side} figures could not be computed"
    if committed:
        hint = "The copy was committed but is not proven. Read stderr_tail, fix the cause "
        hint += "(connection, permissions) and run again."
    else:
        message += "; nothing was changed"
        hint = "Read stderr_tail, fix the cause (connection, permissions) and run again. "
        hint += "The destination's schemas are unchanged."
    return ValidationFailed(message, hint=hint, stderr_tail=_lines(cause), side=side)


def stream_failure(results: list[StageResult]) -> EltError | None:
    """Name the failed step of the one-stream copy, whoever exited first.

    psql never fails because of its input (a truncated stream just ends without
    COMMIT), so a psql error is a load problem; then pg_dump's own failure is an
    extract problem; pg_restore failing alone is a load problem.
    """
    by_name = {r.name: r for r in results}
    psql, dump, restore = by_name["psql"], by_name["pg_dump"], by_name["pg_restore"]
    if psql.returncode > 0:
        bad = psql
    elif not dump.ok:
        bad = dump
    elif not restore.ok or not psql.ok:
        bad = restore if not restore.ok else psql
    else:
        return None
    side: Side = "source" if bad is dump else "destination"
    return side_failed(side, bad.name, bad.stderr_tail, tool=bad.name, returncode=bad.returncode)


def classify(error: BaseException, *, step: str, side: Side = "destination") -> BaseException:
    """The EltError that `error`, raised at `step` on `side` (unless it says which
    side itself), is reported as; anything else (a bug) is returned unchanged."""
    result: BaseException = error
    if isinstance(error, ConnectionFailed):
        # A login failing mid-run: the server went away after the job had
        # connected, which is a failed extract or load, not a setup problem.
        on: Side = "source" if error.context.get("database") == "source" else "destination"
        result = side_failed(on, f"{step}: {error.message}", error.stderr_tail)
    elif isinstance(error, FileNotFoundError):
        result = tool_not_found(str(error.filename or "a client tool"))
    elif isinstance(error, OSError):
        result = LoadError(
            f"Starting a client tool failed: {error}",
            hint="Install the PostgreSQL client tools (psql, pg_dump, pg_restore) of the "
            "destination's major version, or put them on PATH.",
        )
    elif isinstance(error, FiguresFailed):
        result = figures_failed(error.side, error.error, committed=False)
    elif isinstance(error, ToolFailed):
        on = "source" if (error.side or side) == "source" else "destination"
        result = side_failed(on, step, error, tool=error.tool, returncode=error.returncode)
    elif isinstance(error, psycopg.Error):
        result = side_failed(side, step, error)
    return result


def swap_failed(error: psycopg.Error) -> EltError:
    """The parallel copy's swap failed: another run got in, the connection broke
    (the commit may or may not have happened), or the swap rolled back."""
    if BUSY_MARKER in str(error):
        return busy_error()
    if isinstance(error, psycopg.OperationalError):
        return LoadError(
            "The connection broke during the swap: it may or may not have been applied",
            hint="Run again once the destination is reachable: a re-run replaces the "
            "copy either way. Read stderr_tail for the cause.",
            stderr_tail=message_lines(error),
            side="destination",
        )
    return destination_failed("swapping the new copy in", error)
