"""Benchmark: the ELT job against other ways of copying one PostgreSQL database.

A command that prints figures, not a test; run it from the clone's root:

    .venv/bin/python -m benchmark --size-mb 100 [--runs 3]
        [--methods job,job_stream,documented,fd_j2,fc_pipe,pgcopydb] [--keep-servers]
        [--validation full] [--critical-path] [--json FILE]

Instead of --size-mb, one of these sources:
  --sizes 100,250,1000  the synthetic source at each size in turn (default those
                        three; methods default job,fd_j2,fc_pipe), each size
                        reported as usual, then one table: job / best of
                        (fd_j2, fc_pipe) and the job's peak memory, a line a size
  --many-tables N       N small tables and one table in --partitions partitions
                        (default 300), each with a primary key and an index:
                        per-table costs dominate; both servers get a lock table
                        that holds every relation at once
  --seed                the project's seed (source_db_init/, 113 rows)

It starts two fresh PostgreSQL servers (source, destination) with PostgreSQL's
default durability settings, builds a synthetic source database of about
--size-mb, then copies it with every method into a freshly emptied destination
database, --runs times each, and prints one table: median wall seconds, MB/s,
the job's time relative to each method, peak memory and whether the
destination's row counts matched the source's; then, for the job's runs, the
copy path taken, where its time went and how often it logged progress, and
phase by phase (start-up, waits and logins, snapshot, planning, copy,
validation, swap, exit) where the wall time of its median run went.

Each run's CPU seconds (user + system) are measured too: each server's
(benchmark/cpu.py: the postmaster's reaped children and its processes still
running, between two quiet points), the method's own processes (the worker's
RUSAGE_CHILDREN), their total, and the floor that total sets on the machine's
cores (total / cores). After each run a CHECKPOINT on both servers writes the
dirty pages the run left; its CPU is reported apart ("after"), not in the total.
With --critical-path the job methods run at ELT_LOG_LEVEL=DEBUG, and for a
parallel run the report shows the chain of tasks that set its copy phase's
length (benchmark/critical.py).

Methods:
  job         this project: elt/elt_script.py with its default settings, then
              validation at --validation. The job picks its copy path itself:
              "parallel" (tables copied by ELT_JOBS workers into staging schemas,
              then swapped in; validation figures taken per table during the
              copy) for a source of at least ELT_PARALLEL_MIN_MB (default 64)
              whose tables hold ELT_PARALLEL_MIN_TABLE_MB (default 1) each on
              average, "streamed" (pg_dump -Fc | pg_restore | psql, one
              transaction, validation after the copy) otherwise
  job_stream  the same job with ELT_JOBS=1: always the streamed path, for
              parallel against one stream side by side
  job_noval   the same job with ELT_VALIDATION=off, whatever --validation says:
              beside `job`, what validation costs (only when --methods names it)
  documented  the originally documented method: pg_dump to a plain file, then
              `psql -a -f file` with its output captured by the Python parent
  fd_j2       pg_dump -Fd -Z0 -j 2 to a directory, then pg_restore -j 2 -d
  fc_pipe     pg_dump -Fc -Z0 | pg_restore -d (no single transaction)
  pgcopydb    pgcopydb clone, when pgcopydb is on PATH

The modules: source.py builds the source, methods.py runs one method in a
measuring worker, runner.py orchestrates the runs, sampling.py samples memory and
reads the job's log, phases.py splits a job run's wall time into phases,
cpu.py reads the servers' CPU from /proc, critical.py finds a parallel run's
critical path, report.py and cpu_report.py print; servers.py starts the
servers (dev/pgserver.py);
many_tables.py builds the many-tables source. 1 MB is 2**20 bytes everywhere
in the benchmark.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmark.cpu import AUTOVACUUM_SETTINGS
from benchmark.many_tables import build_many_tables, lock_setting
from benchmark.methods import DEFAULT_METHODS, METHODS
from benchmark.report import (
    headline_ratios,
    machine_header,
    print_report,
    print_sizes_summary,
    sizes_row,
    summarize,
)
from benchmark.runner import Bench
from benchmark.servers import (
    check_durability,
    kept_message,
    make_server,
    server_bindir,
    server_settings,
)
from benchmark.source import SourceInfo, build_seed, build_source, check_disk
from pgserver import PgServer

DEFAULT_SIZE_MB = 100.0
DEFAULT_SIZES = "100,250,1000"
SIZES_METHODS = ("job", "fd_j2", "fc_pipe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sources = parser.add_mutually_exclusive_group()
    sources.add_argument("--size-mb", type=float, help="source size (default 100)")
    sources.add_argument(
        "--sizes",
        nargs="?",
        const=DEFAULT_SIZES,
        metavar="MB,MB,...",
        help=f"the sizes mode: each size in turn, then a table of job / best "
        f"(default {DEFAULT_SIZES})",
    )
    sources.add_argument(
        "--many-tables", type=int, metavar="N", help="N small tables and a partitioned table"
    )
    sources.add_argument(
        "--seed", action="store_true", help="the project's seed (source_db_init/, 113 rows)"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=300,
        help="partitions of --many-tables' partitioned table (default 300)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per method (default 3)")
    parser.add_argument(
        "--methods",
        help=f"comma-separated, from {','.join(METHODS)} (default: all but job_noval; "
        f"with --sizes: {','.join(SIZES_METHODS)})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs of the first method before the timed ones (default 1)",
    )
    parser.add_argument("--validation", choices=("off", "counts", "full"), default="full")
    parser.add_argument(
        "--critical-path",
        action="store_true",
        help="run the job at ELT_LOG_LEVEL=DEBUG and show the chain of tasks that set "
        "a parallel run's copy phase",
    )
    parser.add_argument("--keep-servers", action="store_true", help="leave both servers running")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    return parser


def _sizes(parser: argparse.ArgumentParser, text: str) -> list[float]:
    try:
        sizes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--sizes takes sizes in MB separated by commas, not {text!r}")
    if not sizes or any(size <= 0 for size in sizes):
        parser.error("--sizes needs at least one size, each > 0")
    return list(dict.fromkeys(sizes))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.sizes = None if args.sizes is None else _sizes(parser, args.sizes)
    default_methods = SIZES_METHODS if args.sizes else DEFAULT_METHODS
    methods = [m.strip() for m in str(args.methods or ",".join(default_methods)).split(",")]
    methods = [m for m in methods if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.sizes and not set(SIZES_METHODS) <= set(methods):
        parser.error(
            f"--sizes compares the job with the best tool: --methods needs "
            f"{', '.join(SIZES_METHODS)}"
        )
    if args.seed or args.many_tables is not None or args.sizes:
        args.size_mb = None
    elif args.size_mb is None:
        args.size_mb = DEFAULT_SIZE_MB
    if args.runs < 1 or (args.size_mb is not None and args.size_mb <= 0) or args.warmup < 0:
        parser.error("--runs must be >= 1, --warmup >= 0 and --size-mb > 0")
    if args.many_tables is not None and (args.many_tables < 1 or args.partitions < 1):
        parser.error("--many-tables and --partitions must be >= 1")
    args.methods = list(dict.fromkeys(methods))
    return args


def build(args: argparse.Namespace, source: PgServer) -> SourceInfo:
    """The source database the arguments ask for."""
    if args.seed:
        print("loading the seed ...", flush=True)
        return build_seed(source)
    if args.many_tables is not None:
        print(
            f"building {args.many_tables} small tables and {args.partitions} partitions ...",
            flush=True,
        )
        return build_many_tables(source, args.many_tables, args.partitions)
    print(f"building a ~{args.size_mb:g} MB source ...", flush=True)
    return build_source(source, args.size_mb)


def server_options(args: argparse.Namespace) -> dict[str, str]:
    """Settings other than the defaults: every automatic vacuum and analyze logged
    with its CPU (benchmark/cpu.py), and a lock table that holds a many-tables source."""
    if args.many_tables is None:
        return dict(AUTOVACUUM_SETTINGS)
    locks = lock_setting(args.many_tables, args.partitions)
    return {**AUTOVACUUM_SETTINGS, "max_locks_per_transaction": str(locks)}


def benchmark(
    args: argparse.Namespace, source: PgServer, destination: PgServer
) -> tuple[dict[str, Any], SourceInfo]:
    """Build the source, run every method, print the report; return the figures."""
    methods: list[str] = args.methods
    if "pgcopydb" in methods and shutil.which("pgcopydb") is None:
        print("pgcopydb: not installed, skipped")
        methods = [m for m in methods if m != "pgcopydb"]
    info = build(args, source)
    header = machine_header(source)
    settings = server_settings(source, tuple(server_options(args)))
    with tempfile.TemporaryDirectory(prefix="elt-bench-") as work_root:
        bench = Bench(args, source, destination, info, Path(work_root))
        run_all(bench, methods)
    rows = summarize(bench.results, methods, info.size_bytes)
    ratios = headline_ratios(rows)
    print()
    print_report(
        header=header,
        settings=settings,
        args=args,
        source=info,
        results=bench.results,
        ratios=ratios,
        rows=rows,
    )
    document = {
        "machine": header,
        "server_settings": settings,
        "source": asdict(info),
        "arguments": {k: v for k, v in vars(args).items() if k != "json"},
        "summary": rows,
        "ratios": ratios,
        "runs": [asdict(r) for r in bench.results],
    }
    return document, info


def run_sizes(args: argparse.Namespace, source: PgServer, destination: PgServer) -> dict[str, Any]:
    """The sizes mode: every size as one benchmark, then one summary table."""
    documents, entries = [], []
    for size in args.sizes:
        print(f"\n=== {size:g} MB ===", flush=True)
        sized = argparse.Namespace(**{**vars(args), "size_mb": size})
        document, info = benchmark(sized, source, destination)
        documents.append(document)
        entries.append(sizes_row(size, info, document["summary"]))
    print_sizes_summary(entries, args.runs)
    return {"sizes": entries, "invocations": documents}


def run_all(bench: Bench, methods: list[str]) -> None:
    """The warm-up runs, then every timed run, each reported on one line as it ends."""
    warmup, runs = bench.args.warmup, bench.args.runs
    # Untimed first: a fresh server has almost no WAL segment files, so the
    # first big load creates (and zero-fills) them, which later loads recycle.
    # Without a warm-up, whichever method runs first pays for it.
    for number in range(1, warmup + 1):
        method = methods[0]
        print(f"warm-up {number}/{warmup}: {method} (untimed) ...", end=" ", flush=True)
        r = bench.run_once(method, 0)
        bench.results.remove(r)
        print(f"{r.wall_s:.2f} s{'' if r.ok else ' FAILED'}", flush=True)
    # Interleaved (run 1 of every method, then run 2 ...): on a noisy machine,
    # a slow spell then spreads over all methods instead of hitting one.
    for run in range(1, runs + 1):
        for method in methods:
            print(f"run {run}/{runs}: {method} ...", end=" ", flush=True)
            r = bench.run_once(method, run)
            cpu = f", CPU {r.cpu['total']:.2f} s" if r.cpu else ""
            print(f"{r.wall_s:.2f} s{cpu}{'' if r.ok else ' FAILED'}", flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    # `kill PID` unwinds like Ctrl-C: the worker is stopped and both servers are
    # removed by the finally blocks, instead of being left running.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    bindir = server_bindir()
    largest = max(args.sizes or [args.size_mb or 0.0])
    # The servers' directories and the dump directories are both under TMPDIR.
    check_disk(largest, Path(tempfile.gettempdir()))
    servers: list[PgServer] = []
    try:
        for name in ("bench-source", "bench-destination"):
            server = make_server(name, bindir, server_options(args))
            servers.append(server)
            server.init()
            server.start()
            check_durability(server)
        if args.sizes:
            document = run_sizes(args, servers[0], servers[1])
        else:
            document, _ = benchmark(args, servers[0], servers[1])
        if args.json:
            args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
            print(f"results written to {args.json}")
    finally:
        for server in servers:
            if args.keep_servers:
                print(kept_message(server))
            else:
                server.remove()
    return 0
