"""The chain of tasks that set the length of a parallel run's copy phase.

At ELT_LOG_LEVEL=DEBUG the job logs each task of the parallel copy when it
ends, with how long it took: "Table copied" (a table's rows, INFO),
"Built" (an index or key) and "Measured" (a table's validation figures on one
side). Each task ran from its line's timestamp minus its duration to that
timestamp. The log names neither the worker nor the task's dependencies, so
they are derived: a task's predecessor is the task on one of its tables (from
the source's catalog: an index's table, a foreign key's two) that ended last
before it started (within TOLERANCE): its table's rows, the index a key
attaches, a build whose lock it waited for. The gap between the two is time the
task waited for a worker (or the scheduler's own time).

Two bounds on the copy phase follow (the classic ones of a schedule): the
heaviest such chain (its tasks' seconds: no number of workers could finish
sooner) and all the tasks' seconds over the workers (no chain could).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from benchmark.phases import when

# The parallel path's copy phase, between these two lines (benchmark/phases.py).
COPY_STARTED = "Starting data extraction from source database"
COPY_ENDED = "Data extraction completed successfully"
# A task's own start is taken a little after the line that freed it was
# written (the scheduler hands it out after the log line): this much slack.
TOLERANCE = 0.02

_TOC = re.compile(r"^\d+; \d+ \d+ (?P<what>.+) \S+$")
_KEY_INDEX = re.compile(r"^CREATE UNIQUE INDEX (?P<name>\S+) ON (?P<table>\S+)")
_KEY_ATTACH = re.compile(r'ADD CONSTRAINT (?P<name>"[^"]+"|\S+) (?P<kind>PRIMARY KEY|UNIQUE) USING')


@dataclass(frozen=True)
class Span:
    task: str
    start: float  # seconds since the epoch
    end: float
    tables: frozenset[str] = frozenset()  # bare table names, without the schema

    @property
    def seconds(self) -> float:
        return self.end - self.start


# An index's or constraint's name: the tables it is on (a foreign key: both).
ObjectTables = dict[str, set[str]]


def _bare(name: str) -> str:
    """`shop.events`, `"elt_staging_1"."events"`: `events`."""
    return name.rpartition(".")[2].strip('"')


def build_tables(entry: str, objects: ObjectTables) -> frozenset[str]:
    """The tables a "Built" line's task was on (see describe_build)."""
    text = " ".join(entry.split())
    toc = _TOC.match(text)
    if toc:
        words = toc.group("what").split()
        found = set(objects.get(words[-1], set()))
        if words[0] in ("CONSTRAINT", "FK") and len(words) >= 4:
            found.add(words[-2])  # CONSTRAINT schema table name
        return frozenset(found)
    index = _KEY_INDEX.match(text)
    if index:
        return frozenset({_bare(index.group("table")), *objects.get(index.group("name"), ())})
    attach = _KEY_ATTACH.search(text)
    if attach:
        return frozenset(objects.get(attach.group("name").strip('"'), ()))
    return frozenset()


def describe_build(entry: str) -> str:
    """A short name for what a "Built" line built: a TOC line (`215; 1259 16450
    INDEX shop events_gin postgres`: its kind and names) or a key's statement."""
    text = " ".join(entry.split())
    toc = _TOC.match(text)
    if toc:
        return toc.group("what")
    index = _KEY_INDEX.match(text)
    if index:
        return f"key {index.group('name')}, step 1: its unique index on {index.group('table')}"
    attach = _KEY_ATTACH.search(text)
    if attach:
        name = attach.group("name").strip('"')
        return f"key {name}, step 2: ADD CONSTRAINT {attach.group('kind')} USING INDEX"
    return text if len(text) <= 80 else text[:77] + "..."


def copy_tasks(logs: list[dict[str, Any]], objects: ObjectTables | None = None) -> list[Span]:
    """Every task of a parallel run, from its DEBUG log lines; [] on the
    streamed path or at INFO (no "Built" nor "Measured" line). `objects`:
    the source's indexes and constraints, by name (see build_tables)."""
    if not any(x.get("message") in ("Built", "Measured") for x in logs):
        return []
    spans = []
    for line in logs:
        message, seconds = line.get("message"), line.get("duration_seconds")
        if seconds is None:
            continue
        if message == "Table copied":
            task, tables = f"rows of {line.get('table')}", {_bare(str(line.get("table")))}
        elif message == "Built":
            entry = str(line.get("entry", ""))
            task, tables = describe_build(entry), set(build_tables(entry, objects or {}))
        elif message == "Measured":
            side, _, table = str(line.get("task", "")).partition(":")
            task = f"validation figures of {table}, {side.removeprefix('check_')}"
            tables = {_bare(table)}
        else:
            continue
        end = when(line)
        spans.append(Span(task, end - float(seconds), end, frozenset(tables)))
    return spans


