"""Entry point: copy the source PostgreSQL database into the destination.

Thin on purpose: read the settings, set up logging, call pipeline.run(), and
turn every failure into one JSON error line and a documented exit code
(README.md, "Exit codes"). Run it as `python elt/elt_script.py`; all settings
come from environment variables (see .env.example).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from types import FrameType

from progress import mb_per_second

import pipeline
from config import Settings, load_settings
from errors import EltError, Interrupted
from logger_config import setup_logger

_received_signal: list[int] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # `docker stop` sends SIGTERM. Turn it into the same unwinding as Ctrl-C, so that
    # every `with` block stops its children and rolls its transaction back.
    _received_signal.append(signum)
    raise KeyboardInterrupt


class RedactSecrets(logging.Filter):
    """The last line of defence: no log line may carry a password, whatever put it there.

    Passwords never enter a log record by construction: no setting that holds
    one is logged, and the tools get theirs only through PGPASSWORD. What a
    tool or driver might still echo is scrubbed here without rewriting names:
    - a value written as a password (`password=...` in a connection string,
      `PGPASSWORD=...`, the `:...@` of a URI), whatever it is;
    - the literal password anywhere, if it is long enough not to be an
      ordinary word: a short one (`secret`, `app`) would also match the
      tables and databases named with it (`public.secret`, `bench_app`).
    """

    MIN_LITERAL_LENGTH = 12
    MASK = "********"
    # Quantifiers are bounded or anchored so that one long line costs linear time:
    # this runs on every field of every line, tool output included.
    _WRITTEN_AS_PASSWORD = re.compile(
        r"(?P<key>password\s*=\s*)"
        r"(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s'\"]\S*)"
        r"|(?P<uri>(?<![\w+.-])[a-z][\w+.-]*://[^\s:/@]{0,256}:)[^\s@/]{0,256}(?=@)",
        re.IGNORECASE,
    )

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= self.MIN_LITERAL_LENGTH]

    def _mask(self, match: re.Match[str]) -> str:
        return (match.group("key") or match.group("uri")) + self.MASK

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, self.MASK)
            return self._WRITTEN_AS_PASSWORD.sub(self._mask, value)
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(vars(record).items()):
            if key not in ("args", "exc_info"):
                setattr(record, key, self._scrub(value))
        return True


def _log_failure(logger: logging.Logger, error: EltError, exit_code: int) -> None:
    logger.error(
        error.log_message,
        extra={
            "error": error.message,
            "hint": error.hint,
            "exit_code": exit_code,
            **({"stderr_tail": error.stderr_tail} if error.stderr_tail else {}),
            **error.context,
        },
    )


def main() -> int:
    logger = setup_logger()
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it
    # ignored; the job promises to roll back on SIGINT however it was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logger.info("Starting ELT pipeline")
    settings: Settings | None = None
    try:
        settings = load_settings(os.environ)
        logger.setLevel(settings.log_level)
        logger.addFilter(
            RedactSecrets([db.password or "" for db in (settings.source, settings.destination)])
        )
        logger.info(
            "Configuration loaded from environment",
            extra={
                "source": settings.source.label,
                "destination": settings.destination.label,
                "validation": settings.validation.value,
                "copy_ownership": settings.copy_ownership,
                "wait_retries": settings.wait_retries,
                "jobs": settings.jobs,
            },
        )
        summary = pipeline.run(settings, logger)
    except EltError as error:
        _log_failure(logger, error, error.exit_code)
        return error.exit_code
    except KeyboardInterrupt:
        signum = _received_signal[-1] if _received_signal else signal.SIGINT
        interrupted = Interrupted(signum, signal.Signals(signum).name)
        _log_failure(logger, interrupted, interrupted.instance_exit_code)
        return interrupted.instance_exit_code
    except Exception as exc:  # a bug of ours: still one JSON line, never a bare traceback
        logger.exception(
            "ELT pipeline failed unexpectedly",
            extra={
                "error": f"{type(exc).__name__}: {exc}",
                "hint": "This is a bug in the ELT job; please report it with this log.",
                "exit_code": 1,
            },
        )
        return 1
    logger.info(
        "ELT pipeline completed successfully",
        extra={
            "source": settings.source.label,
            "destination": settings.destination.label,
            "schemas": summary.schemas,
            "tables": summary.tables,
            "rows": summary.rows,
            "bytes": summary.bytes,
            "duration_seconds": round(summary.seconds, 3),
            "mb_per_second": None
            if summary.bytes is None
            else mb_per_second(summary.bytes, summary.seconds),
            "copy_path": summary.copy_path,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
