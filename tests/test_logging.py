"""Tier 0: the job's log lines (elt/logger_config.py), no database.

Passwords are scrubbed from every field of a log record, while names that
merely contain a short password stay readable.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime

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


def test_a_missing_package_still_gives_one_json_error_line() -> None:
    # Without site-packages (-S) the job's imports fail, as in a broken image.
    proc = subprocess.run(
        [sys.executable, "-S", str(SCRIPT)],
        cwd=REPO,
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
    assert record["error"].startswith("ModuleNotFoundError: No module named ")
    assert "pip install -r elt/requirements.txt" in record["hint"]
    assert record["exit_code"] == 1
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None
