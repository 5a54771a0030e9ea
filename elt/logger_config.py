"""Structured logging: every line on stdout is one JSON object.

Uses python-json-logger's current module (`pythonjsonlogger.json`); the old
`pythonjsonlogger.jsonlogger` import path emits a DeprecationWarning.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

LOGGER_NAME = "elt"


def setup_logger(level: str = "INFO") -> logging.Logger:
    """Return the job's logger, writing JSON lines to stdout (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{message}",
            style="{",
            rename_fields={"levelname": "level"},
            # ISO 8601 in UTC under the key "timestamp".
            timestamp=True,
            json_ensure_ascii=False,
        )
    )
    logger.addHandler(handler)
    return logger
