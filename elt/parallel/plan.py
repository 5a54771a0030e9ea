"""The plan of a parallel copy, made through a scratch database on the destination.

The source's schema is restored into the scratch database, its schemas are
renamed to their staging names, and it is dumped again: pg_dump itself then
writes every definition (defaults, views, constraints) for the staging names,
and nothing is rewritten by the job. The scratch database is dropped at once
(in the background: the staging schemas' creation waits for the drop).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from elt.config import DatabaseSettings, Settings, ValidationLevel
from elt.connect import Connection, connect, server_encoding
from elt.errors import ConnectionFailed
from elt.extract import copy_encoding
from elt.parallel.commands import (
    restore_env,
    schema_dump_argv,
    schema_restore_argv,
    staging_names,
)
from elt.parallel.in_memory import listing_text, run_in_memory
from elt.parallel.tables import CopyTable
from elt.parallel.tasks import Task, build_tasks, check_tasks
from elt.parallel.toc import (
    NotEligible,
    TocEntry,
    check_eligible,
    check_expression_code,
    parse_toc,
)
from elt.processes import child_env
from elt.replace import STAGING_MARKER
from elt.sql import read_sql
from elt.validate import RECORD_HASH_MIN_VERSION, TableFigures, digest_encoding, list_relations

if TYPE_CHECKING:
    from elt.parallel.staging import Coordinator

# The scratch database's public carries it until the restore: still there
# after, pg_dump wrote no comment for the source's public.
PUBLIC_COMMENT_MARKER = "elt: no comment written for public"


@dataclass
class Plan:
    archive: bytes  # the staging schema-only archive (definitions, no rows)
    staged: dict[str, str]  # source schema -> staging schema
    tables: list[CopyTable]
    tasks: list[Task]
    remainder: list[TocEntry]  # post-data entries restored after all tasks
    sequences: list[tuple[str, str, int, bool]]  # staging schema, name, value, is_called
    matviews: list[tuple[str, str]]  # staging names, refresh order
    encoding: str  # text-format COPY data travels in it (extract.copy_encoding)
    archive_encoding: str  # the destination database's: the staging archive's SQL is in it
    source_version: int
    destination_version: int
    validation: ValidationLevel = ValidationLevel.OFF
    record_hash: bool = False
    # validation_tables.sql rows by (source schema, table), per side
    source_listed: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    destination_listed: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict)
    # figures measured while copying, keyed like validate.collect's
    source_figures: dict[str, TableFigures] = field(default_factory=dict)
    destination_figures: dict[str, TableFigures] = field(default_factory=dict)
    # staging schema -> the comment it takes at the swap (the source schema's)
    comments: dict[str, str | None] = field(default_factory=dict)
    # build entries' SQL by dump ID, as pg_restore prints it (entries.py), from create_staging
    printed: dict[int, bytes] = field(default_factory=dict)

    def staged_ident(self, table: CopyTable) -> sql.Identifier:
        return sql.Identifier(self.staged[table.schema], table.name)

    @property
    def digest_encoding(self) -> str | None:
        return digest_encoding(self.encoding, self.archive_encoding)


@dataclass(frozen=True)
class StagingSchema:
    """What the scratch database yields: the staging archive and its catalog."""

    archive: bytes
    entries: list[TocEntry]
    post_data: list[TocEntry]
    catalog: dict[tuple[str, int], Mapping[str, Any]]  # staging_catalog.sql rows by (kind, oid)
    comments: dict[str, str | None]  # see _rename_to_staging


def make_plan(
    settings: Settings,
    *,
    coordinator: Coordinator,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
) -> Plan:
    """Plan the copy; NotEligible (nothing changed) for a source it cannot stage.

    The scratch database is made ready while the source's schema is dumped and
    checked (the clean-up drops it if the source is not eligible), and the
    snapshot is read while the scratch database restores and dumps."""
    staged = staging_names(schemas, coordinator.conn.info.backend_pid)
    versions = (snapshot.info.server_version, coordinator.conn.info.server_version)
    cursor = snapshot.cursor(row_factory=dict_row)
    extras = cursor.execute(read_sql("source_extras.sql"), {"schemas": schemas}).fetchall()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="elt-plan") as pool:
        source_archive, conn, unwritten = _source_and_scratch(
            settings,
            pool,
            coordinator,
            snapshot=snapshot,
            snapshot_id=snapshot_id,
            schemas=schemas,
            tables=tables,
            extras=extras,
        )
        reads = pool.submit(_snapshot_reads, snapshot, extras, staged, schemas)
        with conn:
            staging = _staging_schema(
                settings,
                pool,
                conn=conn,
                unwritten=unwritten,
                source_archive=source_archive,
                staged=staged,
            )
        coordinator.drop_scratch_soon()
        sequences, source_listed = reads.result()
    tasks, remainder = build_tasks(tables, staging.post_data, staging.catalog, staged)
    encoding = server_encoding(snapshot)
    if settings.validation is not ValidationLevel.OFF:
        tasks += check_tasks(tables)
    return Plan(
        staging.archive,
        staged,
        tables,
        tasks,
        remainder,
        sequences,
        _matviews_to_refresh(staging, extras, staged),
        copy_encoding(encoding, coordinator.encoding),
        coordinator.encoding,
        *versions,
        validation=settings.validation,
        record_hash=min(versions) >= RECORD_HASH_MIN_VERSION,
        source_listed=source_listed,
        comments=staging.comments,
    )


def _source_and_scratch(
    settings: Settings,
    pool: ThreadPoolExecutor,
    coordinator: Coordinator,
    *,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
    extras: list[dict[str, Any]],
) -> tuple[bytes, Connection, str | None]:
    """The source's schema-only archive, checked (NotEligible), and a session in
    a new scratch database with public's comment there (_mark_public)."""
    # The scratch database is made ready meanwhile, unless the source has an
    # extension or large objects ('E', 'L'): check_eligible refuses those, and
    # the database would only be created to be dropped.
    likely = not any(row["relkind"] in {"E", "L"} for row in extras)
    scratch = pool.submit(_open_scratch, settings, coordinator) if likely else None
    try:
        source_archive = _checked_source(
            settings,
            pool,
            snapshot=snapshot,
            snapshot_id=snapshot_id,
            schemas=schemas,
            tables=tables,
            extras=extras,
        )
        conn, unwritten = (
            _open_scratch(settings, coordinator) if scratch is None else scratch.result()
        )
    except BaseException:
        if scratch is not None:
            _abandon(scratch)
        raise
    return source_archive, conn, unwritten


