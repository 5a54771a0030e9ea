"""The job's SQL, one statement or script per file, read by name."""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent


def read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


# The key of the job's advisory locks on a destination: "ELT" in ASCII
# (0x454C54). Passed to the SQL as a parameter (psycopg: %(lock_key)s; psql:
# :lock_key; inside a DO block: the setting elt.lock_key).
LOCK_KEY = 4541524
