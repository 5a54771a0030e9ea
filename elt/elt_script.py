"""Entry point: copy the source PostgreSQL database into the destination.

Thin on purpose: read the settings, set up logging, call pipeline.run(), and
turn every failure into one JSON error line and a documented exit code
(README.md, "Exit codes"). Run it as `python elt/elt_script.py`; all settings
come from environment variables (see .env.example).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import NoReturn

if __name__ == "__main__":
    # Run as a script, Python puts elt/ itself first on sys.path. Its parent goes
    # there instead, so that `elt` is a package and no module has two names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)


BUG_HINT = "This is a bug in the ELT job; please report it with this log."


def import_failed(exc: ImportError) -> NoReturn:
    """The job's modules could not be imported: a package they need is missing or
    broken (the JSON logger may be the one), or one of its own modules is; the
    one error line is written with the standard library."""
    line = {
        "level": "ERROR",
        "message": "ELT pipeline failed unexpectedly",
        "error": f"{type(exc).__name__}: {exc}",
        "hint": BUG_HINT
        if (exc.name or "").partition(".")[0] == "elt"
        else "The job's Python packages are missing or broken: rebuild the image "
        "(docker compose build --no-cache elt_script), or run "
        "`pip install -r elt/requirements.txt`.",
        "exit_code": 1,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    print(json.dumps(line), flush=True)
    sys.exit(1)


try:
    from elt import pipeline
    from elt.config import Settings, load_settings
    from elt.errors import EltError, Interrupted
    from elt.logger_config import RedactSecrets, setup_logger
    from elt.progress import mb_per_second
except ImportError as exc:  # one JSON line, not a traceback (README, "Exit codes")
    import_failed(exc)

_received_signal: list[int] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # `docker stop` sends SIGTERM. Turn it into the same unwinding as Ctrl-C, so that
    # every `with` block stops its children and rolls its transaction back.
    _received_signal.append(signum)
    raise KeyboardInterrupt


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


def _log_settings(logger: logging.Logger, settings: Settings) -> None:
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
        _log_settings(logger, settings)
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
                "hint": BUG_HINT,
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


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (freeing every module's objects),
    which the job does not need: its sessions, children and threads are done
    when main() returns. Only the output is left to flush."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
