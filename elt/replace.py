"""What replacing the copied schemas may touch on the destination, checked
before either copy path starts (and again in the load's own transaction):

* objects outside the copied schemas that depend on them (elt/sql/dependents.sql):
  the load refuses and names them, rather than dropping them with the schemas;
* staging schemas a killed parallel run left behind: removed, but only those
  that carry the job's marker (elt/sql/staging_leftovers.sql), so that a
  user's own schema named elt_staging_... is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from elt.connect import Connection, fetch_all, fetch_one
from elt.errors import LoadError
from elt.failures import busy_error, failed
from elt.sql import LOCK_KEY, read_sql

STAGING_PREFIX = "elt_staging_"
# The comment each staging schema carries from its creation until the swap
# gives it the source schema's own: proof that the job created it.
STAGING_MARKER = "elt_staging: a staging schema of the ELT job, removed by its next run"
HINT = (
    "Drop them before the run and re-create them after it, or keep them in a schema of "
    "their own that does not reference the copied schemas."
)


def _text(value: object) -> str:
    # A SQL_ASCII database hands text over as bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _dependents(
    conn: Connection, schemas: Sequence[str], recreated: Sequence[str]
) -> tuple[str, list[str], list[str]]:
    """dependents.sql in the connection's current transaction: the blockers,
    the database-wide dependents, the views that the load re-creates."""
    conn.execute(
        read_sql("dependents_settings.sql"),
        {"schemas": list(schemas), "recreated": list(recreated)},
    )
    row = fetch_one(conn, read_sql("dependents.sql"), dict_row)
    database_wide, views = row["database_wide"], row["view_names"]
    assert isinstance(database_wide, list)
    assert isinstance(views, list)
    return _text(row["blockers"]), [_text(o) for o in database_wide], [_text(v) for v in views]


def database_wide_dependents(snapshot: Connection, schemas: Sequence[str]) -> list[str]:
    """The source's database-wide objects (event triggers, casts, extensions, ...)
    that depend on its schemas: the one-stream load drops and re-creates them."""
    return _dependents(snapshot, schemas, ())[1]


def _missing_privileges(conn: Connection) -> list[tuple[str, str, list[str]]]:
    """recreate_privileges.sql after dependents.sql, in the same transaction:
    (privilege, the GRANT that gives it, the views that need it)."""
    missing = []
    for row in fetch_all(conn, read_sql("recreate_privileges.sql"), dict_row):
        views = row["views"]
        assert isinstance(views, list)
        missing.append(
            (_text(row["privilege"]), _text(row["grant_sql"]), [_text(v) for v in views])
        )
    return missing


def check_dependents(
    session: Connection,
    schemas: Sequence[str],
    recreated: Sequence[str],
    logger: logging.Logger,
) -> None:
    """Refuse, before any copying, when destination objects outside the copied
    schemas depend on them (the load checks again in its own transaction).
    Views that use them are not in the way: the load re-creates them, if
    DESTINATION_POSTGRES_USER may (temporary objects, CREATE on their schemas,
    their owners' privileges): refused here otherwise."""
    try:
        with session.transaction(force_rollback=True):
            blockers, _, views = _dependents(session, schemas, recreated)
            missing = _missing_privileges(session)
    except psycopg.Error as exc:
        raise failed(
            "destination",
            "Checking what depends on the copied schemas failed; nothing was changed",
            exc,
            hint="Check that the destination is up, then run again.",
        ) from None
    if blockers != "none":
        raise LoadError(
            "Destination objects outside the copied schemas depend on objects this load "
            f"replaces: {blockers}; nothing was changed",
            hint=HINT,
        )
    if missing:
        needs = "; ".join(f"{what} (for {', '.join(names)})" for what, _, names in missing)
        grants = "; ".join(grant for _, grant, _ in missing)
        raise LoadError(
            "The load re-creates views in other schemas that use the copied schemas, and "
            f"DESTINATION_POSTGRES_USER lacks what that needs: {needs}; nothing was changed",
            hint=f"Grant it ({grants}), or drop those views before the run and re-create "
            "them after it.",
        )
    if views:
        logger.info(
            "Views in other schemas use the copied schemas; the load re-creates them",
            extra={"views": views},
        )


def marked_staging(session: Connection, names: Sequence[str] | None = None) -> list[str]:
    """The staging schemas the job created (all, or those among `names`)."""
    rows = fetch_all(
        session,
        read_sql("staging_leftovers.sql"),
        dict_row,
        {
            "prefix": STAGING_PREFIX,
            "marker": STAGING_MARKER,
            "names": None if names is None else list(names),
        },
    )
    return [str(row["schema"]) for row in rows]


def _lock_and_drop(session: Connection, names: Sequence[str] | None) -> list[str]:
    """In the caller's transaction: take the load's lock (or refuse: another
    load is running), then drop the job's own staging schemas among `names`."""
    if not fetch_one(session, read_sql("load_lock.sql"), dict_row, {"lock_key": LOCK_KEY})[
        "locked"
    ]:
        raise busy_error()
    marked = marked_staging(session, names)
    drop = sql.SQL(read_sql("drop_staging_schema.sql"))
    for name in marked:
        session.execute(drop.format(schema=sql.Identifier(name)))
    return marked


def drop_marked(session: Connection, names: Sequence[str]) -> None:
    """Drop those of `names` that are the job's own staging schemas."""
    with session.transaction():
        _lock_and_drop(session, names)


def remove_leftovers(session: Connection, logger: logging.Logger) -> None:
    """Staging schemas of a run that was killed outright, on either copy path
    (the run's lock keeps other runs of this version out meanwhile)."""
    try:
        with session.transaction():
            names = _lock_and_drop(session, None)
    except psycopg.Error as exc:
        raise failed(
            "destination",
            "Removing the staging schemas of an interrupted run failed; nothing else was changed",
            exc,
            hint="Read stderr_tail, fix the cause (a lock, say), then run again.",
        ) from None
    if names:
        logger.warning(
            "Removing staging schemas left by an interrupted run", extra={"schemas": names}
        )
