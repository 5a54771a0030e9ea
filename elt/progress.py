"""Progress of a copy: thread-safe counters, per-table lines and a periodic line.

Workers call `table_started` / `add_bytes` / `table_done`; a reporter thread
logs "Copy progress" every ELT_PROGRESS_SECONDS, and `finish()` logs a last
one at 100 %, so even a short run shows the final figures and a long copy
is never silent for more than 10 seconds.

The estimate of the time left is from bytes: the share of the source tables'
on-disk size already streamed, extrapolated at the rate so far. Index builds
after the last rows are not in it (`phase` then says "indexes"), so it errs
on the short side.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from elt.validate import TableFigures

MB = 1_000_000


def mb_per_second(nbytes: int, seconds: float) -> float | None:
    return round(nbytes / MB / seconds, 1) if seconds > 0 else None


@dataclass
class _Running:
    size: int  # the table's on-disk size: what the estimate counts in
    streamed: int = 0


class Progress:
    def __init__(
        self, logger: logging.Logger, total_tables: int, total_size: int, interval: float
    ) -> None:
        self.logger = logger
        self.total_tables = total_tables
        self.total_size = max(total_size, 1)
        self.interval = interval
        self.started = time.monotonic()
        self.tables_done = 0
        self.rows = 0
        self.bytes = 0  # COPY stream bytes, finished and running tables
        self._done_size = 0
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reporter = threading.Thread(target=self._report_loop, daemon=True)

    def start(self) -> None:
        self._reporter.start()

    def table_started(self, table: str, size: int) -> None:
        with self._lock:
            self._running[table] = _Running(size)

    def add_bytes(self, table: str, nbytes: int) -> None:
        with self._lock:
            self._running[table].streamed += nbytes
            self.bytes += nbytes

    def table_done(self, table: str, rows: int, seconds: float) -> None:
        with self._lock:
            running = self._running.pop(table)
            self.tables_done += 1
            self.rows += rows
            self._done_size += running.size
        self.logger.info(
            "Table copied",
            extra={
                "table": table,
                "rows": rows,
                "bytes": running.streamed,
                "duration_seconds": round(seconds, 3),
                "mb_per_second": mb_per_second(running.streamed, seconds),
            },
        )

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            elapsed = time.monotonic() - self.started
            # A running table counts by its streamed bytes, but never beyond its
            # size (the COPY stream can be larger than the table on disk).
            done = self._done_size + sum(min(r.streamed, r.size) for r in self._running.values())
            fraction = min(done / self.total_size, 1.0)
            if self.tables_done >= self.total_tables:
                fraction = 1.0  # also when every table is empty (size 0)
            eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
            return {
                "tables_done": self.tables_done,
                "tables_total": self.total_tables,
                "rows": self.rows,
                "bytes": self.bytes,
                "elapsed_seconds": round(elapsed, 1),
                "eta_seconds": None if eta is None else round(eta, 1),
                "percent": round(100 * fraction, 1),
                # After the last rows: indexes, keys and the rest of the schema.
                "phase": "rows" if self.tables_done < self.total_tables else "indexes",
            }

    def _report_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.logger.info("Copy progress", extra=self.snapshot())

    def stop(self) -> None:
        self._stop.set()
        if self._reporter.is_alive():
            self._reporter.join()

    def finish(self) -> None:
        """Stop the reporter and log the final figures (all tables copied)."""
        self.stop()
        self.logger.info("Copy progress", extra=self.snapshot())


class CopyScanner:
    """Follows the one-stream load's SQL (pg_restore -> psql) and reports each table.

    pg_restore writes each table's rows as a text COPY block:
    `COPY schema.table (...) FROM stdin;`, one line per row, then `\\.`. The
    job's relay between the two tools hands every chunk to feed() on its way to
    psql, so rows and bytes are exact and a table is done when its block has passed.

    Memory stays bounded whatever the rows: inside a block only the last two
    bytes are carried between chunks (a terminator split across them), and the
    scan is C-speed (bytes.find and bytes.count), not per row in Python.
    Outside blocks, a partial line is carried only while it can still be a
    `COPY` header, and never beyond MAX_HEADER bytes.
    """

    _END = b"\\.\n"
    MAX_HEADER = 1 << 20

    def __init__(self, progress: Progress, sizes: dict[str, int]) -> None:
        self.progress = progress
        self.sizes = sizes  # "schema.table" (unquoted) -> size on the source's disk
        self._carry = b""  # bytes held back until the next chunk
        self._line_start = True  # the next byte starts a line
        self._table: str | None = None
        self._rows = 0
        self._started = 0.0

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        pos, end = 0, len(data)
        while pos < end:
            pos = self._data(data, pos) if self._table is not None else self._header(data, pos)

    def _header(self, data: bytes, pos: int) -> int:
        """Outside a block: read one line; returns where the next one starts."""
        eol = data.find(b"\n", pos)
        if eol == -1:  # an unfinished line: keep it only if it can be a COPY header
            rest = data[pos:]
            keep = self._line_start and len(rest) <= self.MAX_HEADER
            if keep and (rest.startswith(b"COPY ") or b"COPY ".startswith(rest)):
                self._carry = rest
            else:
                self._line_start = False
            return len(data)
        line, starts_line = data[pos:eol], self._line_start
        self._line_start = True
        if starts_line and line.startswith(b"COPY ") and line.endswith(b" FROM stdin;"):
            self._begin(_copy_target(line[len(b"COPY ") :]).decode("utf-8", "replace"))
        return eol + 1

    def _data(self, data: bytes, pos: int) -> int:
        """Inside a block: count rows up to the terminator or the end of the chunk."""
        assert self._table is not None
        end, marker = len(data), self._END
        if self._line_start:
            head = data[pos : pos + len(marker)]
            if head == marker:
                self._finish()
                return pos + len(marker)
            if len(head) < len(marker) and marker.startswith(head):
                self._carry = head  # a terminator may be split here: wait for more
                return end
        found = data.find(b"\n" + marker, pos)
        if found != -1:  # rows up to the line before the terminator
            self._count(data, pos, found + 1)
            self._line_start = True
            return found + 1
        last = data.rfind(b"\n", pos)
        tail = data[last + 1 :] if last != -1 else b""
        if last != -1 and len(tail) < len(marker) and marker.startswith(tail):
            self._count(data, pos, last + 1)
            self._carry, self._line_start = tail, True  # "\\" or "\\." at the very end
        else:
            self._count(data, pos, end)
            self._line_start = data.endswith(b"\n")
        return end

    def _count(self, data: bytes, start: int, stop: int) -> None:
        assert self._table is not None
        self._rows += data.count(b"\n", start, stop)
        self.progress.add_bytes(self._table, stop - start)

    def _begin(self, table: str) -> None:
        self._table, self._rows, self._started = table, 0, time.monotonic()
        self.progress.table_started(table, self.sizes.get(table.replace('"', ""), 0))

    def _finish(self) -> None:
        assert self._table is not None
        self.progress.table_done(self._table, self._rows, time.monotonic() - self._started)
        self._table = None


def _copy_target(rest: bytes) -> bytes:
    """The table name at the start of `rest`, as pg_dump wrote it (quoted names may
    hold spaces, dots and doubled quotes)."""
    quoted, i = False, 0
    while i < len(rest):
        byte = rest[i : i + 1]
        if byte == b'"':
            if quoted and rest[i + 1 : i + 2] == b'"':
                i += 1  # a doubled quote inside a quoted name
            else:
                quoted = not quoted
        elif byte == b" " and not quoted:
            break
        i += 1
    return rest[:i]


@dataclass(frozen=True)
class CopyStats:
    """What one copy moved, on either path."""

    tables: int
    rows: int
    bytes: int
    seconds: float
    # Validation figures measured during the copy (empty at ELT_VALIDATION=off).
    source_figures: dict[str, TableFigures] = field(default_factory=dict)
    destination_figures: dict[str, TableFigures] = field(default_factory=dict)
