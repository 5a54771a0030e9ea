"""The report: the machine, the source, one table of the methods, ratios, the job's breakdown
(its phases among them), and the sizes mode's summary table.

summarize() and headline_ratios() compute (medians, maxima, the job's time
relative to each method); the print_* functions print, and the JSON document
written by --json holds the same figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.cpu_report import cpu_summary, print_cpu
from benchmark.critical import format_critical_path
from benchmark.methods import JOB_METHODS
from benchmark.phases import format_phases, median_run
from benchmark.runner import RunResult
from benchmark.sampling import TreeSampler
from benchmark.source import MB, SCHEMA, TABLES, SourceInfo
from pgserver import PgServer


def machine_header(server: PgServer) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    version = str(server.query("postgres", "SHOW server_version")[0][0])
    return {
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "mem_total_gib": round(total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "postgresql": version,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg": os.getloadavg(),
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def summarize(
    results: Sequence[RunResult], methods: Sequence[str], source_bytes: int
) -> list[dict[str, Any]]:
    """One row a method: its runs, the median wall time of the good ones, maxima of memory."""
    size_mb = source_bytes / MB
    rows = []
    for method in methods:
        runs = [r for r in results if r.method == method]
        good = [r for r in runs if r.ok]
        wall = statistics.median(r.wall_s for r in good) if good else None
        row: dict[str, Any] = {
            "method": method,
            "runs_ok": f"{len(good)}/{len(runs)}",
            "wall_s": wall,
            "walls": [round(r.wall_s, 2) for r in runs],
            "mb_per_s": size_mb / wall if wall else None,
            "peak_proc_mb": max((r.peak_proc_mb for r in runs), default=None),
            "sampled_peak_proc_mb": max((r.sampled_peak_proc_mb for r in runs), default=None),
            "peak_tree_mb": max((r.peak_tree_mb for r in runs), default=None),
            "rows_match": all(r.rows_match for r in runs) if runs else None,
            "errors": sorted({r.error for r in runs if r.error}),
            "cpu": cpu_summary(good),
        }
        if method in JOB_METHODS:
            row.update(_job_summary(good))
        rows.append(row)
    job_wall = next((r["wall_s"] for r in rows if r["method"] == "job"), None)
    for row in rows:
        row["job_ratio"] = job_wall / row["wall_s"] if job_wall and row["wall_s"] else None
    return rows


def _job_summary(good: list[RunResult]) -> dict[str, Any]:
    """The job breakdown over a job method's successful runs: medians, and maxima for gaps."""

    def values(key: str) -> list[Any]:
        return [r.details[key] for r in good if r.details.get(key) is not None]

    def median(key: str) -> float | None:
        found = values(key)
        return statistics.median(found) if found else None

    out: dict[str, Any] = {
        key: median(key)
        for key in (
            "copy_s",
            "validation_s",
            "table_digest_s",
            "extraction_to_load_s",
            "job_mb_per_second",
        )
    }
    # Where the wall time went, in the run of median wall time (benchmark/phases.py).
    middle = median_run(good)
    out["phases_run"] = None if middle is None else middle.run
    out["phases"] = [] if middle is None else middle.details.get("phases") or []
    out["critical_path"] = None if middle is None else middle.details.get("critical_path")
    # Normally one path and one setting for every run; "/" joins them if not.
    out["copy_path"] = "/".join(sorted({str(v) for v in values("copy_path")})) or None
    out["elt_jobs"] = "/".join(sorted({str(v) for v in values("elt_jobs")})) or None
    out["parallel_not_used"] = sorted(set(values("parallel_not_used")))
    out["validation_during_copy"] = any(values("validation_during_copy"))
    out["table_copied_lines"] = values("table_copied_lines")  # per run
    out["progress_lines"] = values("progress_lines")  # per run
    # The worst run's longest gap: the claim is "a progress line at least every N s".
    worst = max(good, key=lambda r: r.details.get("progress_max_gap_s") or -1.0, default=None)
    if worst is not None and worst.details.get("progress_max_gap_s") is not None:
        out["progress_max_gap_s"] = worst.details["progress_max_gap_s"]
        out["progress_max_gap_at"] = f"run {worst.run}: {worst.details['progress_max_gap_at']}"
    else:
        out["progress_max_gap_s"] = out["progress_max_gap_at"] = None
    return out


