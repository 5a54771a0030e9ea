"""Benchmark: the ELT job against other ways of copying one PostgreSQL database.

A script that prints figures, not a test (pytest only collects test_*.py):

    .venv/bin/python tests/benchmark/bench.py --size-mb 100 [--runs 3]
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

1 MB is 2**20 bytes everywhere in this script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import PgServer

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO = TESTS_DIR.parent
# tests/conftest.py is imported as a plain module, the way pytest's rootdir
# conftest is (pyproject.toml's mypy_path also has tests/ on it).
sys.path.insert(0, str(TESTS_DIR))
sys.path.insert(0, str(REPO / "dev"))  # conftest's servers come from dev/pgserver.py

MB = 1024 * 1024
METHODS = ("job", "job_stream", "documented", "fd_j2", "fc_pipe", "pgcopydb")
# The methods that run elt/elt_script.py, and the settings each adds to the
# job's environment (on top of the tests' job environment, see Bench.worker_env).
JOB_METHODS: dict[str, dict[str, str]] = {
    "job": {},  # the job's defaults: it picks the copy path itself
    "job_stream": {"ELT_JOBS": "1"},  # always the streamed path
}
SOURCE_DB = "source_db"
DESTINATION_DB = "destination_db"
SCHEMA = "shop"
TABLES = ("customers", "products", "orders", "order_items", "events")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# How many rows of each table one unit of scale adds, and how many bytes (heap,
# TOAST and indexes) a row takes once built, as measured on PostgreSQL 15 at
# 200 MB. Only used to pick the scale: the report prints the real sizes.
# `events` holds about 70% of the bytes, like a real database's one big table.
ROWS_PER_UNIT = {
    "customers": 1.0,
    "products": 0.05,
    "orders": 2.0,
    "order_items": 5.0,  # 1 to 4 lines per order, 2.5 on average
    "events": 5.5,
}
BYTES_PER_ROW = {
    "customers": 290,
    "products": 580,
    "orders": 165,
    "order_items": 107,
    "events": 500,
}


# --- servers ------------------------------------------------------------------


# conftest is imported inside the functions that need it, never at module level:
# it pulls in pytest and psycopg (~30 MB of RSS), and the measuring worker (see
# run_worker) is this same file, whose own memory is part of the `documented`
# figures. Only the orchestrating process needs conftest.


def make_server(name: str, bindir: Path) -> PgServer:
    """A PgServer whose start() keeps PostgreSQL's default durability settings."""
    from conftest import PASSWORD, PgServer  # noqa: PLC0415
    from pgserver import free_port  # noqa: PLC0415

    class BenchServer(PgServer):
        """PgServer.start() turns fsync, full_page_writes and synchronous_commit off:
        right for throwaway test data, wrong for a benchmark, whose figures must
        mean something on a real server. This start() runs the same pg_ctl
        sequence with only the connection options set, so every other setting is
        PostgreSQL's default. It does not depend on how PgServer.start() builds
        its options, and check_durability() proves the result."""

        def start(self, port: int | None = None) -> None:
            for _ in range(1 if port else 5):  # a free port can be taken meanwhile
                self.port = port or free_port()
                options = f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1"
                argv = [
                    str(self.bindir / "pg_ctl"),
                    *("-D", str(self.datadir), "-l", str(self.logfile)),
                    *("-o", options, "-w", "-t", "120", "start"),
                ]
                proc = subprocess.run(
                    self._as_owner(argv), capture_output=True, check=False, timeout=300
                )
                if proc.returncode == 0:
                    return
            raise RuntimeError(f"{self.name} server did not start: {self.logfile.read_text()}")

    server: PgServer = BenchServer(name, bindir, PASSWORD)
    return server


DURABILITY_DEFAULTS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}


def check_durability(server: PgServer) -> None:
    for name, expected in DURABILITY_DEFAULTS.items():
        value = str(server.query("postgres", f"SHOW {name}")[0][0])
        if value != expected:
            raise RuntimeError(f"{server.name}: {name}={value}, the benchmark needs {expected}")


def server_settings(server: PgServer) -> str:
    names = (
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_level",
        "shared_buffers",
        "max_wal_size",
        "maintenance_work_mem",
    )
    values = [f"{n}={server.query('postgres', f'SHOW {n}')[0][0]}" for n in names]
    return " ".join(values)


