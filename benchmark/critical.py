"""The chain of tasks that set the length of a parallel run's copy phase.

At ELT_LOG_LEVEL=DEBUG the job logs each task of the parallel copy when it
ends, with how long it took: "Table copied" (a table's rows, INFO),
"Built" (an index or key) and "Measured" (a table's validation figures on one
side). Each task ran from its line's timestamp minus its duration to that
timestamp. The log names neither the worker nor the task's dependencies, so the
chain is derived: from the task that ended last, step back each time to the task
that ended last before it started (within TOLERANCE). That task is what let it
start: a dependency (its table's rows, the index a key attaches), or a worker
coming free. The gap between the two is the scheduler's and the worker's own
time (taking the task, opening a session, preparing the SQL).
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


def copy_tasks(logs: list[dict[str, Any]]) -> list[Span]:
    """Every task of a parallel run, from its DEBUG log lines; [] on the
    streamed path or at INFO (no "Built" nor "Measured" line)."""
    if not any(x.get("message") in ("Built", "Measured") for x in logs):
        return []
    spans = []
    for line in logs:
        message, seconds = line.get("message"), line.get("duration_seconds")
        if seconds is None:
            continue
        if message == "Table copied":
            task = f"rows of {line.get('table')}"
        elif message == "Built":
            task = describe_build(str(line.get("entry", "")))
        elif message == "Measured":
            side, _, table = str(line.get("task", "")).partition(":")
            task = f"validation figures of {table}, {side.removeprefix('check_')}"
        else:
            continue
        end = when(line)
        spans.append(Span(task, end - float(seconds), end))
    return spans


def _previous(spans: list[Span], current: Span, chain: list[Span]) -> Span | None:
    before = [
        s
        for s in spans
        if s not in chain and s.end <= current.start + TOLERANCE and s.start < current.start
    ]
    return max(before, key=lambda s: s.end, default=None)


def critical_path(spans: list[Span], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The chain that ends with the last task, oldest first, in seconds from the
    copy phase's start: {copy_s, chain: [{task, start_s, end_s, seconds,
    wait_s}], tail_s}. wait_s is the gap since the previous link's end (or
    since the copy phase's start); tail_s from the last link's end to the copy
    phase's end."""
    marks = {
        x.get("message"): when(x) for x in logs if x.get("message") in (COPY_STARTED, COPY_ENDED)
    }
    origin = marks.get(COPY_STARTED, min(s.start for s in spans))
    finish = marks.get(COPY_ENDED, max(s.end for s in spans))
    chain = [max(spans, key=lambda s: s.end)]
    while (found := _previous(spans, chain[-1], chain)) is not None:
        chain.append(found)
    chain.reverse()
    links, previous_end = [], origin
    for span in chain:
        links.append(
            {
                "task": span.task,
                "start_s": span.start - origin,
                "end_s": span.end - origin,
                "seconds": span.end - span.start,
                "wait_s": span.start - previous_end,
            }
        )
        previous_end = span.end
    return {"copy_s": finish - origin, "chain": links, "tail_s": finish - previous_end}


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
    busy = sum(link["seconds"] for link in found["chain"])
    lines.append(
        f"    the chain's tasks {busy:.3f} s, gaps "
        f"{sum(link['wait_s'] for link in found['chain']):.3f} s, then {found['tail_s']:.3f} s "
        f"to the copy phase's end; the copy phase {found['copy_s']:.3f} s"
    )
    return lines