def headline_ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """job / best of (fd_j2, fc_pipe), job / documented and job / job_stream, where run.

    A ratio is None when a method was run but had no successful run.
    """
    wall = {r["method"]: r["wall_s"] for r in rows}
    job = wall.get("job")
    out: dict[str, Any] = {}

    def ratio(other: float | None) -> float | None:
        return job / other if job and other else None

    if "job" not in wall:
        return out
    if "fd_j2" in wall and "fc_pipe" in wall:
        tools = {m: wall[m] for m in ("fd_j2", "fc_pipe")}
        timed = {m: w for m, w in tools.items() if w}
        best = min(timed, key=lambda m: timed[m]) if len(timed) == len(tools) else None
        out["best_of_fd_j2_fc_pipe"] = best
        out["job_over_best_of_fd_j2_fc_pipe"] = ratio(timed[best]) if best else None
    if "documented" in wall:
        out["job_over_documented"] = ratio(wall["documented"])
    if "job_stream" in wall:
        out["job_over_job_stream"] = ratio(wall["job_stream"])
    return out


def print_report(
    *,
    header: dict[str, Any],
    settings: str,
    args: argparse.Namespace,
    source: SourceInfo,
    results: Sequence[RunResult],
    ratios: dict[str, Any],
    rows: list[dict[str, Any]],
) -> None:
    _print_setting(header, settings, args, source)
    _print_table(args, rows)
    _print_ratios(ratios)
    print_cpu(rows)
    print(
        "peak proc MB: largest single client process, rusage ru_maxrss (exact, but never "
        "below the ~13 MB Python process that started it); sampled: the same from /proc "
        "samples;\npeak tree MB*: sum of VmRSS over the method's process tree, sampled every "
        f"{TreeSampler.INTERVAL * 1000:.0f} ms. Maxima over runs. PostgreSQL server "
        "processes are not counted."
    )
    for row in rows:
        if row["method"] in JOB_METHODS and row.get("copy_s") is not None:
            print_job_breakdown(row)
    _print_notes(results)


def _print_setting(
    header: dict[str, Any], settings: str, args: argparse.Namespace, src: SourceInfo
) -> None:
    """The machine, the servers' settings and the source's tables."""
    print(
        f"machine: {header['host']}  nproc={header['nproc']} "
        f"(usable {header['usable_cpus']})  mem={header['mem_total_gib']} GiB  "
        f"PostgreSQL {header['postgresql']}  kernel {header['kernel']}  {header['date']}  "
        f"loadavg at start {' '.join(f'{x:.2f}' for x in header['loadavg'])}"
    )
    print(f"servers: {settings}")
    size = (
        f"source: {src.size_bytes / MB:.1f} MB (pg_database_size; empty database "
        f"{src.empty_bytes / MB:.1f} MB)"
    )
    if src.kind != "shop":
        print(f"{size}, {src.description}, built in {src.build_seconds:.1f} s")
        print(
            f"  {len(src.rows)} tables in schema {src.schema}: {sum(src.rows.values()):,} rows, "
            f"{sum(src.table_bytes.values()) / MB:.1f} MB with their indexes"
        )
        return
    print(
        f"{size}, requested {args.size_mb:g} MB, scale {src.units}, built in "
        f"{src.build_seconds:.1f} s"
    )
    user_bytes = sum(src.table_bytes.values()) or 1
    for table in TABLES:
        print(
            f"  {SCHEMA}.{table:<12} {src.rows[table]:>11,} rows  "
            f"{src.table_bytes[table] / MB:>8.1f} MB  "
            f"({100 * src.table_bytes[table] / user_bytes:4.1f}% of table bytes)"
        )


