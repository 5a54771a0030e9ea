"""The SQL of the index and key entries the workers build, as pg_restore prints it.

One pg_restore per kind of entry prints them all at plan time, instead of one
per build task: it prints entries in the order of its list, and with
--verbose each one's header names its dump ID, which is where its output is
cut. Each piece gets the output's preamble and trailer, so that it reads as
pg_restore prints that entry alone (tests/test_parallel_entries.py).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from elt.config import Settings
from elt.errors import LoadError
from elt.parallel.commands import entry_sql_argv
from elt.parallel.in_memory import run_in_memory
from elt.parallel.toc import TocEntry
from elt.processes import child_env

# The header line --verbose writes before each entry's SQL.
_HEADER = re.compile(rb"^--\n-- TOC entry (\d+) \(class \d+ OID \d+\)\n", re.MULTILINE)
# --verbose's last comment, after the last entry.
_COMPLETED = re.compile(rb"^-- Completed on [^\n]*\n", re.MULTILINE)


def printed_entries(
    archive: bytes, entries: list[TocEntry], settings: Settings
) -> dict[int, bytes]:
    """Each entry's SQL by dump ID, in the archive's encoding; an entry whose SQL
    could not be told apart with certainty is left out (its task then runs a
    pg_restore of its own, entry_sql)."""
    # A foreign key is printed without the `SET default_tablespace` the others
    # share: each kind separately gets the preamble it has alone. The two
    # pg_restore run at once.
    groups = [
        [e for e in entries if (e.kind == "FK CONSTRAINT") == foreign] for foreign in (False, True)
    ]
    groups = [group for group in groups if group]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="elt-print") as pool:
        outputs = list(pool.map(lambda group: _print(archive, group, settings), groups))
    printed: dict[int, bytes] = {}
    for group, out in zip(groups, outputs, strict=True):
        printed |= split_printed(out, [e.dump_id for e in group])
    return printed


def split_printed(out: bytes, dump_ids: list[int]) -> dict[int, bytes]:
    """pg_restore --verbose's output for `dump_ids`, cut into each entry's SQL.

    Nothing ({}) unless the headers are exactly those of `dump_ids`, in order:
    a header-like line inside a definition (a string literal can hold one)
    then makes one too many, and the output is not cut at all.
    """
    headers = list(_HEADER.finditer(out))
    completed = list(_COMPLETED.finditer(out))
    if [int(h.group(1)) for h in headers] != dump_ids or len(completed) != 1:
        return {}
    end = completed[0]
    if end.start() < headers[-1].start():
        return {}
    preamble, trailer = out[: headers[0].start()], out[end.end() :]
    stops = [h.start() for h in headers[1:]] + [end.start()]
    return {
        dump_id: preamble + out[header.start() : stop] + trailer
        for dump_id, header, stop in zip(dump_ids, headers, stops, strict=True)
    }


def entry_sql(archive: bytes, entries: list[TocEntry], settings: Settings, encoding: str) -> str:
    """The SQL pg_restore writes for these entries (one pg_restore: see printed_entries)."""
    return runnable_sql(_print(archive, entries, settings, verbose=False), encoding)


def runnable_sql(printed: bytes, encoding: str) -> str:
    """pg_restore's output, minus psql's \\restrict lines.

    Those two lines (PostgreSQL 17.6/15.14+) are psql meta-commands that keep a
    crafted dump from running other meta-commands; the driver runs no
    meta-commands at all, so they are dropped. Any other backslash line is
    unexpected and refused.
    """
    lines = []
    for line in printed.decode(encoding).splitlines():
        if line.startswith(("\\restrict ", "\\unrestrict ")):
            continue
        if line.startswith("\\"):
            raise LoadError(
                "pg_restore wrote a psql meta-command the parallel copy cannot run",
                hint="Set ELT_JOBS=1 to use the streamed path, and report this.",
                stderr_tail=[line[:200]],
            )
        lines.append(line)
    return "\n".join(lines)


def _print(
    archive: bytes, entries: list[TocEntry], settings: Settings, *, verbose: bool = True
) -> bytes:
    return run_in_memory(
        entry_sql_argv(copy_ownership=settings.copy_ownership, verbose=verbose),
        child_env(None, settings.connect_timeout_seconds),
        archive,
        "".join(e.line + "\n" for e in entries),
    )
