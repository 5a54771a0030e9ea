"""The job's SQL, one statement or script per file, read by name."""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent


def read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")