def _print_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{args.runs} run(s) per method, interleaved, after {args.warmup} untimed "
        "warm-up run(s); wall = median of successful runs; "
        f"job/x = job's wall time / method's; validation = {args.validation}"
    )
    head = (
        f"{'method':<11} {'ok':>5} {'wall s':>8} {'MB/s':>7} {'job/x':>6} "
        f"{'peak proc MB':>12} {'sampled':>7} {'peak tree MB*':>13} {'rows':>5}  all runs (s)"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        match = "-" if row["rows_match"] is None else ("yes" if row["rows_match"] else "NO")
        print(
            f"{row['method']:<11} {row['runs_ok']:>5} {_fmt(row['wall_s']):>8} "
            f"{_fmt(row['mb_per_s'], '.1f'):>7} {_fmt(row['job_ratio']):>6} "
            f"{_fmt(row['peak_proc_mb'], '.1f'):>12} "
            f"{_fmt(row['sampled_peak_proc_mb'], '.1f'):>7} {_fmt(row['peak_tree_mb'], '.1f'):>13} "
            f"{match:>5}  {', '.join(f'{w:.2f}' for w in row['walls'])}"
        )


def _print_ratios(ratios: dict[str, Any]) -> None:
    if "job_over_best_of_fd_j2_fc_pipe" in ratios:
        best = ratios["best_of_fd_j2_fc_pipe"]
        print(
            f"job / best of (fd_j2, fc_pipe) = {_fmt(ratios['job_over_best_of_fd_j2_fc_pipe'])}"
            + (f" (best: {best})" if best else "")
        )
    if "job_over_documented" in ratios:
        print(f"job / documented = {_fmt(ratios['job_over_documented'])}")
    if "job_over_job_stream" in ratios:
        print(
            f"job / job_stream = {_fmt(ratios['job_over_job_stream'])} (job's copy path: see below)"
        )


def _print_notes(results: Sequence[RunResult]) -> None:
    """Failed or doubtful runs, and what the documented method held in memory."""
    for r in results:
        if r.error or r.row_diffs or r.details.get("sql_errors") or r.details.get("warnings"):
            diffs = dict(list(r.row_diffs.items())[:5])  # a source may have thousands of tables
            more = f" and {len(r.row_diffs) - 5} more" if len(r.row_diffs) > 5 else ""
            print(
                f"note: {r.method} run {r.run}: error={r.error or '-'} "
                f"row_diffs={diffs or '-'}{more} sql_errors={r.details.get('sql_errors', '-')} "
                f"warnings={r.details.get('warnings', '-')}"
            )
    for r in results:
        if r.method == "documented" and "captured_bytes" in r.details:
            print(
                f"documented run {r.run}: dump file {r.details['dump_file_bytes'] / MB:.1f} MB, "
                f"psql output held in memory {r.details['captured_bytes'] / MB:.1f} MB"
            )


def print_job_breakdown(row: dict[str, Any]) -> None:
    """Where a job method's time went, and its progress lines (see job_breakdown)."""
    method, path = row["method"], row["copy_path"] or "?"
    parallel = path == "parallel"
    added = JOB_METHODS[method]
    setting = " ".join(f"{k}={v}" for k, v in added.items()) or "default settings"
    copy_s, validation_s = row["copy_s"], row.get("validation_s")
    share = f"{100 * validation_s / copy_s:.1f}%" if validation_s is not None and copy_s else "-"
    rest = row["wall_s"] - copy_s - (validation_s or 0.0)
    what = (
        "planning, the workers' copy, index builds and the swap"
        if parallel
        else "from starting pg_dump to psql's exit"
    )
    logged = row.get("job_mb_per_second")
    print(
        f"{method} (medians): copy path {path} ({setting}, jobs={row['elt_jobs'] or '?'}); "
        f"copy {copy_s:.2f} s ({what}; logged with 'Data load completed successfully')"
        + (
            f"; the job's own logged figure {logged:.1f} MB/s (COPY data over the whole "
            "job's duration, in MB of 10**6 bytes)"
            if logged
            else ""
        )
        + ";"
    )
    if row.get("validation_during_copy"):
        print(
            f"  validation: the tables' figures were taken DURING the copy, so only the "
            f"remainder is after it: {_fmt(validation_s)} s, up to 'Validation summary' "
            f"(= {share} of the copy time); per-table digest time logged, source + "
            f"destination: {_fmt(row.get('table_digest_s'))} s (mostly inside the copy time)"
        )
    else:
        print(
            f"  validation {_fmt(validation_s)} s after it, up to 'Validation summary' "
            f"(= {share} of the copy time); per-table digest time logged, source + "
            f"destination: {_fmt(row.get('table_digest_s'))} s (both sides run at once, "
            "after the copy)"
        )
    for reason in row.get("parallel_not_used") or []:
        print(f"  parallel copy not used: {reason}")
    print(f"  the rest {rest:.2f} s (Python start-up, connections, snapshot)")
    _print_progress(row)
    if row.get("phases"):
        print(
            f"  where the wall time went, run {row['phases_run']} (the median run), from "
            "the log lines' timestamps and the process's start and exit:"
        )
        for line in format_phases(row["phases"]):
            print(line)
    if row.get("critical_path"):
        print(
            f"  the critical path of run {row['phases_run']}'s copy phase (from the DEBUG "
            "log lines' durations; each task after the one that ended last before it started):"
        )
        for line in format_critical_path(row["critical_path"]):
            print(line)


def sizes_row(size_mb: float, source: SourceInfo, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One size's line of the sizes mode's summary: the job against the best tool."""
    by_method = {r["method"]: r for r in rows}
    job = by_method.get("job", {})
    ratios = headline_ratios(rows)
    best = ratios.get("best_of_fd_j2_fc_pipe")
    return {
        "size_mb": size_mb,
        "source_mb": source.size_bytes / MB,
        "copy_path": job.get("copy_path"),
        "job_s": job.get("wall_s"),
        "best": best,
        "best_s": by_method[best]["wall_s"] if best else None,
        "job_over_best": ratios.get("job_over_best_of_fd_j2_fc_pipe"),
        "job_peak_proc_mb": job.get("peak_proc_mb"),
        "job_cpu_s": (job.get("cpu") or {}).get("total_s"),
        # the job without validation, when it ran (--methods ...,job_noval)
        "job_noval_s": by_method.get("job_noval", {}).get("wall_s"),
        "job_noval_cpu_s": (by_method.get("job_noval", {}).get("cpu") or {}).get("total_s"),
        "best_cpu_s": (by_method[best].get("cpu") or {}).get("total_s") if best else None,
        "job_floor_s": (job.get("cpu") or {}).get("floor_s"),
        "best_floor_s": (by_method[best].get("cpu") or {}).get("floor_s") if best else None,
    }


def print_sizes_summary(entries: list[dict[str, Any]], runs: int) -> None:
    """The sizes mode's last table: one line a size (see sizes_row)."""
    print(
        f"\nsizes: the job against the best of (fd_j2, fc_pipe), medians of {runs} run(s) "
        "each, one invocation; job peak proc MB: the job's largest process (ru_maxrss), "
        "maximum over runs; CPU s: both servers' and the method's, medians; floor s: "
        "that CPU over the machine's cores"
    )
    head = (
        f"{'size MB':>8} {'source MB':>9} {'job path':<9} {'job s':>7} {'best s':>7} "
        f"{'best':<8} {'job/best':>8} {'job peak proc MB':>16} {'job CPU s':>9} "
        f"{'best CPU s':>10} {'job floor s':>11} {'best floor s':>12}"
    )
    print(head)
    print("-" * len(head))
    for e in entries:
        print(
            f"{e['size_mb']:>8g} {e['source_mb']:>9.1f} {e['copy_path'] or '-':<9} "
            f"{_fmt(e['job_s']):>7} {_fmt(e['best_s']):>7} {e['best'] or '-':<8} "
            f"{_fmt(e['job_over_best']):>8} {_fmt(e['job_peak_proc_mb'], '.1f'):>16} "
            f"{_fmt(e.get('job_cpu_s')):>9} {_fmt(e.get('best_cpu_s')):>10} "
            f"{_fmt(e.get('job_floor_s')):>11} {_fmt(e.get('best_floor_s')):>12}"
        )
    for e in entries:
        if e.get("job_noval_s") is not None:
            print(
                f"{e['size_mb']:g} MB, the job without validation (job_noval): "
                f"{_fmt(e['job_noval_s'])} s, CPU {_fmt(e.get('job_noval_cpu_s'))} s"
            )


def _print_progress(row: dict[str, Any]) -> None:
    counts = row.get("progress_lines") or []
    if any(counts):
        copied = ", ".join(str(n) for n in row.get("table_copied_lines") or [])
        print(
            f"  progress: {', '.join(str(n) for n in counts)} 'Copy progress' line(s) per run, "
            f"{copied} 'Table copied' line(s); longest gap {row['progress_max_gap_s']:.2f} s "
            f"({row['progress_max_gap_at']}), over the start of the extraction, every "
            "progress line and the end of the load"
        )
    else:
        print(
            f"  progress lines: none (the start of the extraction to 'Data load completed "
            f"successfully' took {_fmt(row.get('extraction_to_load_s'))} s without one)"
        )
