"""Settings, read once from the environment into frozen dataclasses.

Every problem is reported before anything connects, naming the variable and
the fix (the same idea as docker-library/postgres's `file_env` and verify
step). `*_PASSWORD_FILE` is accepted instead of `*_PASSWORD`, for Docker
secrets. Passwords are kept out of `repr()` so they cannot reach a log line.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from elt.errors import SettingsError

SIDES = ("SOURCE", "DESTINATION")


class ValidationLevel(enum.StrEnum):
    OFF = "off"
    COUNTS = "counts"
    FULL = "full"


@dataclass(frozen=True)
class DatabaseSettings:
    """How to reach one database. `role` is "source" or "destination"."""

    role: str
    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(repr=False)

    @property
    def env_prefix(self) -> str:
        return f"{self.role.upper()}_POSTGRES_"

    @property
    def label(self) -> str:
        """`host/db`, the form the documented log lines use."""
        return f"{self.host}/{self.dbname}"


@dataclass(frozen=True)
class Settings:
    source: DatabaseSettings
    destination: DatabaseSettings
    wait_retries: int = 10
    wait_delay_seconds: float = 3.0
    connect_timeout_seconds: int = 5
    validation: ValidationLevel = ValidationLevel.FULL
    copy_ownership: bool = False
    log_level: str = "INFO"
    # Table streams at once in the parallel copy; 1 = always one stream.
    jobs: int = 2
    # Below this source database size (MB, pg_database_size) one stream is faster.
    parallel_min_mb: float = 64.0
    # Below this average per table (database size / tables), per-table work makes
    # one stream faster (docs/performance.md, "Many small tables").
    parallel_min_table_mb: float = 1.0
    progress_seconds: float = 5.0


# Variable name -> its default (None: required). tests/test_docs.py checks the
# documented configuration table, .env.example and docker-compose.yaml against it.
DEFAULTS: dict[str, str | None] = {
    "SOURCE_POSTGRES_HOST": "source_postgres",
    "SOURCE_POSTGRES_PORT": "5432",
    "SOURCE_POSTGRES_DB": "source_db",
    "SOURCE_POSTGRES_USER": "postgres",
    "SOURCE_POSTGRES_PASSWORD": None,  # required (or SOURCE_POSTGRES_PASSWORD_FILE)
    "DESTINATION_POSTGRES_HOST": "destination_postgres",
    "DESTINATION_POSTGRES_PORT": "5432",
    "DESTINATION_POSTGRES_DB": "destination_db",
    "DESTINATION_POSTGRES_USER": "postgres",
    "DESTINATION_POSTGRES_PASSWORD": None,
    "ELT_WAIT_RETRIES": "10",
    "ELT_WAIT_DELAY_SECONDS": "3",
    "ELT_CONNECT_TIMEOUT_SECONDS": "5",
    "ELT_VALIDATION": "full",
    "ELT_COPY_OWNERSHIP": "false",
    "ELT_LOG_LEVEL": "INFO",
    "ELT_JOBS": "auto",
    "ELT_PARALLEL_MIN_MB": "64",
    "ELT_PARALLEL_MIN_TABLE_MB": "1",
    "ELT_PROGRESS_SECONDS": "5",
}
# Accepted as alternatives to the passwords; not in DEFAULTS because they have none.
PASSWORD_FILE_VARIABLES = tuple(f"{side}_POSTGRES_PASSWORD_FILE" for side in SIDES)
ALL_VARIABLES = (*DEFAULTS, *PASSWORD_FILE_VARIABLES)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None:
        default = DEFAULTS[name]
        assert default is not None, name  # required variables are read by _password()
        return default
    value = value.strip()
    if not value:
        raise SettingsError(
            f"{name} is set but empty",
            hint=f"Set {name} to a value or unset it to use the default ({DEFAULTS[name]!r}).",
            variable=name,
        )
    return value


def _int(env: Mapping[str, str], name: str, *, minimum: int, maximum: int) -> int:
    raw = _get(env, name)
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise SettingsError(
            f"{name} must be a whole number from {minimum} to {maximum}, got {raw!r}",
            hint=f"Fix {name} in your environment or .env file.",
            variable=name,
        )
    return value


def _float(env: Mapping[str, str], name: str, *, minimum: float, unit: str = "seconds") -> float:
    raw = _get(env, name)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):  # also rejects NaN
        raise SettingsError(
            f"{name} must be a number of {unit} >= {minimum:g}, got {raw!r}",
            hint=f"Fix {name} in your environment or .env file.",
            variable=name,
        )
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = _get(env, name)
    value = raw.lower()
    if value not in choices:
        raise SettingsError(
            f"{name} must be one of {', '.join(choices)}, got {raw!r}",
            hint=f"Fix {name} in your environment or .env file.",
            variable=name,
        )
    return value


def _jobs(env: Mapping[str, str], cpu_count: int) -> int:
    """ELT_JOBS: `auto` (the usable CPUs, at least 2 and at most 8) or a number.

    Two workers already overlap one table's index build with the next table's
    copy on a 2-core machine; past 8, the disks are the limit, not the CPUs.
    """
    raw = _get(env, "ELT_JOBS")
    if raw.lower() == "auto":
        return max(2, min(8, cpu_count))
    value = int(raw) if raw.isdigit() else 0
    if not 1 <= value <= 64:
        raise SettingsError(
            f"ELT_JOBS must be auto or a whole number from 1 to 64, got {raw!r}",
            hint="Fix ELT_JOBS in your environment or .env file (1 = always one stream).",
            variable="ELT_JOBS",
        )
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    return _choice(env, name, tuple(sorted(_TRUE | _FALSE))) in _TRUE


def _password(env: Mapping[str, str], side: str) -> str | None:
    """`*_PASSWORD`, or the contents of `*_PASSWORD_FILE` (exclusive, like file_env)."""
    var = f"{side}_POSTGRES_PASSWORD"
    file_var = f"{var}_FILE"
    value, path = env.get(var), env.get(file_var)
    if value is not None and path is not None:
        raise SettingsError(
            f"Both {var} and {file_var} are set, but they are exclusive",
            hint=f"Unset one of {var} and {file_var}.",
            variable=var,
        )
    if path is not None:
        try:
            # Secrets files usually end with a newline that is not part of the password.
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SettingsError(
                f"{file_var} points to {path!r}, which cannot be read ({exc.strerror})",
                hint=f"Mount the secret file at that path or fix {file_var}.",
                variable=file_var,
            ) from None
    if value is None:
        raise SettingsError(
            f"{var} is not set",
            hint=f"Set {var} (or {file_var}); copy .env.example to .env for the defaults. "
            "An empty value means: connect without a password.",
            variable=var,
        )
    return value or None


def _database(env: Mapping[str, str], side: str) -> DatabaseSettings:
    prefix = f"{side}_POSTGRES_"
    return DatabaseSettings(
        role=side.lower(),
        host=_get(env, prefix + "HOST"),
        port=_int(env, prefix + "PORT", minimum=1, maximum=65535),
        dbname=_get(env, prefix + "DB"),
        user=_get(env, prefix + "USER"),
        password=_password(env, side),
    )


def same_database_error(message: str) -> SettingsError:
    """Refusal to copy a database onto itself (checked by name here, by identity after login)."""
    return SettingsError(
        message,
        hint="Point DESTINATION_POSTGRES_* at another database: the load replaces "
        "the destination's copies of the source's schemas.",
        variable="DESTINATION_POSTGRES_DB",
    )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and check every setting; raise SettingsError naming the first bad variable."""
    source = _database(env, "SOURCE")
    destination = _database(env, "DESTINATION")
    if (source.host, source.port, source.dbname) == (
        destination.host,
        destination.port,
        destination.dbname,
    ):
        raise same_database_error(
            f"Source and destination are the same database ({source.label}:{source.port})"
        )
    return Settings(
        source=source,
        destination=destination,
        wait_retries=_int(env, "ELT_WAIT_RETRIES", minimum=1, maximum=10_000),
        wait_delay_seconds=_float(env, "ELT_WAIT_DELAY_SECONDS", minimum=0),
        # libpq treats connect_timeout values below 2 as 2 seconds.
        connect_timeout_seconds=_int(env, "ELT_CONNECT_TIMEOUT_SECONDS", minimum=2, maximum=3600),
        validation=ValidationLevel(
            _choice(env, "ELT_VALIDATION", tuple(level.value for level in ValidationLevel))
        ),
        copy_ownership=_bool(env, "ELT_COPY_OWNERSHIP"),
        log_level=_choice(env, "ELT_LOG_LEVEL", tuple(x.lower() for x in _LOG_LEVELS)).upper(),
        jobs=_jobs(env, len(os.sched_getaffinity(0))),
        parallel_min_mb=_float(env, "ELT_PARALLEL_MIN_MB", minimum=0, unit="MB"),
        parallel_min_table_mb=_float(env, "ELT_PARALLEL_MIN_TABLE_MB", minimum=0, unit="MB"),
        progress_seconds=_float(env, "ELT_PROGRESS_SECONDS", minimum=0.1),
    )
