"""Which task a worker takes next: ready, safe to run beside the others, most urgent."""

from __future__ import annotations

import heapq
import threading

from elt.parallel.tasks import Task

# A ready task: its rank, then its position in the plan (the tie-break).
_Ready = tuple[tuple[int, ...], int, Task]


class Scheduler:
    """Hands out ready tasks, most important first, to worker threads.

    At most `max_copies` row copies run at once; the job passes half the
    workers. One COPY stream alone keeps two cores busy (source backend,
    destination backend and the two psql), so a second stream only slows the
    largest table's copy, and with it the start of its index builds, the
    longest chain of the run (docs/performance.md).
    """

    def __init__(self, tasks: list[Task], max_copies: int) -> None:
        # Ready tasks in two heaps by (rank, position in `tasks`), row copies
        # apart: picking a task costs no scan of every waiting one, which with
        # thousands of tables took longer than the copy itself.
        self._tasks = tasks
        self._order = {id(t): i for i, t in enumerate(tasks)}
        self._ready_rows: list[_Ready] = []
        self._ready_other: list[_Ready] = []
        self._unmet: dict[int, int] = {}  # id(task) -> its deps not yet done
        self._dependents: dict[str, list[Task]] = {}
        self._waiting = len(tasks)
        self._done: set[str] = set()
        self._running = 0
        self._copies = 0
        self.max_copies = max_copies
        self._held: dict[str, list[bool]] = {}  # table -> modes of the running tasks' locks
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopped = False
        for task in tasks:
            self._unmet[id(task)] = len(task.deps)
            for dep in task.deps:
                self._dependents.setdefault(dep, []).append(task)
            if not task.deps:
                self._make_ready(task)

    def next(self) -> Task | None:
        with self._cond:
            while True:
                if self.stopped or (not self._waiting and self._running == 0):
                    return None
                task = self._most_urgent()
                if task is not None:
                    self._waiting -= 1
                    self._running += 1
                    self._copies += task.kind == "rows"
                    for table, exclusive in task.locks.items():
                        self._held.setdefault(table, []).append(exclusive)
                    return task
                if self._running == 0:  # nothing runs, and nothing can: a planning bug
                    self.error = RuntimeError(
                        f"unschedulable tasks: {[t.key for t in self._tasks if self._unmet[id(t)]]}"
                    )
                    self.stopped = True
                    self._cond.notify_all()
                    return None
                self._cond.wait()

    def _most_urgent(self) -> Task | None:
        """The ready task of lowest (rank, position) that may start now, taken off
        its heap; None if none may."""
        found = []
        if self._copies < self.max_copies:
            found.append((self._pop_lockable(self._ready_rows), self._ready_rows))
        found.append((self._pop_lockable(self._ready_other), self._ready_other))
        picks = [(item, heap) for item, heap in found if item is not None]
        if not picks:
            return None
        best = min(item for item, _ in picks)
        for item, heap in picks:
            if item is not best:
                heapq.heappush(heap, item)
        return best[2]

    def _pop_lockable(self, heap: list[_Ready]) -> _Ready | None:
        """The first item of `heap` whose task may take its locks now, popped; the
        ones before it (few: tasks on the tables being worked on) stay."""
        skipped, found = [], None
        while heap:
            item = heapq.heappop(heap)
            if self._lockable(item[2]):
                found = item
                break
            skipped.append(item)
        for item in skipped:
            heapq.heappush(heap, item)
        return found

    def _make_ready(self, task: Task) -> None:
        heap = self._ready_rows if task.kind == "rows" else self._ready_other
        heapq.heappush(heap, (task.rank, self._order[id(task)], task))

    def _lockable(self, task: Task) -> bool:
        for table, exclusive in task.locks.items():
            held = self._held.get(table, [])
            if held and (exclusive or any(held)):
                return False
        return True

    def done(self, task: Task) -> None:
        with self._cond:
            self._running -= 1
            self._copies -= task.kind == "rows"
            for table, exclusive in task.locks.items():
                self._held[table].remove(exclusive)
            if task.key not in self._done:
                self._done.add(task.key)
                for dependent in self._dependents.get(task.key, []):
                    self._unmet[id(dependent)] -= 1
                    if self._unmet[id(dependent)] == 0:
                        self._make_ready(dependent)
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._running -= 1  # the failed task's slot; no new task starts anyway
            if self.error is None and not self.stopped:
                self.error = error
            self.stopped = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """True when every task is done or the run stopped."""
        with self._cond:
            finished = self.stopped or (not self._waiting and self._running == 0)
            if not finished:
                self._cond.wait(timeout)
            return self.stopped or (not self._waiting and self._running == 0)
