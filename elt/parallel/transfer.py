"""One table's rows: psql | (splice) | psql, rows never passing through Python objects.

Relaying with the driver costs a Python round per row (COPY sends one message
per row), CPU that the servers need (docs/performance.md). The kernel moves
the bytes here (os.splice), and the count it returns is the progress figure.
"""

from __future__ import annotations

import os
import subprocess

from elt.config import Settings
from elt.parallel.commands import (
    ROWS_MARKER,
    copy_in_argv,
    copy_out_argv,
    copy_session_options,
)
from elt.parallel.plan import Plan
from elt.parallel.tables import CopyTable
from elt.processes import OutputTail, ToolFailed, child_env, start_tool
from elt.progress import Progress

Process = subprocess.Popen[bytes]


def start_pair(
    settings: Settings, plan: Plan, snapshot_id: str, table: CopyTable, started: list[Process]
) -> tuple[Process, Process]:
    """The psql writing the table's rows and the psql loading them, each added to
    `started` as soon as it runs."""
    timeout = settings.connect_timeout_seconds
    env_out = child_env(settings.source, timeout)
    env_out["PGOPTIONS"] = copy_session_options(plan.source_version, destination=False)
    env_in = child_env(settings.destination, timeout)
    env_in["PGOPTIONS"] = copy_session_options(plan.destination_version, destination=True)
    for env in (env_out, env_in):
        env["PGCLIENTENCODING"] = plan.encoding  # text rows travel in the source's encoding
    pipe = subprocess.PIPE
    argv = copy_out_argv(settings.source, snapshot_id, table)
    out = start_tool(argv, env_out, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe)
    started.append(out)
    argv = copy_in_argv(settings.destination, plan.staged[table.schema], table)
    into = start_tool(argv, env_in, stdin=pipe, stdout=pipe, stderr=pipe)
    started.append(into)
    return out, into


def relay(
    progress: Progress, table: CopyTable, out: Process, into: Process
) -> tuple[list[OutputTail], bool]:
    """Move the bytes until the source side ends.

    Returns the three output tails, and whether the loading side went away
    first (then the source psql is stopped at once: it would otherwise read
    the rest of the table from the server before noticing).
    """
    assert out.stdout is not None
    assert into.stdin is not None
    streams = (out.stderr, into.stderr, into.stdout)
    tails = [OutputTail(s) for s in streams if s is not None]
    for tail in tails:
        tail.start()
    loader_gone = False
    try:
        while moved := os.splice(out.stdout.fileno(), into.stdin.fileno(), 1 << 20):
            progress.add_bytes(table.label, moved)
    except BrokenPipeError:
        loader_gone = True  # psql loading it has exited: its exit code says why
        out.kill()
    finally:
        out.stdout.close()
        into.stdin.close()
    out.wait()
    into.wait()
    for tail in tails:
        tail.join()
    return tails, loader_gone


def rows_loaded(out: Process, into: Process, tails: list[OutputTail], *, loader_gone: bool) -> int:
    """The row count the loading psql printed, or the failure of either side.

    Whoever failed first is to blame: a source cut short mid-row also makes the
    loading side fail ("unexpected EOF"), and a loading side that failed made
    relay() stop the source.
    """
    if out.returncode != 0 and not loader_gone:
        raise ToolFailed("psql", out.returncode, tails[0].lines, side="source")
    if into.returncode != 0:
        raise ToolFailed("psql", into.returncode, tails[1].lines, side="destination")
    rows = next(
        (int(line[len(ROWS_MARKER) :]) for line in tails[2].lines if line.startswith(ROWS_MARKER)),
        None,
    )
    if rows is None:
        raise ToolFailed(
            "psql", 0, ["psql did not report the number of rows loaded"], side="destination"
        )
    return rows