def _checked_source(
    settings: Settings,
    pool: ThreadPoolExecutor,
    *,
    snapshot: Connection,
    snapshot_id: str,
    schemas: list[str],
    tables: list[CopyTable],
    extras: list[dict[str, Any]],
) -> bytes:
    """The source's schema-only archive; NotEligible for a source the staging
    design cannot copy."""
    env_source = child_env(settings.source, settings.connect_timeout_seconds)
    # Only large tables' rows go through psql: a missing psql fails every run
    # here, as a missing pg_dump does, not only a run that has a large table.
    psql = pool.submit(
        run_in_memory, ["psql", "--version"], child_env(None, settings.connect_timeout_seconds), b""
    )
    try:
        source_archive = run_in_memory(
            schema_dump_argv(settings.source, snapshot_id, []), env_source, b"", side="source"
        )
    except Exception:
        psql.result()  # a missing psql is reported first, as when it ran first
        raise
    psql.result()
    check_eligible(_listed(source_archive, env_source), extras, tables, schemas)
    check_expression_code(snapshot, schemas)
    return source_archive


def _open_scratch(settings: Settings, coordinator: Coordinator) -> tuple[Connection, str | None]:
    """A new scratch database and a session in it; public's comment there (_mark_public)."""
    # A killed run's scratch database (replace.remove_leftovers has removed its
    # staging schemas) goes first.
    coordinator.drop_scratch()
    coordinator.create_scratch()
    conn = _scratch_session(_scratch_settings(settings.destination, coordinator.scratch), settings)
    try:
        # Nothing written there needs to last: commits need not wait for the disk.
        conn.execute(read_sql("synchronous_commit_off.sql"))
        return conn, _mark_public(conn)
    except BaseException:
        conn.close()
        raise


