"""Tier 0: settings, no database. Every bad value names its variable and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from elt.config import DEFAULTS, Settings, ValidationLevel, load_settings
from elt.errors import SettingsError
from pgserver import coverage_env

REPO = Path(__file__).resolve().parent.parent

BASE = {"SOURCE_POSTGRES_PASSWORD": "s3cret", "DESTINATION_POSTGRES_PASSWORD": "other"}


def test_defaults_match_the_compose_stack() -> None:
    settings = load_settings(BASE)
    assert settings.source.label == "source_postgres/source_db"
    assert settings.destination.label == "destination_postgres/destination_db"
    assert (settings.source.port, settings.destination.port) == (5432, 5432)
    assert (settings.source.user, settings.destination.user) == ("postgres", "postgres")
    assert settings.source.password == "s3cret"
    assert settings.validation is ValidationLevel.FULL
    assert settings.copy_ownership is False
    assert (settings.wait_retries, settings.wait_delay_seconds) == (10, 3.0)


def test_settings_are_frozen_and_hide_passwords() -> None:
    settings = load_settings(BASE)
    assert "s3cret" not in repr(settings)
    with pytest.raises(AttributeError):
        settings.wait_retries = 1  # type: ignore[misc]


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            **BASE,
            "SOURCE_POSTGRES_PORT": " 5437 ",
            "ELT_WAIT_RETRIES": "2",
            "ELT_WAIT_DELAY_SECONDS": "0.5",
            "ELT_VALIDATION": "COUNTS",
            "ELT_COPY_OWNERSHIP": "yes",
            "ELT_LOG_LEVEL": "debug",
        }
    )
    assert settings.source.port == 5437
    assert settings.wait_retries == 2
    assert settings.wait_delay_seconds == 0.5
    assert settings.validation is ValidationLevel.COUNTS
    assert settings.copy_ownership is True
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("value", "cpus", "jobs"),
    [
        ("auto", 1, 2),
        ("auto", 2, 2),
        ("auto", 6, 6),
        ("auto", 64, 8),
        ("AUTO", 4, 4),
        ("1", 8, 1),
        ("12", 2, 12),
    ],
)
def test_jobs_setting(value: str, cpus: int, jobs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    assert load_settings({**BASE, "ELT_JOBS": value}).jobs == jobs


def test_parallel_settings_are_parsed() -> None:
    settings = load_settings(
        {
            **BASE,
            "ELT_PARALLEL_MIN_MB": "0.5",
            "ELT_PARALLEL_MIN_TABLE_MB": "0.25",
            "ELT_PROGRESS_SECONDS": "2",
        }
    )
    assert (settings.parallel_min_mb, settings.parallel_min_table_mb) == (0.5, 0.25)
    assert settings.progress_seconds == 2.0
    defaults = load_settings(BASE)
    assert (defaults.parallel_min_mb, defaults.parallel_min_table_mb) == (64.0, 1.0)


def test_empty_password_means_no_password() -> None:
    settings = load_settings({**BASE, "SOURCE_POSTGRES_PASSWORD": ""})
    assert settings.source.password is None


# (variable, bad value, text the message must contain)
BAD_VALUES = [
    ("SOURCE_POSTGRES_PORT", "", "empty"),
    ("SOURCE_POSTGRES_PORT", "abc", "whole number"),
    ("DESTINATION_POSTGRES_PORT", "0", "whole number"),
    ("DESTINATION_POSTGRES_PORT", "65536", "whole number"),
    ("DESTINATION_POSTGRES_PORT", "54 32", "whole number"),
    ("SOURCE_POSTGRES_HOST", "  ", "empty"),
    ("DESTINATION_POSTGRES_DB", "", "empty"),
    ("SOURCE_POSTGRES_USER", "", "empty"),
    ("ELT_WAIT_RETRIES", "0", "whole number"),
    ("ELT_WAIT_RETRIES", "many", "whole number"),
    ("ELT_WAIT_DELAY_SECONDS", "-1", "seconds"),
    ("ELT_WAIT_DELAY_SECONDS", "nan", "seconds"),
    ("ELT_WAIT_DELAY_SECONDS", "inf", "seconds"),
    ("ELT_CONNECT_TIMEOUT_SECONDS", "1", "whole number"),
    ("ELT_VALIDATION", "maybe", "off, counts, full"),
    ("ELT_COPY_OWNERSHIP", "sometimes", "one of"),
    ("ELT_LOG_LEVEL", "loud", "one of"),
    ("ELT_JOBS", "0", "auto or a whole number"),
    ("ELT_JOBS", "65", "auto or a whole number"),
    ("ELT_JOBS", "-2", "auto or a whole number"),
    ("ELT_JOBS", "many", "auto or a whole number"),
    ("ELT_PARALLEL_MIN_MB", "-1", "MB"),
    ("ELT_PARALLEL_MIN_MB", "lots", "MB"),
    ("ELT_PARALLEL_MIN_TABLE_MB", "-0.5", "MB"),
    ("ELT_PROGRESS_SECONDS", "0", "seconds"),
]


@pytest.mark.parametrize(("variable", "value", "text"), BAD_VALUES)
def test_bad_values_name_the_variable(variable: str, value: str, text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, variable: value})
    assert caught.value.context["variable"] == variable
    assert variable in caught.value.message
    assert text in caught.value.message
    assert variable in caught.value.hint


@pytest.mark.parametrize("side", ["SOURCE", "DESTINATION"])
def test_missing_password_is_an_error(side: str) -> None:
    env = dict(BASE)
    del env[f"{side}_POSTGRES_PASSWORD"]
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.context["variable"] == f"{side}_POSTGRES_PASSWORD"
    assert f"{side}_POSTGRES_PASSWORD_FILE" in caught.value.hint


def test_password_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from a file: '\" \\ ü\n", encoding="utf-8")
    env = {"DESTINATION_POSTGRES_PASSWORD": "x", "SOURCE_POSTGRES_PASSWORD_FILE": str(secret)}
    assert load_settings(env).source.password == "from a file: '\" \\ ü"


def test_password_file_that_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    env = {"DESTINATION_POSTGRES_PASSWORD": "x", "SOURCE_POSTGRES_PASSWORD_FILE": str(missing)}
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.context["variable"] == "SOURCE_POSTGRES_PASSWORD_FILE"
    assert str(missing) in caught.value.message


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x", encoding="utf-8")
    with pytest.raises(SettingsError, match="exclusive"):
        load_settings({**BASE, "SOURCE_POSTGRES_PASSWORD_FILE": str(secret)})


def test_source_and_destination_must_differ() -> None:
    env = {
        **BASE,
        "DESTINATION_POSTGRES_HOST": "source_postgres",
        "DESTINATION_POSTGRES_DB": "source_db",
    }
    with pytest.raises(SettingsError, match="same database"):
        load_settings(env)


def test_every_variable_has_a_default_or_is_a_password() -> None:
    required = {name for name, default in DEFAULTS.items() if default is None}
    assert required == {"SOURCE_POSTGRES_PASSWORD", "DESTINATION_POSTGRES_PASSWORD"}
    assert isinstance(load_settings(BASE), Settings)


def test_the_script_reports_a_bad_setting_as_one_json_line_and_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "elt" / "elt_script.py")],
        env={**BASE, "SOURCE_POSTGRES_PORT": "fivefour", "PATH": "/usr/bin:/bin", **coverage_env()},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == ""
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["message"] == "Invalid configuration"
    assert errors[0]["variable"] == "SOURCE_POSTGRES_PORT"
    assert errors[0]["exit_code"] == 2
    assert "s3cret" not in proc.stdout
