"""The orchestrator: one run of one method, in a fresh worker, measured and checked.

Each run starts from a freshly emptied destination database; the worker
(benchmark/methods.py) times the method and reports its peak memory, a
TreeSampler samples its process tree, and the destination's row counts are
compared with the source's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.cpu import (
    LogReader,
    Reading,
    autovacuum_between,
    cpu_delta,
    floor_seconds,
    parse_autovacuum,
    postmaster_pid,
    read_server,
    wait_quiet,
)
from benchmark.critical import ObjectTables, copy_tasks, critical_path
from benchmark.methods import JOB_METHODS, tail
from benchmark.phases import job_phases
from benchmark.sampling import TreeSampler, job_breakdown
from benchmark.source import DESTINATION_DB, MB, SOURCE_DB, SourceInfo, table_counts
from pgserver import PgServer, job_env

REPO = Path(__file__).resolve().parent.parent
# Each index's and constraint's name with its table, and a foreign key's with the
# table it references, outside the system schemas.
OBJECT_TABLES = """
SELECT i.relname, t.relname FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid JOIN pg_class AS t ON t.oid = x.indrelid
WHERE t.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
UNION ALL
SELECT c.conname, t.relname FROM pg_constraint AS c
JOIN pg_class AS t ON t.oid IN (c.conrelid, c.confrelid)
WHERE t.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""
# Both servers' CPU readings (source, destination) and when they were taken.
Readings = tuple[tuple[Reading, Reading], float]


