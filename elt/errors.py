"""Failures the job knows how to explain, each with its own exit code.

`elt_script.main()` turns any of these into one JSON error line (what failed,
the tail of the tool's stderr, what to do) and exits with `exit_code`. The
codes are documented in README.md ("Exit codes"); tests/test_docs.py checks
that the table there and this module agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class EltError(Exception):
    """Base class: a failure with a message for humans and a fix to try."""

    exit_code: ClassVar[int] = 1
    log_message: ClassVar[str] = "ELT pipeline failed"

    def __init__(
        self,
        message: str,
        *,
        hint: str,
        stderr_tail: Sequence[str] = (),
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.stderr_tail = list(stderr_tail)
        self.context = context


class SettingsError(EltError):
    """A setting is missing or invalid; nothing was touched."""

    exit_code = 2
    log_message = "Invalid configuration"


class ConnectionFailed(EltError):
    """A database did not become ready in time, or refused our login."""

    exit_code = 3
    log_message = "Failed to connect to database"


class ExtractError(EltError):
    """pg_dump (or the source snapshot) failed; the destination is unchanged."""

    exit_code = 4
    log_message = "Data extraction failed"


class LoadError(EltError):
    """The restore into the destination failed and was rolled back."""

    exit_code = 5
    log_message = "Data load failed"


class ValidationFailed(EltError):
    """The copy committed, but the destination does not match the source snapshot."""

    exit_code = 6
    log_message = "Data validation failed"


class Interrupted(EltError):
    """SIGINT/SIGTERM arrived; children were stopped and the load rolled back."""

    log_message = "ELT pipeline interrupted"

    def __init__(self, signum: int, signame: str) -> None:
        super().__init__(
            f"Received {signame}; the copy was stopped and rolled back",
            hint="Re-run the job when ready; the destination is as it was before this run.",
            signal=signame,
        )
        # Shell convention (and what `docker stop` users expect): 128 + signal number.
        self.instance_exit_code = 128 + signum


def message_lines(exc: BaseException, limit: int = 5) -> list[str]:
    """The last non-blank lines of a driver error's text, for `stderr_tail`."""
    return [line.strip() for line in str(exc).splitlines() if line.strip()][-limit:]


EXIT_CODES: dict[int, type[EltError]] = {
    cls.exit_code: cls
    for cls in (
        EltError,
        SettingsError,
        ConnectionFailed,
        ExtractError,
        LoadError,
        ValidationFailed,
    )
}
