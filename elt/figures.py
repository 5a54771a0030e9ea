"""Both sides' validation figures for a run: what they are taken with, and when.

The source's figures are taken in a thread of their own, in the snapshot's
session, beside other work: after the one-stream copy they start as soon as
pg_dump has exited, while psql still builds indexes and keys (the source is
idle then); after the parallel copy, beside the destination's figures. The
destination's figures are taken after the commit: in the run's own
destination session, and in a second one when the copy was large.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType

import psycopg

from elt.config import Settings, ValidationLevel
from elt.connect import Connection, connect, server_encoding
from elt.errors import ConnectionFailed
from elt.failures import figures_failed
from elt.progress import CopyStats
from elt.validate import (
    RECORD_HASH_MIN_VERSION,
    Figures,
    TableFigures,
    collect,
    digest_encoding,
    prepare_session,
    sequence_values,
)

# With this many tables the restore's tail is the destination's DDL, statement
# after statement, and the source's figures beside it slowed it about as much
# as they saved: they wait for the commit there (docs/performance.md).
TAIL_MAX_TABLES = 200
# Sessions that take the destination's figures after the commit, once the
# source's are done: one session would leave a core idle. Below these sizes a
# second login costs more than it saves.
DESTINATION_SESSIONS = 2
SPLIT_MIN_BYTES = 16_000_000
SPLIT_MIN_TABLES = 200
# How long stop() waits for the thread before it sends the cancel again: a cancel
# that arrives between two queries is lost, and the next query must end too.
CANCEL_AGAIN_SECONDS = 1.0


@dataclass(frozen=True)
class BothFigures:
    source: Figures
    after: dict[str, int | None]  # the source's sequence values after the copy
    destination: Figures


@dataclass(frozen=True)
class Measuring:
    """What both sides' figures are taken with (the same on each side). `rowless`
    tables (unlogged ones on a standby source) are measured on neither side."""

    schemas: list[str]
    level: ValidationLevel
    record_hash: bool
    convert_to: str | None
    rowless: frozenset[str]

    @classmethod
    def of(
        cls,
        schemas: list[str],
        level: ValidationLevel,
        rowless: frozenset[str],
        *,
        source: Connection,
        destination: Connection,
    ) -> Measuring:
        """Settled before the copy, from the run's sessions on both servers."""
        versions = (source.info.server_version, destination.info.server_version)
        encodings = (server_encoding(source), server_encoding(destination))
        return cls(
            schemas,
            level,
            min(versions) >= RECORD_HASH_MIN_VERSION,
            digest_encoding(*encodings),
            rowless,
        )

    def figures(
        self,
        conn: Connection,
        known: dict[str, TableFigures],
        stop: threading.Event | None = None,
        *,
        source: bool,
        claim: Callable[[str], bool] | None = None,
    ) -> Figures:
        figures = collect(
            conn,
            self.schemas,
            self.level,
            stop,
            record_hash=self.record_hash,
            recompute_matviews=source,
            skip=frozenset(known) | self.rowless,
            convert_to=self.convert_to,
            claim=claim,
        )
        figures.tables.update(known)
        return figures