def _previous(spans: list[Span], current: Span) -> Span | None:
    """The task on one of its tables that ended last before it started."""
    before = [
        s
        for s in spans
        if s.tables & current.tables
        and s.end <= current.start + TOLERANCE
        and s.start < current.start
    ]
    return max(before, key=lambda s: s.end, default=None)


def critical_path(spans: list[Span], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The heaviest chain of tasks (see the module docstring), oldest first, in
    seconds from the copy phase's start: {copy_s, chain: [{task, start_s,
    end_s, seconds, wait_s}], chain_s, tail_s, after, work_s, workers}. wait_s
    is the gap since the previous link's end (the first's: since the copy
    phase's start); tail_s from the last link's end to the copy phase's end,
    and `after` the tasks that ended in it; work_s all the tasks' seconds."""
    marks = {
        x.get("message"): when(x) for x in logs if x.get("message") in (COPY_STARTED, COPY_ENDED)
    }
    origin = marks.get(COPY_STARTED, min(s.start for s in spans))
    finish = marks.get(COPY_ENDED, max(s.end for s in spans))
    previous: dict[Span, Span | None] = {}
    weight: dict[Span, float] = {}
    for span in sorted(spans, key=lambda s: s.start):  # a predecessor starts earlier
        found = previous[span] = _previous(spans, span)
        weight[span] = span.seconds + (weight[found] if found is not None else 0.0)
    last: Span | None = max(spans, key=lambda s: (weight[s], s.end))
    chain = []
    while last is not None:
        chain.append(last)
        last = previous[last]
    chain.reverse()
    links, previous_end = [], origin
    for span in chain:
        links.append(
            {
                "task": span.task,
                "start_s": span.start - origin,
                "end_s": span.end - origin,
                "seconds": span.seconds,
                "wait_s": span.start - previous_end,
            }
        )
        previous_end = span.end
    workers = next(
        (x.get("workers") for x in logs if x.get("message") == "Parallel copy workers sized"), None
    )
    # The tasks still running when the chain ended: what the copy phase waited
    # for after it.
    after = sorted((s for s in spans if s.end > previous_end + TOLERANCE), key=lambda s: s.end)
    return {
        "after": [
            {"task": s.task, "start_s": s.start - origin, "end_s": s.end - origin} for s in after
        ],
        "copy_s": finish - origin,
        "chain": links,
        "chain_s": sum(s.seconds for s in chain),
        "tail_s": finish - previous_end,
        "work_s": sum(s.seconds for s in spans),
        "workers": workers,
    }


def format_critical_path(found: dict[str, Any]) -> list[str]:
    """One line a link: start, end and length in seconds from the copy's start."""
    lines = [
        f"    {'start s':>7} {'end s':>7} {'task s':>7} {'gap s':>6}  task",
    ]
    for link in found["chain"]:
        lines.append(
            f"    {link['start_s']:7.3f} {link['end_s']:7.3f} {link['seconds']:7.3f} "
            f"{link['wait_s']:6.3f}  {link['task']}"
        )
    lines.append(
        f"    the chain's tasks {found['chain_s']:.3f} s, gaps "
        f"{sum(link['wait_s'] for link in found['chain']):.3f} s, then {found['tail_s']:.3f} s "
        f"to the copy phase's end; the copy phase {found['copy_s']:.3f} s"
    )
    for link in found.get("after", []):
        took = link["end_s"] - link["start_s"]
        lines.append(
            f"    {link['start_s']:7.3f} {link['end_s']:7.3f} {took:7.3f}  after  {link['task']}"
        )
    workers = found.get("workers")
    if workers:
        lines.append(
            f"    all tasks {found['work_s']:.3f} s of work over {workers} workers: at least "
            f"{found['work_s'] / workers:.3f} s; the heaviest chain: at least "
            f"{found['chain_s']:.3f} s"
        )
    return lines