def _abandon(scratch: Future[tuple[Connection, str | None]]) -> None:
    """Wait for _open_scratch, no longer needed, and close its session; the
    clean-up (staging.clean_up) drops the database."""
    with contextlib.suppress(Exception):
        scratch.result()[0].close()


def _snapshot_reads(
    snapshot: Connection,
    extras: Sequence[Mapping[str, Any]],
    staged: dict[str, str],
    schemas: list[str],
) -> tuple[list[tuple[str, str, int, bool]], dict[tuple[str, str], tuple[object, ...]]]:
    """The sequences' values and validation_tables.sql's rows, in the snapshot."""
    sequences = _sequence_values(snapshot, extras, staged)
    return sequences, {(str(r[0]), str(r[1])): r for r in list_relations(snapshot, schemas)}


def _staging_schema(
    settings: Settings,
    pool: ThreadPoolExecutor,
    *,
    conn: Connection,
    unwritten: str | None,
    source_archive: bytes,
    staged: dict[str, str],
) -> StagingSchema:
    """The source's schema under its staging names, by way of the scratch database
    (`conn`: a session there, `unwritten`: see _rename_to_staging)."""
    env = child_env(settings.destination, settings.connect_timeout_seconds)
    scratch = _scratch_settings(settings.destination, conn.info.dbname)
    restore = schema_restore_argv(
        settings.destination, scratch.dbname, copy_ownership=settings.copy_ownership
    )
    run_in_memory(
        restore, restore_env(settings.destination, settings.connect_timeout_seconds), source_archive
    )
    comments = _rename_to_staging(conn, staged, unwritten)
    archive = run_in_memory(schema_dump_argv(scratch, None, list(staged.values())), env, b"")
    listed_post_data = pool.submit(_listed, archive, env, "--section=post-data")
    entries = _listed(archive, env)
    post_ids = {e.dump_id for e in listed_post_data.result()}
    post_data = [e for e in entries if e.dump_id in post_ids]
    catalog = _staging_catalog(conn, entries, post_data)
    return StagingSchema(archive, entries, post_data, catalog, comments)


def _listed(archive: bytes, env: dict[str, str], *options: str) -> list[TocEntry]:
    """The archive's entries, as pg_restore --list names them."""
    return parse_toc(listing_text(run_in_memory(["pg_restore", "--list", *options], env, archive)))


def _scratch_settings(destination: DatabaseSettings, dbname: str) -> DatabaseSettings:
    """The destination's settings, for the scratch database."""
    d = destination
    return DatabaseSettings("destination", d.host, d.port, dbname, d.user, d.password)


def _scratch_session(scratch: DatabaseSettings, settings: Settings) -> Connection:
    try:
        return connect(scratch, settings, autocommit=True)
    except ConnectionFailed as exc:  # pg_hba.conf may allow destination_db only
        raise NotEligible(
            f"DESTINATION_POSTGRES_USER cannot log in to the scratch database "
            f"{scratch.dbname} ({' '.join(exc.stderr_tail)[:200]})"
        ) from None


def _mark_public(conn: Connection) -> str | None:
    """Put a marker on public, which tells whether pg_dump writes a comment for the
    source's (only its owner may comment: before PostgreSQL 15, a superuser).
    Returns public's comment before the restore."""
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            sql.SQL("COMMENT ON SCHEMA public IS {}").format(sql.Literal(PUBLIC_COMMENT_MARKER))
        )
    comments = _schema_comments(conn, ["public"])
    return comments.get("public")


