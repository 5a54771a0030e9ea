"""Structured logging: every line on stdout is one JSON object.

Uses python-json-logger's current module (`pythonjsonlogger.json`); the old
`pythonjsonlogger.jsonlogger` import path emits a DeprecationWarning.
"""

from __future__ import annotations

import logging
import re
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