@dataclass
class RunResult:
    method: str
    run: int
    ok: bool
    wall_s: float
    peak_proc_mb: float  # largest single process, rusage (exact high-water mark)
    peak_tree_mb: float  # whole tree, sampled every TreeSampler.INTERVAL
    sampled_peak_proc_mb: float
    samples: int
    rows_match: bool
    row_diffs: dict[str, list[int]] = field(default_factory=dict)  # table: [source, dest]
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    # CPU seconds (user + system) during the run: "source" and "destination" (each
    # server's processes, by kind, "total" among them: benchmark/cpu.py), "method"
    # (the method's own processes), "total"; "after" the CPU of the CHECKPOINT
    # that follows it, per server. Empty when it could not be read.
    cpu: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    args: argparse.Namespace
    source: PgServer
    destination: PgServer
    source_info: SourceInfo
    work_root: Path
    results: list[RunResult] = field(default_factory=list)

    @property
    def timeout(self) -> float:
        # A safety net per client tool: generous, since the machine is noisy.
        size_mb, tables = self.args.size_mb or 0.0, self.args.many_tables or 0
        return max(900.0, 30.0 * float(size_mb), 1.0 * tables)

    def worker_env(self, method: str) -> dict[str, str]:
        # Exactly the tests' job environment (no copy-path setting: the job's
        # defaults), validation level and the method's own settings aside.
        env = job_env(self.source, self.destination, SOURCE_DB, DESTINATION_DB)
        env["ELT_VALIDATION"] = self.args.validation
        env.update(JOB_METHODS.get(method, {}))  # job_noval's own ELT_VALIDATION wins
        if getattr(self.args, "critical_path", False) and method in JOB_METHODS:
            env["ELT_LOG_LEVEL"] = "DEBUG"  # each task's "Built" and "Measured" lines
        for name in ("TMPDIR", "HOME"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def spec(self, method: str, work: Path) -> dict[str, Any]:
        def side(server: PgServer, db: str) -> dict[str, Any]:
            return {"host": "127.0.0.1", "port": server.port, "user": server.user, "db": db}

        python = REPO / ".venv" / "bin" / "python"
        return {
            "method": method,
            "work_dir": str(work),
            "source": side(self.source, SOURCE_DB),
            "destination": side(self.destination, DESTINATION_DB),
            "python": str(python if python.exists() else sys.executable),
            "script": str(REPO / "elt" / "elt_script.py"),
            "repo": str(REPO),
            "jobs": 2,
            "timeout": self.timeout,
        }

    def prepare(self) -> None:
        """A freshly emptied destination database, and no pending writes anywhere."""
        self.destination.recreate_database(DESTINATION_DB)
        # Checkpoint both servers so that a method does not pay for flushing the
        # dirty buffers that the previous one left behind.
        for server in (self.source, self.destination):
            server.execute("postgres", "CHECKPOINT")

    def __post_init__(self) -> None:
        self._logs = [LogReader(s.logfile) for s in (self.source, self.destination)]
        self._objects: ObjectTables | None = None

    def object_tables(self) -> ObjectTables:
        """The source's indexes and constraints by name: the tables each is on
        (a foreign key's: both), for the critical path (benchmark/critical.py)."""
        if self._objects is None:
            self._objects = {}
            for name, table in self.source.query(SOURCE_DB, OBJECT_TABLES):
                self._objects.setdefault(str(name), set()).add(str(table))
        return self._objects

    def read_cpu(self) -> Readings | None:
        """Both servers' CPU readings at a quiet point (no client backend left), and
        when; None when a backend would not go away, as a reading then could count
        a backend twice or miss it (benchmark/cpu.py)."""
        pids = [postmaster_pid(s.datadir) for s in (self.source, self.destination)]
        if not wait_quiet(pids):
            return None
        return (read_server(pids[0]), read_server(pids[1])), time.time()

    def cpu_after(
        self, before: Readings | None, data: dict[str, Any], method: str
    ) -> dict[str, Any]:
        """The run's CPU (see RunResult.cpu), then a CHECKPOINT's on each server."""
        ended = self.read_cpu()
        # The dirty pages the run left are written by the next checkpoint: by
        # this one, reported apart, as it is not part of the run's wall time.
        for server in (self.source, self.destination):
            server.execute("postgres", "CHECKPOINT")
        checkpointed = self.read_cpu()
        vacuums = [parse_autovacuum(log.new()) for log in self._logs]
        if before is None or ended is None:
            return {}
        method_s = float(data.get("children_cpu_s", 0.0))
        if method == "documented":  # the worker holds psql's output: it is the method
            method_s += float(data.get("self_cpu_s", 0.0))
        sides = ("source", "destination")
        out: dict[str, Any] = {
            side: cpu_delta(a, b) for side, a, b in zip(sides, before[0], ended[0], strict=True)
        }
        for side, found in zip(sides, vacuums, strict=True):
            # Part of the server's figure: what its automatic vacuums and analyzes
            # that ended during the run logged.
            out[side]["of which autovacuum (logged)"] = autovacuum_between(
                found, before[1], ended[1]
            )
        out["method"] = method_s
        out["total"] = out["source"]["total"] + out["destination"]["total"] + method_s
        out["cores"] = os.cpu_count()
        out["floor_s"] = floor_seconds(out["total"], os.cpu_count())
        if checkpointed is not None:
            out["after"] = {
                side: cpu_delta(a, b)["total"]
                for side, a, b in zip(sides, ended[0], checkpointed[0], strict=True)
            }
            out["after_autovacuum"] = {
                side: autovacuum_between(found, ended[1], checkpointed[1])
                for side, found in zip(sides, vacuums, strict=True)
            }
        return out

    def run_once(self, method: str, run: int) -> RunResult:
        self.prepare()
        before = self.read_cpu()
        work = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=self.work_root))
        # Our own process group, so that a timeout can stop the worker and every
        # tool under it by that group's id. From the clone's root, where -m finds
        # the benchmark package.
        worker = subprocess.Popen(
            [sys.executable, "-m", "benchmark.methods"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.worker_env(method),
            text=True,
            start_new_session=True,
        )
        sampler = TreeSampler(worker.pid, include_root=method == "documented")
        sampler.start()
        try:
            out, err = worker.communicate(json.dumps(self.spec(method, work)), self.timeout * 3)
        except subprocess.TimeoutExpired:  # the worker's own timeouts failed: last resort
            self.kill_worker(worker)
            out, err = worker.communicate()
        except BaseException:
            # Ctrl-C does not reach the worker (it runs in a session of its own):
            # stop it and every tool under it before the servers go away.
            self.kill_worker(worker)
            raise
        finally:
            sampler.stop()
            shutil.rmtree(work, ignore_errors=True)  # dump file / directory / work dir
        try:
            data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            data = {"ok": False, "error": f"worker failed: {tail(err)}", "seconds": 0.0}
        cpu = self.cpu_after(before, data, method)
        return self.record(method, run, data, sampler, cpu)

    @staticmethod
    def kill_worker(worker: subprocess.Popen[str]) -> None:
        # The worker leads its own session: its process group id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def record(
        self,
        method: str,
        run: int,
        data: dict[str, Any],
        sampler: TreeSampler,
        cpu: dict[str, Any],
    ) -> RunResult:
        counts = table_counts(self.destination, DESTINATION_DB, self.source_info.schema)
        diffs = {
            t: [rows, counts.get(t, -1)]
            for t, rows in self.source_info.rows.items()
            if counts.get(t, -1) != rows
        }
        single_kb = int(data.get("children_maxrss_kb", 0))
        if method == "documented":
            single_kb = max(single_kb, int(data.get("self_maxrss_kb", 0)))
        details = {k: v for k, v in data.items() if k not in ("ok", "error", "logs", "seconds")}
        if method in JOB_METHODS:
            logs = data.get("logs", [])
            details.update(job_breakdown(logs))
            details["phases"] = job_phases(logs, data.get("started_at"), data.get("ended_at"))
            tasks = copy_tasks(logs, self.object_tables())
            if tasks:  # a parallel run logged at DEBUG (--critical-path)
                details["critical_path"] = critical_path(tasks, logs)
        result = RunResult(
            method=method,
            run=run,
            ok=bool(data.get("ok")),
            wall_s=float(data.get("seconds", 0.0)),
            peak_proc_mb=single_kb / 1024,
            peak_tree_mb=sampler.peak_total / MB,
            sampled_peak_proc_mb=sampler.peak_single / MB,
            samples=sampler.samples,
            rows_match=not diffs,
            row_diffs=diffs,
            error=str(data.get("error", "")),
            details=details,
            cpu=cpu,
        )
        self.results.append(result)
        return result
