"""What the benchmark samples while a method runs, and what it reads from the job's log.

Memory: the total RSS of a method's process tree, sampled (TreeSampler). The
job: its copy path, where its time went and how often it logged progress, from
its JSON log lines (job_breakdown).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
from pathlib import Path
from typing import Any

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# --- memory: sampling the whole tree ------------------------------------------


class TreeSampler(threading.Thread):
    """Samples the total RSS of a process tree every INTERVAL seconds.

    Sampled, not exact: a peak shorter than the interval can be missed, and
    shared pages (libc, the Python runtime) are counted once per process, as
    summing VmRSS does. The RSS is read from /proc/PID/statm (its second field
    is the same counter as VmRSS in /proc/PID/status, in pages, and cheaper to
    parse). This kernel has no /proc/PID/task/TID/children, so each sample lists
    /proc and reads the parent pid only of processes it has not seen before; on
    a 2-core machine the sampler must stay cheap, since it competes with the
    method it measures. PostgreSQL's server processes are not descendants and
    are not counted: this measures the client side only.
    """

    INTERVAL = 0.02

    def __init__(self, root: int, *, include_root: bool) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.include_root = include_root
        self.peak_total = 0
        self.peak_single = 0
        self.samples = 0
        self._done = threading.Event()
        self._parents: dict[int, int] = {}

    def run(self) -> None:
        while True:
            self.sample()
            if self._done.wait(self.INTERVAL):
                return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)

    @staticmethod
    def _read_ppid(pid: int) -> int | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # exited meanwhile
            return None
        # The command name is in parentheses and may contain spaces.
        return int(stat.rsplit(")", 1)[1].split()[1])

    @staticmethod
    def _read_rss(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            return 0

    def sample(self) -> None:
        alive = {int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()}
        for pid in list(self._parents):
            if pid not in alive:  # forget the dead: their pid may be reused
                del self._parents[pid]
        for pid in alive - self._parents.keys():
            ppid = self._read_ppid(pid)
            if ppid is not None:
                self._parents[pid] = ppid
        children: dict[int, list[int]] = {}
        for pid, ppid in self._parents.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        measured = [self._read_rss(pid) for pid in tree if self.include_root or pid != self.root]
        self.peak_total = max(self.peak_total, sum(measured))
        self.peak_single = max([self.peak_single, *measured])
        self.samples += 1


# --- the job's log ------------------------------------------------------------

EXTRACTION_STARTED = "Starting data extraction from source database"
COPY_PROGRESS = "Copy progress"
LOAD_COMPLETED = "Data load completed successfully"


def _when(line: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))


def _progress_figures(
    logs: list[dict[str, Any]], start: dict[str, Any] | None, load: dict[str, Any] | None
) -> dict[str, Any]:
    """The job's progress lines, and the longest gap between them in seconds.

    The gap is over consecutive marks: the start of the extraction, every "Copy
    progress" line, the end of the load (the parallel path builds indexes and
    swaps after its last progress line, so that stretch counts too). None when
    there is no progress line at all (older versions of the streamed path logged none).
    """
    progress = [x for x in logs if x.get("message") == COPY_PROGRESS]
    out: dict[str, Any] = {
        "progress_lines": len(progress),
        "table_copied_lines": sum(1 for x in logs if x.get("message") == "Table copied"),
        "progress_max_gap_s": None,
        "progress_max_gap_at": None,
    }
    if start is not None and load is not None:
        out["extraction_to_load_s"] = (_when(load) - _when(start)).total_seconds()
    if progress:
        marks = [("start of extraction", start)] if start is not None else []
        marks += [(f"progress line {i}", line) for i, line in enumerate(progress, 1)]
        if load is not None:
            marks.append(("data load completed", load))
        gaps = [
            ((_when(b) - _when(a)).total_seconds(), f"{a_name} -> {b_name}")
            for (a_name, a), (b_name, b) in itertools.pairwise(marks)
        ]
        if gaps:
            out["progress_max_gap_s"], out["progress_max_gap_at"] = max(gaps)
    return out


def job_breakdown(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Copy path, copy and validation seconds, and progress lines from the job's JSON log."""

    def first(message: str) -> dict[str, Any] | None:
        return next((x for x in logs if x.get("message") == message), None)

    planned = first("Parallel copy planned")
    not_used = first("Parallel copy not used")
    start = first(EXTRACTION_STARTED)
    load = first(LOAD_COMPLETED)
    summary = first("Validation summary")
    done = first("ELT pipeline completed successfully")
    out: dict[str, Any] = {
        "elt_jobs": (first("Configuration loaded from environment") or {}).get("jobs"),
        "parallel_not_used": None if not_used is None else str(not_used.get("reason")),
    }
    if done is not None:
        out["copy_path"] = done.get("copy_path")
    elif start is not None:  # a failed run: the path it was on
        out["copy_path"] = "parallel" if planned is not None else "streamed"
    if load is not None:
        # The load's own duration. Streamed: from starting pg_dump to psql's exit.
        # Parallel: planning, the workers' copy, the index builds and the swap.
        out["copy_s"] = float(load["duration_seconds"])
        if summary is not None:
            # What validation adds after the load. Streamed: both sides' figures
            # (the source's in the snapshot transaction). Parallel: the tables'
            # figures were taken during the copy, so only the remainder.
            out["validation_s"] = (_when(summary) - _when(load)).total_seconds()
        elif first("Validation skipped") is not None:
            out["validation_s"] = 0.0
    out["validation_during_copy"] = out.get("copy_path") == "parallel" and summary is not None
    tables = [x for x in logs if x.get("message") in ("Table validated", "Table mismatch")]
    # duration_ms per table is source + destination digest time, whenever it ran.
    out["table_digest_s"] = sum(int(x.get("duration_ms", 0)) for x in tables) / 1000
    out.update(_progress_figures(logs, start, load))
    if done is not None:
        out["job_reported_s"] = float(done["duration_seconds"])
        # The job's own figures: its bytes are COPY data as streamed (None
        # where the job did not count them), its MB 10**6 bytes, unlike this
        # script's.
        for key in ("tables", "rows", "bytes", "mb_per_second"):
            out[f"job_{key}"] = done.get(key)
    warnings = [str(x.get("message")) for x in logs if x.get("level") == "WARNING"]
    if warnings:
        out["warnings"] = warnings
    return out
