"""Server limits a run must fit: the shared lock table, and connections.

Locks. A transaction keeps every lock it takes until it ends, and all the
server's sessions share one lock table: max_locks_per_transaction locks per
server process and prepared transaction (elt/sql/lock_table.sql). pg_dump
locks every table it dumps at once; a load in one transaction locks every
object it creates or drops. The job counts those locks first
(elt/sql/lock_needs.sql). Up to the table's size it goes ahead. Beyond
it, PostgreSQL may still find room in spare shared memory, so the job tries:
it takes that many advisory locks for a moment (elt/sql/lock_probe.sql). With
room, it goes ahead with a WARNING; without, it refuses before copying
anything, naming the figure and the setting to raise, instead of failing
after the whole copy with "out of shared memory".

Connections. connection_room() is what the current role may still open, by
the checks the server makes at login (elt/sql/connection_room.sql); the
parallel copy sizes its workers to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row, dict_row

from elt.connect import Connection, fetch_one
from elt.errors import EltError, ExtractError, LoadError
from elt.sql import LOCK_KEY, read_sql


def fast_path_slots(server_version: int, per_transaction: int) -> int:
    """Weak table locks (ACCESS SHARE, say) a session keeps outside the shared
    table: 16 before PostgreSQL 18; from 18 on, max_locks_per_transaction's
    next power of two, in groups of 16, at most 1024 groups."""
    if server_version < 180000:
        return 16
    power = 1 << max(per_transaction - 1, 0).bit_length()
    return 16 * max(min(power // 16, 1024), 1)


@dataclass(frozen=True)
class LockTable:
    per_transaction: int  # max_locks_per_transaction
    slots: int  # server processes and prepared transactions it is sized for
    fast_path: int

    @property
    def size(self) -> int:
        return self.per_transaction * self.slots

    def setting_for(self, locks: int) -> int:
        """The max_locks_per_transaction whose table holds `locks`."""
        return max(-(-locks // self.slots), self.per_transaction + 1)


def read_lock_table(conn: Connection) -> LockTable:
    row = fetch_one(conn, read_sql("lock_table.sql"), dict_row)
    per_transaction = int(row["per_transaction"])
    return LockTable(
        per_transaction,
        int(row["slots"]),
        fast_path_slots(conn.info.server_version, per_transaction),
    )


@dataclass(frozen=True)
class Relations:
    """elt/sql/lock_needs.sql, read on one side."""

    tables: int
    created: int
    existing: int


def count_relations(conn: Connection, schemas: list[str]) -> Relations:
    # In a savepoint rolled back at once: the locks the query takes on a dozen
    # catalogs would otherwise stay with the source snapshot until it ends.
    with conn.transaction(force_rollback=True):
        return fetch_one(
            conn, read_sql("lock_needs.sql"), class_row(Relations), {"schemas": schemas}
        )


def has_room(conn: Connection, locks: int) -> bool:
    """Whether the shared lock table takes `locks` more locks now (rolled back at once:
    a savepoint inside the caller's transaction, else a transaction of its own)."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(read_sql("lock_probe.sql"), {"locks": locks, "lock_key": LOCK_KEY})
    except psycopg.errors.OutOfMemory:  # "out of shared memory"
        return False
    return True


def ensure_room(
    conn: Connection,
    table: LockTable,
    needed: int,
    *,
    side: str,
    why: str,
    logger: logging.Logger,
) -> None:
    """Go ahead, warn, or refuse (ExtractError on the source, LoadError on the
    destination), as the module docstring says. `why` says what takes the locks."""
    if needed <= table.size:
        logger.debug(
            "Lock table has room",
            extra={"side": side, "locks_needed": needed, "lock_table_size": table.size},
        )
        return
    figures: dict[str, object] = {
        "locks_needed": needed,
        "lock_table_size": table.size,
        "max_locks_per_transaction": table.per_transaction,
    }
    raise_to = (
        f"Raise max_locks_per_transaction on the {side} server to at least "
        f"{table.setting_for(needed)} (it takes a restart)"
    )
    sizing = (
        f"the lock table holds {table.size} (max_locks_per_transaction="
        f"{table.per_transaction} times {table.slots} server processes and prepared "
        "transactions), shared by all sessions"
    )
    if has_room(conn, needed):
        logger.warning(
            f"The {side} server's lock table is smaller than this run needs",
            extra={
                **figures,
                "reason": f"{why}; {sizing}. The run fits now, in spare shared memory "
                "that other sessions also draw on",
                "hint": f"{raise_to}.",
            },
        )
        return
    error: type[EltError] = ExtractError if side == "source" else LoadError
    raise error(
        f"The {side} server's lock table has no room for the {needed} locks this run "
        f"needs at once ({why}); {sizing}. Nothing was copied or changed",
        hint=f"{raise_to}, then run again.",
        locks_needed=needed,
        lock_table_size=table.size,
        max_locks_per_transaction=table.per_transaction,
    )


def source_locks(
    conn: Connection, schemas: list[str], logger: logging.Logger
) -> tuple[LockTable, Relations]:
    """Refuse a source whose tables pg_dump cannot lock at once; call it before the
    job locks them itself. The job's own source sessions take no lock beyond those
    but for a moment: validation measures in statements that take at most
    digests.BATCH_LOCKS locks (the default max_locks_per_transaction) each, or
    one table's, in a savepoint that it rolls back at once."""
    table = read_lock_table(conn)
    relations = count_relations(conn, schemas)
    ensure_room(
        conn,
        table,
        max(relations.tables - table.fast_path, 0),
        side="source",
        why=f"pg_dump locks each of its {relations.tables} tables until it ends",
        logger=logger,
    )
    return table, relations


def destination_locks(
    conn: Connection,
    schemas: list[str],
    source: Relations,
    *,
    parallel: bool,
    logger: logging.Logger,
) -> None:
    """Refuse a load whose one transaction cannot lock what it creates and drops.

    One stream: one transaction creates the source's relations and drops the
    destination's copies. Parallel: the scratch database's restore creates them
    in one transaction, and the swap drops the copies in another.
    """
    existing = count_relations(conn, schemas).existing
    if parallel:
        needed = max(source.created, existing)
        why = (
            f"the parallel copy creates {source.created} relations in one transaction "
            f"and its swap drops {existing} in another"
        )
    else:
        needed = source.created + existing
        why = f"the load creates {source.created} relations and drops {existing} in one transaction"
    ensure_room(conn, read_lock_table(conn), needed, side="destination", why=why, logger=logger)


@dataclass(frozen=True)
class ConnectionRoom:
    free: int  # connections the current role may still open
    max_connections: int
    open: int  # client sessions open on the server


def connection_room(conn: Connection) -> ConnectionRoom:
    return fetch_one(conn, read_sql("connection_room.sql"), class_row(ConnectionRoom))