def _schema_comments(conn: Connection, schemas: Sequence[str]) -> dict[str, str | None]:
    cursor = conn.cursor(row_factory=dict_row)
    rows = cursor.execute(read_sql("schema_comments.sql"), {"schemas": list(schemas)})
    return {str(r["nspname"]): None if r["comment"] is None else str(r["comment"]) for r in rows}


def _staging_catalog(
    conn: Connection, entries: list[TocEntry], post_data: list[TocEntry]
) -> dict[tuple[str, int], Mapping[str, Any]]:
    """elt/sql/staging_catalog.sql rows by (kind, oid), read in the scratch database."""
    conn.execute(read_sql("empty_search_path.sql"))  # see staging_catalog.sql: index_def
    cursor = conn.cursor(row_factory=dict_row)
    rows = cursor.execute(
        read_sql("staging_catalog.sql"),
        {
            "constraints": [e.oid for e in post_data if e.kind.endswith("CONSTRAINT")],
            "indexes": [e.oid for e in post_data if e.kind == "INDEX"],
            "matviews": [e.oid for e in entries if e.kind == "MATERIALIZED VIEW"],
        },
    ).fetchall()
    return {(str(r["kind"]), int(str(r["oid"]))): r for r in rows}


def _rename_to_staging(
    conn: Connection, staged: dict[str, str], unwritten: str | None
) -> dict[str, str | None]:
    """Rename the scratch copy's schemas to their staging names; return their comments.

    `unwritten`: public's comment before the restore. If public still has it,
    pg_dump wrote none for the source's (initdb's stock comment), and the swap
    keeps the destination's, as the one-stream load does: None for public then,
    and '' (which removes a comment) where pg_dump wrote that it has none."""
    with conn.transaction():
        for schema, staging in staged.items():
            conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(schema), sql.Identifier(staging)
                )
            )
        # Each staging schema is created with the job's marker, the proof
        # that a leftover is the job's own; the swap puts these back.
        comments = _schema_comments(conn, list(staged.values()))
        for staging in staged.values():
            conn.execute(
                sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                    sql.Identifier(staging), sql.Literal(STAGING_MARKER)
                )
            )
    if "public" in staged:
        written = comments.get(staged["public"])
        comments[staged["public"]] = (
            None if written == unwritten else "" if written is None else written
        )
    return comments


def _matviews_to_refresh(
    staging: StagingSchema, extras: Sequence[Mapping[str, Any]], staged: dict[str, str]
) -> list[tuple[str, str]]:
    """The staging names of the materialized views populated in the source, in
    pg_dump's order (one may read another)."""
    populated = {(str(r["nspname"]), str(r["relname"])) for r in extras if r["relkind"] == "m"}
    unstaged = {v: k for k, v in staged.items()}
    matviews = []
    for e in staging.entries:
        row = staging.catalog.get(("m", e.oid)) if e.kind == "MATERIALIZED VIEW" else None
        if row is not None and (unstaged[str(row["nspname"])], str(row["relname"])) in populated:
            matviews.append((str(row["nspname"]), str(row["relname"])))
    return matviews


def _sequence_values(
    snapshot: Connection, extras: Sequence[Mapping[str, Any]], staged: dict[str, str]
) -> list[tuple[str, str, int, bool]]:
    """Each sequence's state in the snapshot, under its staging schema."""
    query = sql.SQL(read_sql("sequence_state.sql"))
    cursor = snapshot.cursor(row_factory=dict_row)
    sequences = []
    for row in extras:
        if row["relkind"] == "S":
            schema, name = str(row["nspname"]), str(row["relname"])
            state = cursor.execute(query.format(sequence=sql.Identifier(schema, name))).fetchone()
            assert state is not None
            value, is_called = int(str(state["last_value"])), bool(state["is_called"])
            sequences.append((staged[schema], name, value, is_called))
    return sequences
