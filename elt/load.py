"""Load: pg_restore turns the archive into SQL, psql applies it in one transaction.

    pg_dump -Fc | pg_restore --single-transaction -f - | psql -f prepare_destination.sql -f -

psql runs prepare_destination.sql first (lock, safety check, drop the
destination's copies of the source schemas) and then the restore script, all
in one transaction that the script's final COMMIT ends. Any error stops psql
(ON_ERROR_STOP=1; without it psql carries on and exits 0), and a stream that
ends early never reaches that COMMIT: either way the destination is left as
it was. Re-running replaces the same schemas again, so it is idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence

from elt.config import DatabaseSettings
from elt.processes import connection_args
from elt.sql import LOCK_KEY, SQL_DIR

PREPARE_SQL = SQL_DIR / "prepare_destination.sql"


def schemas_literal(schemas: list[str]) -> str:
    """A text[] literal for a psql variable such as :'schemas' (each element
    double-quoted and escaped)."""
    quoted = ('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in schemas)
    return "{" + ",".join(quoted) + "}"


def pg_restore_argv(*, copy_ownership: bool) -> list[str]:
    """pg_restore reading the archive on stdin and writing SQL to stdout.

    --clean --if-exists only matters for what the schema drop cannot reach:
    large objects (the script unlinks the source's OIDs before re-creating
    them) and database-wide objects such as publications and event triggers.
    --clean alone would leave stale objects and fail on dependencies, which is
    why prepare_destination.sql replaces whole schemas first.
    """
    argv = [
        "pg_restore",
        "--format=custom",
        "--single-transaction",
        "--clean",
        "--if-exists",
        "--no-tablespaces",
        "--file=-",
    ]
    if not copy_ownership:
        # Owners and grants name roles that the destination may not have.
        argv += ["--no-owner", "--no-privileges"]
    return argv


def psql_load_argv(
    db: DatabaseSettings, schemas: list[str], recreated: Sequence[str] = ()
) -> list[str]:
    """psql applying prepare_destination.sql, then the restore script from stdin.

    `recreated`: the database-wide objects the restore script re-creates
    (elt/sql/dependents.sql), which may go with the replaced schemas.
    """
    return [
        "psql",
        "-X",  # ignore ~/.psqlrc
        "-q",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        *connection_args(db),
        "-v",
        f"schemas={schemas_literal(schemas)}",
        "-v",
        f"recreated={schemas_literal(list(recreated))}",
        "-v",
        f"lock_key={LOCK_KEY}",
        "-f",
        str(PREPARE_SQL),
        "-f",
        "-",
    ]