class SourceFigures:
    """The source's figures and its sequences' values after the copy, taken in a
    thread, in the snapshot's session.

    From start() until that thread has ended, it is the session's only user:
    other threads only cancel its query (cancel_safe is made for that).
    Leaving the `with` block stops figures still being taken (a failed load, a
    signal) and waits for the thread, so that the snapshot closes after it.
    """

    def __init__(self, conn: Connection, how: Measuring) -> None:
        self._conn = conn
        self._how = how
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="source-figures")
        self._future: Future[tuple[Figures, dict[str, int | None]]] | None = None

    def start(self, known: dict[str, TableFigures] | None = None) -> None:
        """Start taking them, once (later calls do nothing); `known`: tables the
        copy measured already."""
        if self._future is None:
            self._future = self._executor.submit(self._take, dict(known or {}))

    def _take(self, known: dict[str, TableFigures]) -> tuple[Figures, dict[str, int | None]]:
        figures = self._how.figures(self._conn, known, self._stop, source=True)
        # Sequences are outside the snapshot: read once pg_dump has read them.
        return figures, sequence_values(self._conn, self._how.schemas)

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def result(self) -> tuple[Figures, dict[str, int | None]]:
        """Wait for them (starting them first if need be); a failure is raised here."""
        self.start()
        assert self._future is not None
        return self._future.result()

    def stop(self) -> None:
        """Stop figures still being taken, and wait for the thread to end."""
        future = self._future
        if future is not None and not future.done():
            self._stop.set()  # no further table ...
            while not future.done():
                with contextlib.suppress(psycopg.Error):
                    self._conn.cancel_safe(timeout=5)  # ... and the running query ends now
                wait([future], timeout=CANCEL_AGAIN_SECONDS)
        self._executor.shutdown(wait=True)

    def __enter__(self) -> SourceFigures:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def measure(
    settings: Settings,
    how: Measuring,
    source_side: SourceFigures,
    stats: CopyStats,
    session: Connection,
) -> BothFigures:
    """Both sides' figures, once the copy (which moved `stats`) has committed;
    `session`: the run's destination session (DestinationFigures).

    After the one-stream copy of fewer than TAIL_MAX_TABLES tables, `source_side`
    has been at work since pg_dump's exit (docs/performance.md: hashing the
    source while pg_dump streams it costs more than it saves). The parallel copy
    measured its tables while it ran; only the rest (materialized views,
    sequences, and anything it could not vouch for) is measured here, the
    source's beside the destination's.
    """
    known = stats.destination_figures  # empty after the one-stream copy
    large = stats.bytes >= SPLIT_MIN_BYTES or stats.tables >= SPLIT_MIN_TABLES
    sessions = DESTINATION_SESSIONS if large and not known and source_side.done() else 1
    source_side.start(stats.source_figures)
    destination_figures = DestinationFigures(settings, how, session, known, sessions).take()
    try:
        source_figures, after = source_side.result()
    except psycopg.Error as exc:
        raise figures_failed("source", exc, committed=True) from None
    return BothFigures(source_figures, after, destination_figures)


class DestinationFigures:
    """The destination's figures, taken after the commit by `sessions` sessions
    at once, each claiming the next relation not yet claimed.

    The first is `run_session`, the run's own destination session (autocommit,
    holding the run's lock): it measures inside a transaction that is rolled
    back, so it comes out as it went in, and the run closes it. The others log
    in; one that cannot (the role's connection limit, say) leaves its share to
    the rest.
    """

    def __init__(
        self,
        settings: Settings,
        how: Measuring,
        run_session: Connection,
        known: dict[str, TableFigures],
        sessions: int = DESTINATION_SESSIONS,
    ) -> None:
        self._settings = settings
        self._count = sessions
        self._how = how
        self._run_session = run_session
        self._known = known
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sessions: list[Connection] = []  # the ones it logged in: take() closes them

    def take(self) -> Figures:
        try:
            parts = self._in_threads()
        finally:
            # Here, once every thread has ended: never under a thread's query or cancel.
            for conn in self._sessions:
                conn.close()
        tables = {k: v for part in parts if part is not None for k, v in part.tables.items()}
        assert parts[0] is not None
        return Figures(tables, parts[0].sequences)

    def _in_threads(self) -> list[Figures | None]:
        with ThreadPoolExecutor(self._count, "destination-figures") as pool:
            futures: list[Future[Figures | None]] = [pool.submit(self._measure, self._run_session)]
            futures += [pool.submit(self._another) for _ in range(self._count - 1)]
            try:
                return [f.result() for f in futures]
            except BaseException as exc:
                self._stop.set()  # no further table ...
                for conn in [self._run_session, *self._sessions]:
                    with contextlib.suppress(psycopg.Error):
                        conn.cancel_safe(timeout=5)  # ... and the running queries end now
                if isinstance(exc, psycopg.Error):
                    raise figures_failed("destination", exc, committed=True) from None
                raise

    def _claim(self, key: str) -> bool:
        with self._lock:
            if key in self._claimed:
                return False
            self._claimed.add(key)
            return True

    def _another(self) -> Figures | None:
        try:
            conn = connect(self._settings.destination, self._settings)
        except ConnectionFailed:
            return None  # the other sessions take its share
        self._sessions.append(conn)  # take() closes it
        return self._measure(conn)

    def _measure(self, conn: Connection) -> Figures:
        # Read-only work: rolled back, with the validation's session settings.
        with conn.transaction(force_rollback=True):
            prepare_session(conn)
            return self._how.figures(conn, self._known, self._stop, source=False, claim=self._claim)
