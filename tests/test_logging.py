"""Tier 0: the job's log lines (elt/logger_config.py), no database.

Passwords are scrubbed from every field of a log record, while names that
merely contain a short password stay readable.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO, SCRIPT
from elt.logger_config import RedactSecrets

LONG_SECRET = "correct horse battery staple"
# (the password, a value logged, what the log line must show)
REDACTION_CASES = {
    "a table named like a short password": (
        "secret", 'ERROR:  relation "public.secret" does not exist', None,
    ),
    "a database named with a short password": ("app", "127.0.0.1/bench_app", None),
    "a long password, anywhere": (
        LONG_SECRET, f"could not connect: {LONG_SECRET}!", "could not connect: ********!",
    ),
    "a connection string": (
        "secret", "host=h password=secret dbname=d", "host=h password=******** dbname=d",
    ),
    "a quoted connection string value": (
        "it's", "password='it\\'s' dbname=d", "password=******** dbname=d",
    ),
    "PGPASSWORD in an environment dump": ("app", "PGPASSWORD=app PGUSER=u", "PGPASSWORD=******** PGUSER=u"),
    "a URI": ("app", "postgresql://u:app@h:5432/bench_app", "postgresql://u:********@h:5432/bench_app"),
    "a double-quoted value with spaces": (
        "pa ss word", 'PGPASSWORD="pa ss word" PGUSER=u', "PGPASSWORD=******** PGUSER=u",
    ),
    "a URI with a port and an @ in its path": ("app", "http://host:5432/path@x", None),
}  # fmt: skip


@pytest.mark.parametrize(
    ("password", "value", "shown"), REDACTION_CASES.values(), ids=REDACTION_CASES.keys()
)
def test_redaction_scrubs_passwords_and_keeps_names(
    password: str, value: str, shown: str | None
) -> None:
    record = logging.makeLogRecord({"msg": value, "stderr_tail": [value], "table": value})
    assert RedactSecrets([password]).filter(record)
    expected = value if shown is None else shown
    fields = vars(record)
    assert (fields["msg"], fields["stderr_tail"], fields["table"]) == (
        expected,
        [expected],
        expected,
    )


def _without_site_packages(tmp_path: Path) -> tuple[list[str], Path]:
    # Without site-packages (-S) psycopg cannot be imported, as in a broken image.
    return [sys.executable, "-S", str(SCRIPT)], REPO


def _with_a_broken_module_of_ours(tmp_path: Path) -> tuple[list[str], Path]:
    # A copy of the package in which one module imports one that does not exist.
    shutil.copytree(REPO / "elt", tmp_path / "elt", ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "elt" / "progress.py").open("a", encoding="utf-8") as module:
        module.write("\nimport elt.no_such_module  # noqa\n")
    return [sys.executable, str(tmp_path / "elt" / "elt_script.py")], tmp_path


@pytest.mark.parametrize(
    ("setup", "missing", "hint"),
    [
        (_without_site_packages, "'psycopg'", "pip install -r elt/requirements.txt"),
        (_with_a_broken_module_of_ours, "'elt.no_such_module'", "This is a bug in the ELT job"),
    ],
    ids=["a package missing", "a module of ours broken"],
)
def test_an_import_failure_still_gives_one_json_error_line(
    tmp_path: Path,
    setup: Callable[[Path], tuple[list[str], Path]],
    missing: str,
    hint: str,
) -> None:
    argv, cwd = setup(tmp_path)
    proc = subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,  # a safety net, not a measurement
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == ""
    (line,) = proc.stdout.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert record["message"] == "ELT pipeline failed unexpectedly"
    assert record["error"] == f"ModuleNotFoundError: No module named {missing}"
    assert hint in record["hint"]
    assert record["exit_code"] == 1
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None
