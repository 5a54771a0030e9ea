"""Benchmark: the ELT job against other ways of copying one PostgreSQL database.

A command that prints figures, not a test; run it from the clone's root:

    .venv/bin/python -m benchmark --size-mb 100 [--runs 3]
        [--methods job,job_stream,documented,fd_j2,fc_pipe,pgcopydb] [--keep-servers]
        [--validation full] [--json FILE]

It starts two fresh PostgreSQL servers (source, destination) with PostgreSQL's
default durability settings, builds a synthetic source database of about
--size-mb, then copies it with every method into a freshly emptied destination
database, --runs times each, and prints one table: median wall seconds, MB/s,
the job's time relative to each method, peak memory and whether the
destination's row counts matched the source's; then, for the job's runs, the
copy path taken, where its time went and how often it logged progress.

Methods:
  job         this project: elt/elt_script.py with its default settings, then
              validation at --validation. The job picks its copy path itself:
              "parallel" (tables copied by ELT_JOBS workers into staging schemas,
              then swapped in; validation figures taken per table during the
              copy) for a source of at least ELT_PARALLEL_MIN_MB (default 64),
              "streamed" (pg_dump -Fc | pg_restore | psql, one transaction,
              validation after the copy) below that
  job_stream  the same job with ELT_JOBS=1: always the streamed path, for
              parallel against one stream side by side
  documented  the originally documented method: pg_dump to a plain file, then
              `psql -a -f file` with its output captured by the Python parent
  fd_j2       pg_dump -Fd -Z0 -j 2 to a directory, then pg_restore -j 2 -d
  fc_pipe     pg_dump -Fc -Z0 | pg_restore -d (no single transaction)
  pgcopydb    pgcopydb clone, when pgcopydb is on PATH

The modules: source.py builds the source, methods.py runs one method in a
measuring worker, runner.py orchestrates the runs, sampling.py samples memory and
reads the job's log, report.py prints; servers.py starts the servers
(dev/pgserver.py). 1 MB is 2**20 bytes everywhere in the benchmark.
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

from benchmark.methods import METHODS
from benchmark.report import headline_ratios, machine_header, print_report, summarize
from benchmark.runner import Bench
from benchmark.servers import (
    check_durability,
    kept_message,
    make_server,
    server_bindir,
    server_settings,
)
from benchmark.source import build_source
from pgserver import PgServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--size-mb", type=float, default=100.0, help="source size (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="runs per method (default 3)")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from {','.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs of the first method before the timed ones (default 1)",
    )
    parser.add_argument("--validation", choices=("off", "counts", "full"), default="full")
    parser.add_argument("--keep-servers", action="store_true", help="leave both servers running")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.runs < 1 or args.size_mb <= 0 or args.warmup < 0:
        parser.error("--runs must be >= 1, --warmup >= 0 and --size-mb > 0")
    args.methods = list(dict.fromkeys(methods))
    return args


def benchmark(args: argparse.Namespace, source: PgServer, destination: PgServer) -> None:
    methods: list[str] = args.methods
    if "pgcopydb" in methods and shutil.which("pgcopydb") is None:
        print("pgcopydb: not installed, skipped")
        methods = [m for m in methods if m != "pgcopydb"]
    print(f"building a ~{args.size_mb:g} MB source ...", flush=True)
    info = build_source(source, args.size_mb)
    header = machine_header(source)
    settings = server_settings(source)
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
    if args.json:
        document = {
            "machine": header,
            "server_settings": settings,
            "source": asdict(info),
            "arguments": {k: v for k, v in vars(args).items() if k != "json"},
            "summary": rows,
            "ratios": ratios,
            "runs": [asdict(r) for r in bench.results],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")


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
            print(f"{r.wall_s:.2f} s{'' if r.ok else ' FAILED'}", flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    # `kill PID` unwinds like Ctrl-C: the worker is stopped and both servers are
    # removed by the finally blocks, instead of being left running.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    bindir = server_bindir()
    servers: list[PgServer] = []
    try:
        for name in ("bench-source", "bench-destination"):
            server = make_server(name, bindir)
            servers.append(server)
            server.init()
            server.start()
            check_durability(server)
        benchmark(args, servers[0], servers[1])
    finally:
        for server in servers:
            if args.keep_servers:
                print(kept_message(server))
            else:
                server.remove()
    return 0