def write_pgpass(server: PgServer) -> Path:
    """A pgpass file (mode 600) for --keep-servers: the password never goes to stdout."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    path = server.base / "pgpass"
    path.touch(mode=0o600)
    path.write_text(f"127.0.0.1:{server.port}:*:{esc(server.user)}:{esc(server.password)}\n")
    return path


# --- the synthetic source -----------------------------------------------------

_SCHEMA_SQL = f"""
CREATE SCHEMA {SCHEMA};
COMMENT ON SCHEMA {SCHEMA} IS 'Synthetic web shop built by tests/benchmark/bench.py';
CREATE TABLE {SCHEMA}.customers (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    full_name text NOT NULL,
    country text NOT NULL,
    signed_up_at timestamptz NOT NULL,
    lifetime_value numeric(12, 2) NOT NULL,
    preferences jsonb NOT NULL
);
CREATE TABLE {SCHEMA}.products (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    sku text NOT NULL,
    name text NOT NULL,
    description text NOT NULL,
    price numeric(10, 2) NOT NULL CHECK (price > 0),
    attributes jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE {SCHEMA}.orders (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    ordered_at timestamptz NOT NULL,
    total numeric(12, 2) NOT NULL,
    shipping_address text NOT NULL
);
CREATE TABLE {SCHEMA}.order_items (
    order_id bigint NOT NULL,
    line_no integer NOT NULL,
    product_id bigint NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE {SCHEMA}.events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    order_id bigint,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL
);
-- Deterministic pseudo-random helpers: everything is derived from the row
-- number g by hashing, so the same scale always builds the same data. They
-- live in pg_temp, so they are not part of what gets copied.
CREATE FUNCTION pg_temp.h(g bigint, k integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN pg_catalog.hashint8extended(g, k) & 9223372036854775807;
CREATE FUNCTION pg_temp.pick(choices text[], g bigint, k integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN choices[1 + ((pg_catalog.hashint8extended(g, k) & 9223372036854775807)
                        % pg_catalog.cardinality(choices))::integer];
"""

_LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
    "Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt."
)
_WORDS = {
    "first": "Ada Alan Barbara Claude Dennis Edsger Frances Grace Ken Linus Margaret Niklaus",
    "last": "Lovelace Turing Liskov Shannon Ritchie Dijkstra Allen Hopper Thompson Torvalds",
    "country": "DE FR US GB NL SE PL ES IT JP BR IN",
    "domain": "example.com example.net example.org",
    "language": "en de fr es ja",
    "theme": "light dark system",
    "category": "books garden kitchen toys sports music tools fashion",
    "adjective": "sturdy compact deluxe classic smart eco portable premium",
    "noun": "kettle lamp backpack chair speaker blender drill jacket",
    "color": "red green blue black white grey orange",
    "size": "XS S M L XL",
    "status": "pending paid shipped delivered cancelled returned",
    "street": "Main_St Oak_Ave Elm_St Park_Rd High_St Mill_Ln",
    "city": "Berlin Paris Austin Leeds Utrecht Malmo Krakow Sevilla",
    "kind": "page_view page_view page_view add_to_cart search login checkout review",
    "referrer": "direct google newsletter partner social",
    "device": "desktop mobile tablet",
    "os": "linux macos windows ios android",
}


def _words(name: str) -> str:
    """A text[] literal of one word list (the lists are ours: nothing to escape)."""
    words = ",".join(f"'{w.replace('_', ' ')}'" for w in _WORDS[name].split())
    return f"ARRAY[{words}]::text[]"


def _data_sql(n: dict[str, int]) -> list[str]:
    w = _words
    epoch = "timestamptz '2019-01-01 00:00:00+00'"
    six_years = 6 * 365 * 86400
    return [
        f"""INSERT INTO {SCHEMA}.customers
        (id, email, full_name, country, signed_up_at, lifetime_value, preferences)
        SELECT g,
               'customer' || g || '@' || pg_temp.pick({w("domain")}, g, 1),
               pg_temp.pick({w("first")}, g, 2) || ' ' || pg_temp.pick({w("last")}, g, 3),
               pg_temp.pick({w("country")}, g, 4),
               {epoch} + make_interval(secs => pg_temp.h(g, 5) % {six_years}),
               (pg_temp.h(g, 6) % 10000000) / 100.0,
               jsonb_build_object(
                   'newsletter', pg_temp.h(g, 7) % 2 = 0,
                   'language', pg_temp.pick({w("language")}, g, 8),
                   'theme', pg_temp.pick({w("theme")}, g, 9),
                   'interests', jsonb_build_array(pg_temp.pick({w("category")}, g, 10),
                                                  pg_temp.pick({w("category")}, g, 11)))
        FROM generate_series(1, {n["customers"]}) AS g""",
        f"""INSERT INTO {SCHEMA}.products
        (id, sku, name, description, price, attributes, created_at)
        SELECT g,
               'SKU-' || lpad(g::text, 8, '0'),
               initcap(pg_temp.pick({w("adjective")}, g, 1)) || ' '
                   || pg_temp.pick({w("noun")}, g, 2),
               substr('{_LOREM}', 1 + (pg_temp.h(g, 3) % 150)::integer,
                      60 + (pg_temp.h(g, 4) % 250)::integer),
               (100 + pg_temp.h(g, 5) % 99900) / 100.0,
               jsonb_build_object(
                   'color', pg_temp.pick({w("color")}, g, 6),
                   'size', pg_temp.pick({w("size")}, g, 7),
                   'weight_g', 50 + pg_temp.h(g, 8) % 5000,
                   'in_stock', pg_temp.h(g, 9) % 4 <> 0,
                   'tags', jsonb_build_array(pg_temp.pick({w("category")}, g, 10),
                                             pg_temp.pick({w("color")}, g, 11))),
               {epoch} + make_interval(secs => pg_temp.h(g, 12) % {six_years})
        FROM generate_series(1, {n["products"]}) AS g""",
        f"""INSERT INTO {SCHEMA}.orders
        (id, customer_id, status, ordered_at, total, shipping_address)
        SELECT g,
               1 + pg_temp.h(g, 1) % {n["customers"]},
               pg_temp.pick({w("status")}, g, 2),
               {epoch} + make_interval(secs => pg_temp.h(g, 3) % {six_years}),
               (500 + pg_temp.h(g, 4) % 200000) / 100.0,
               (1 + pg_temp.h(g, 5) % 300) || ' ' || pg_temp.pick({w("street")}, g, 6) || ', '
                   || lpad((pg_temp.h(g, 7) % 99999)::text, 5, '0') || ' '
                   || pg_temp.pick({w("city")}, g, 8)
        FROM generate_series(1, {n["orders"]}) AS g""",
        f"""INSERT INTO {SCHEMA}.order_items
        (order_id, line_no, product_id, quantity, unit_price)
        SELECT g, l,
               1 + pg_temp.h(g * 8 + l, 1) % {n["products"]},
               1 + pg_temp.h(g * 8 + l, 2) % 5,
               (100 + pg_temp.h(g * 8 + l, 3) % 99900) / 100.0
        FROM generate_series(1, {n["orders"]}) AS g,
             LATERAL generate_series(1, 1 + (pg_temp.h(g, 9) % 4)::integer) AS l""",
        f"""INSERT INTO {SCHEMA}.events
        (id, customer_id, order_id, occurred_at, kind, payload)
        SELECT g,
               1 + pg_temp.h(g, 1) % {n["customers"]},
               CASE WHEN pg_temp.h(g, 2) % 5 = 0 THEN 1 + pg_temp.h(g, 3) % {n["orders"]} END,
               {epoch} + make_interval(secs => pg_temp.h(g, 4) % {six_years}),
               e.kind,
               jsonb_build_object(
                   'kind', e.kind,
                   'path', '/products/' || (1 + pg_temp.h(g, 5) % {n["products"]}),
                   'referrer', pg_temp.pick({w("referrer")}, g, 6),
                   'device', jsonb_build_object(
                       'type', pg_temp.pick({w("device")}, g, 7),
                       'os', pg_temp.pick({w("os")}, g, 8),
                       'app_version', '4.' || pg_temp.h(g, 9) % 20 || '.' || pg_temp.h(g, 10) % 10),
                   'session', to_hex(pg_temp.h(g, 11)),
                   'duration_ms', pg_temp.h(g, 12) % 30000,
                   'experiments', jsonb_build_array('exp-' || pg_temp.h(g, 13) % 40,
                                                    'exp-' || pg_temp.h(g, 14) % 40),
                   'query', CASE WHEN e.kind = 'search'
                                 THEN substr('{_LOREM}', 1 + (pg_temp.h(g, 15) % 300)::integer,
                                             5 + (pg_temp.h(g, 16) % 30)::integer) END)
        FROM generate_series(1, {n["events"]}) AS g,
             LATERAL (SELECT pg_temp.pick({w("kind")}, g, 0) AS kind) AS e""",
    ]


# Keys, indexes and the rest are added after the data, as pg_restore does it.
_CONSTRAINTS_SQL = f"""
ALTER TABLE {SCHEMA}.customers ADD CONSTRAINT customers_email_key UNIQUE (email);
ALTER TABLE {SCHEMA}.products ADD CONSTRAINT products_sku_key UNIQUE (sku);
ALTER TABLE {SCHEMA}.orders ADD CONSTRAINT orders_customer_fk
    FOREIGN KEY (customer_id) REFERENCES {SCHEMA}.customers (id);
ALTER TABLE {SCHEMA}.order_items ADD CONSTRAINT order_items_order_fk
    FOREIGN KEY (order_id) REFERENCES {SCHEMA}.orders (id) ON DELETE CASCADE;
ALTER TABLE {SCHEMA}.order_items ADD CONSTRAINT order_items_product_fk
    FOREIGN KEY (product_id) REFERENCES {SCHEMA}.products (id);
ALTER TABLE {SCHEMA}.events ADD CONSTRAINT events_customer_fk
    FOREIGN KEY (customer_id) REFERENCES {SCHEMA}.customers (id);
ALTER TABLE {SCHEMA}.events ADD CONSTRAINT events_order_fk
    FOREIGN KEY (order_id) REFERENCES {SCHEMA}.orders (id);
CREATE INDEX customers_country_idx ON {SCHEMA}.customers (country);
CREATE INDEX products_attributes_gin ON {SCHEMA}.products USING gin (attributes);
CREATE INDEX orders_customer_idx ON {SCHEMA}.orders (customer_id);
CREATE INDEX orders_ordered_at_idx ON {SCHEMA}.orders (ordered_at);
CREATE INDEX order_items_product_idx ON {SCHEMA}.order_items (product_id);
CREATE INDEX events_customer_time_idx ON {SCHEMA}.events (customer_id, occurred_at);
CREATE INDEX events_payload_gin ON {SCHEMA}.events USING gin (payload jsonb_path_ops);
CREATE VIEW {SCHEMA}.customer_order_totals AS
    SELECT customer_id, count(*) AS orders, sum(total) AS total
    FROM {SCHEMA}.orders
    GROUP BY customer_id;
"""


@dataclass
class SourceInfo:
    size_bytes: int
    empty_bytes: int
    units: int
    build_seconds: float
    rows: dict[str, int]
    table_bytes: dict[str, int]


def build_source(server: PgServer, size_mb: float) -> SourceInfo:
    server.recreate_database(SOURCE_DB)
    empty = int(server.query(SOURCE_DB, "SELECT pg_database_size(current_database())")[0][0])
    per_unit = sum(ROWS_PER_UNIT[t] * BYTES_PER_ROW[t] for t in TABLES)
    units = max(100, int((size_mb * MB - empty) / per_unit))
    n = {t: max(10, round(ROWS_PER_UNIT[t] * units)) for t in TABLES if t != "order_items"}
    started = time.monotonic()
    # One session throughout: the pg_temp helper functions live only in it.
    with server.connect(SOURCE_DB) as conn:
        conn.execute(_SCHEMA_SQL)
        for statement in _data_sql(n):
            conn.execute(statement)
        conn.execute(_CONSTRAINTS_SQL)
        for table in ("customers", "products", "orders", "events"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{SCHEMA}.{table}', 'id'), "
                f"(SELECT max(id) FROM {SCHEMA}.{table}))"
            )
        # Set hint bits and the visibility map and write everything out now, so
        # that the first method timed does not pay for it on the source.
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
    seconds = time.monotonic() - started
    rows = table_counts(server, SOURCE_DB)
    table_bytes = {
        t: int(server.query(SOURCE_DB, f"SELECT pg_total_relation_size('{SCHEMA}.{t}')")[0][0])
        for t in TABLES
    }
    size = int(server.query(SOURCE_DB, "SELECT pg_database_size(current_database())")[0][0])
    return SourceInfo(size, empty, units, seconds, rows, table_bytes)


def table_counts(server: PgServer, dbname: str) -> dict[str, int]:
    """Row counts of the synthetic tables; -1 for a table that does not exist."""
    counts = {}
    for table in TABLES:
        try:
            value = server.query(dbname, f"SELECT count(*) FROM {SCHEMA}.{table}")[0][0]
        except Exception:  # a method that failed half-way: count it as a mismatch
            value = -1
        counts[table] = int(value)
    return counts


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


# --- the measuring worker -----------------------------------------------------
#
# Each run of each method happens inside a fresh worker process: this same file
# run with --worker. Peak memory of the largest single process comes from the
# worker's resource.getrusage(RUSAGE_CHILDREN).ru_maxrss. Why that and not
# wait4()'s rusage of each child:
#   * RUSAGE_CHILDREN covers the whole tree: when a process is reaped, the
#     kernel folds the largest maxrss of its own reaped descendants into what
#     its parent sees, so the job's pg_dump/pg_restore/psql and pgcopydb's
#     helpers count, not only the processes started here;
#   * it is a high-water mark per process that only ever grows for the lifetime
#     of the asking process, so one long-lived process timing every method would
#     report the maximum over all earlier methods; a fresh worker per run keeps
#     the methods (and the runs) apart;
#   * the `documented` method's memory hog would be the Python parent itself,
#     which holds psql's captured output: the worker is that parent, so its own
#     peak (VmHWM, see _own_peak_kb) is counted for that method, and only there.
# One caveat of ru_maxrss: a child's figure is at least what its parent had
# when it forked it (exec folds the pre-exec memory in), so a small tool started
# by a Python process reads as at least that process's size (~14 MB for the
# worker, ~40 MB for the job's own Python). It only matters where every
# process of a method is that small.
# The worker imports nothing but the standard library (~14 MB), so its own
# figure is not inflated by the orchestrator's psycopg and pytest.


def _tool_env(password_var: str) -> dict[str, str]:
    """The worker's environment for one client tool: that side's password in PGPASSWORD."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_POSTGRES_PASSWORD")}
    env["PGPASSWORD"] = os.environ[password_var]
    return env


def _conn_args(side: dict[str, Any]) -> list[str]:
    return ["-h", side["host"], "-p", str(side["port"]), "-U", side["user"], "-d", side["db"]]


def _tail(data: bytes | str, lines: int = 8) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return "\n".join(text.strip().splitlines()[-lines:])


def _failed(step: str, returncode: int, stderr: bytes | str) -> dict[str, Any]:
    return {"ok": False, "error": f"{step} exited {returncode}: {_tail(stderr)}"}


def _run(
    spec: dict[str, Any], argv: list[str], password_var: str, *, keep_stdout: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run one client tool with one side's password; stderr (and stdout if asked) kept."""
    return subprocess.run(
        argv,
        env=_tool_env(password_var),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        timeout=spec["timeout"],  # a safety net against a hung run, not a measurement
    )


def _method_job(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    # The worker's environment is the job's (Databases.env()); stdout is the JSON
    # log, kept in a file and parsed by the orchestrator.
    out_path, err_path = work / "job.stdout", work / "job.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.run(
            [spec["python"], spec["script"]],
            cwd=spec["repo"],
            stdout=out,
            stderr=err,
            check=False,
            timeout=spec["timeout"],  # a safety net against a hung run, not a measurement
        )
    logs = []
    for line in out_path.read_text().splitlines():
        try:
            logs.append(json.loads(line))
        except ValueError:  # every line should be JSON; report one that is not, do not die
            logs.append({"level": "NOT-JSON", "message": line})
    result: dict[str, Any] = {"ok": proc.returncode == 0, "logs": logs}
    if proc.returncode != 0:
        errors = [f"{x.get('message')}: {x.get('error')}" for x in logs if x["level"] == "ERROR"]
        detail = errors[-1] if errors else _tail(err_path.read_text())
        result["error"] = f"elt_script.py exited {proc.returncode}: {detail}"
    return result


def _method_documented(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    # As originally documented: dump to a plain SQL file, then psql -a (echo every
    # input line) with the output captured by this Python process. Measured, not
    # assumed: psql does not echo the rows of COPY ... FROM stdin (they bypass its
    # line reader), so with pg_dump's default COPY output the capture holds the
    # DDL only; it grows with the data only for INSERT-style dumps (--inserts).
    dump_file = work / "data_dump.sql"
    dump = _run(
        spec,
        ["pg_dump", *_conn_args(spec["source"]), "-f", str(dump_file), "-w"],
        "SOURCE_POSTGRES_PASSWORD",
    )
    if dump.returncode != 0:
        return _failed("pg_dump", dump.returncode, dump.stderr)
    load = _run(
        spec,
        ["psql", *_conn_args(spec["destination"]), "-a", "-f", str(dump_file)],
        "DESTINATION_POSTGRES_PASSWORD",
        keep_stdout=True,  # the documented capture_output=True is what is measured
    )
    result: dict[str, Any] = {
        "ok": load.returncode == 0,
        "captured_bytes": len(load.stdout) + len(load.stderr),
        "dump_file_bytes": dump_file.stat().st_size,
        # Without ON_ERROR_STOP psql carries on after an error and exits 0.
        "sql_errors": load.stderr.count(b"ERROR:"),
    }
    if load.returncode != 0:
        result.update(_failed("psql", load.returncode, load.stderr))
    return result


def _method_fd_j2(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    dump_dir = work / "dump.dir"  # pg_dump -Fd creates it and refuses an existing one
    jobs = ["-j", str(spec["jobs"])]
    dump = _run(
        spec,
        ["pg_dump", *_conn_args(spec["source"]), "-w", "-Fd", "-Z0", *jobs, "-f", str(dump_dir)],
        "SOURCE_POSTGRES_PASSWORD",
    )
    if dump.returncode != 0:
        return _failed("pg_dump", dump.returncode, dump.stderr)
    restore = _run(
        spec,
        ["pg_restore", *_conn_args(spec["destination"]), "-w", *jobs, str(dump_dir)],
        "DESTINATION_POSTGRES_PASSWORD",
    )
    if restore.returncode != 0:
        return _failed("pg_restore", restore.returncode, restore.stderr)
    return {"ok": True}


def _method_fc_pipe(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    # No shell: two processes joined by a pipe. stderr goes to files, so neither
    # tool can block on a full stderr pipe that nobody reads.
    with (
        (work / "dump.err").open("w+b") as dump_err,
        (work / "restore.err").open("w+b") as rest_err,
    ):
        dump = subprocess.Popen(
            ["pg_dump", *_conn_args(spec["source"]), "-w", "-Fc", "-Z0"],
            env=_tool_env("SOURCE_POSTGRES_PASSWORD"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=dump_err,
        )
        restore = subprocess.Popen(
            ["pg_restore", *_conn_args(spec["destination"]), "-w"],
            env=_tool_env("DESTINATION_POSTGRES_PASSWORD"),
            stdin=dump.stdout,
            stdout=subprocess.DEVNULL,
            stderr=rest_err,
        )
        # The parent must not keep its copy of the pipe: otherwise, if pg_restore
        # dies, pg_dump never gets EPIPE and blocks forever on a full pipe.
        assert dump.stdout is not None
        dump.stdout.close()
        try:
            restore.wait(timeout=spec["timeout"])  # safety nets, not measurements
            dump.wait(timeout=spec["timeout"])
        finally:
            for proc in (dump, restore):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for name, proc, err in (("pg_dump", dump, dump_err), ("pg_restore", restore, rest_err)):
            if proc.returncode != 0:
                err.seek(0)
                return _failed(name, proc.returncode, err.read())
    return {"ok": True}


def _pg_uri(side: dict[str, Any]) -> str:
    # No password in the URI (it would be in argv): pgcopydb's libpq reads PGPASSWORD.
    return f"postgres://{side['user']}@{side['host']}:{side['port']}/{side['db']}"


def _method_pgcopydb(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    if os.environ["SOURCE_POSTGRES_PASSWORD"] != os.environ["DESTINATION_POSTGRES_PASSWORD"]:
        # One PGPASSWORD serves both sides only when they share the password.
        return {"ok": False, "error": "source and destination passwords differ"}
    argv = ["pgcopydb", "clone", "--source", _pg_uri(spec["source"])]
    argv += ["--target", _pg_uri(spec["destination"]), "--dir", str(work / "pgcopydb")]
    # pgcopydb logs to stderr, which _run keeps for the error report.
    proc = _run(spec, argv, "SOURCE_POSTGRES_PASSWORD")
    if proc.returncode != 0:
        return _failed("pgcopydb", proc.returncode, proc.stderr)
    return {"ok": True}


WORKER_METHODS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "job": _method_job,
    "job_stream": _method_job,  # the same, in an environment with ELT_JOBS=1
    "documented": _method_documented,
    "fd_j2": _method_fd_j2,
    "fc_pipe": _method_fc_pipe,
    "pgcopydb": _method_pgcopydb,
}


def _own_peak_kb() -> int:
    """This process's peak RSS since it was exec'd: VmHWM, in kB.

    Not RUSAGE_SELF: at exec, Linux folds the peak of the memory the process had
    before it (a copy of, or with vfork shared with, its parent's) into
    ru_maxrss, so the worker would report the orchestrator's ~50 MB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_worker() -> int:
    """--worker: run one method once, print one JSON line with time and peak memory."""
    spec = json.loads(sys.stdin.read())
    work = Path(spec["work_dir"])
    started = time.monotonic()
    try:
        result = WORKER_METHODS[spec["method"]](spec, work)
    except subprocess.TimeoutExpired as exc:
        result = {"ok": False, "error": f"timed out after {exc.timeout:.0f} s: {exc.cmd}"}
    result["seconds"] = time.monotonic() - started
    result["self_maxrss_kb"] = _own_peak_kb()
    # ru_maxrss is in kilobytes on Linux.
    result["children_maxrss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# --- the orchestrator -----------------------------------------------------------


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
        return max(900.0, 30.0 * float(self.args.size_mb))

    def worker_env(self, method: str) -> dict[str, str]:
        from conftest import Databases  # noqa: PLC0415

        # Exactly the tests' job environment (no copy-path setting: the job's
        # defaults), validation level and the method's own settings aside.
        env = Databases(self.source, self.destination, SOURCE_DB, DESTINATION_DB).env(
            ELT_VALIDATION=self.args.validation, **JOB_METHODS.get(method, {})
        )
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

    def run_once(self, method: str, run: int) -> RunResult:
        self.prepare()
        work = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=self.work_root))
        # Our own process group, so that a timeout can stop the worker and every
        # tool under it by that group's id.
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
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
            data = {"ok": False, "error": f"worker failed: {_tail(err)}", "seconds": 0.0}
        return self.record(method, run, data, sampler)

    @staticmethod
    def kill_worker(worker: subprocess.Popen[str]) -> None:
        # The worker leads its own session: its process group id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def record(
        self, method: str, run: int, data: dict[str, Any], sampler: TreeSampler
    ) -> RunResult:
        counts = table_counts(self.destination, DESTINATION_DB)
        diffs = {
            t: [self.source_info.rows[t], counts[t]]
            for t in TABLES
            if counts[t] != self.source_info.rows[t]
        }
        single_kb = int(data.get("children_maxrss_kb", 0))
        if method == "documented":
            single_kb = max(single_kb, int(data.get("self_maxrss_kb", 0)))
        details = {k: v for k, v in data.items() if k not in ("ok", "error", "logs", "seconds")}
        if method in JOB_METHODS:
            details.update(job_breakdown(data.get("logs", [])))
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
        )
        self.results.append(result)
        return result


# --- reporting ----------------------------------------------------------------


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


def summarize(bench: Bench, methods: Sequence[str]) -> list[dict[str, Any]]:
    size_mb = bench.source_info.size_bytes / MB
    rows = []
    for method in methods:
        runs = [r for r in bench.results if r.method == method]
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
    header: dict[str, Any],
    settings: str,
    bench: Bench,
    rows: list[dict[str, Any]],
    ratios: dict[str, Any],
) -> None:
    src = bench.source_info
    print(
        f"machine: {header['host']}  nproc={header['nproc']} "
        f"(usable {header['usable_cpus']})  mem={header['mem_total_gib']} GiB  "
        f"PostgreSQL {header['postgresql']}  kernel {header['kernel']}  {header['date']}  "
        f"loadavg at start {' '.join(f'{x:.2f}' for x in header['loadavg'])}"
    )
    print(f"servers: {settings}")
    print(
        f"source: {src.size_bytes / MB:.1f} MB (pg_database_size; empty database "
        f"{src.empty_bytes / MB:.1f} MB), requested {bench.args.size_mb:g} MB, "
        f"scale {src.units}, built in {src.build_seconds:.1f} s"
    )
    user_bytes = sum(src.table_bytes.values()) or 1
    for table in TABLES:
        print(
            f"  {SCHEMA}.{table:<12} {src.rows[table]:>11,} rows  "
            f"{src.table_bytes[table] / MB:>8.1f} MB  "
            f"({100 * src.table_bytes[table] / user_bytes:4.1f}% of table bytes)"
        )
    print(
        f"\n{bench.args.runs} run(s) per method, interleaved, after {bench.args.warmup} untimed "
        "warm-up run(s); wall = median of successful runs; "
        f"job/x = job's wall time / method's; validation = {bench.args.validation}"
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
    print(
        "peak proc MB: largest single client process, rusage ru_maxrss (exact, but never "
        "below the ~18 MB Python process that started it); sampled: the same from /proc "
        "samples;\npeak tree MB*: sum of VmRSS over the method's process tree, sampled every "
        f"{TreeSampler.INTERVAL * 1000:.0f} ms. Maxima over runs. PostgreSQL server "
        "processes are not counted."
    )
    for row in rows:
        if row["method"] in JOB_METHODS and row.get("copy_s") is not None:
            print_job_breakdown(row)
    for r in bench.results:
        if r.error or r.row_diffs or r.details.get("sql_errors") or r.details.get("warnings"):
            print(
                f"note: {r.method} run {r.run}: error={r.error or '-'} "
                f"row_diffs={r.row_diffs or '-'} sql_errors={r.details.get('sql_errors', '-')} "
                f"warnings={r.details.get('warnings', '-')}"
            )
    for r in bench.results:
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


# --- main -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
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
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
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
        # Untimed first: a fresh server has almost no WAL segment files, so the
        # first big load creates (and zero-fills) a gigabyte of them, which later
        # loads recycle. Measured at 1 GB: the first run of the job took 21.8 s,
        # its next two 17.7 and 18.0 s. Without a warm-up, whichever method runs
        # first pays for it.
        for number in range(1, args.warmup + 1):
            method = methods[0]
            print(f"warm-up {number}/{args.warmup}: {method} (untimed) ...", end=" ", flush=True)
            r = bench.run_once(method, 0)
            bench.results.remove(r)
            print(f"{r.wall_s:.2f} s{'' if r.ok else ' FAILED'}", flush=True)
        # Interleaved (run 1 of every method, then run 2 ...): on a noisy machine,
        # a slow spell then spreads over all methods instead of hitting one.
        for run in range(1, args.runs + 1):
            for method in methods:
                print(f"run {run}/{args.runs}: {method} ...", end=" ", flush=True)
                r = bench.run_once(method, run)
                print(f"{r.wall_s:.2f} s{'' if r.ok else ' FAILED'}", flush=True)
    rows = summarize(bench, methods)
    ratios = headline_ratios(rows)
    print()
    print_report(header, settings, bench, rows, ratios)
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


def _on_sigterm(signum: int, frame: object) -> None:
    # `kill PID` unwinds like Ctrl-C: the worker is stopped and both servers are
    # removed by the finally blocks, instead of being left running.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker()
    signal.signal(signal.SIGTERM, _on_sigterm)
    from conftest import pg_bindir  # noqa: PLC0415

    bindir = pg_bindir()
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
                as_owner = "runuser -u postgres -- " if os.geteuid() == 0 else ""
                print(
                    f"kept {server.name}: 127.0.0.1:{server.port} user {server.user}, "
                    f"PGPASSFILE={write_pgpass(server)}; data {server.datadir}; stop with: "
                    f"{as_owner}{bindir}/pg_ctl -D {server.datadir} stop && rm -rf {server.base}"
                )
            else:
                server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
