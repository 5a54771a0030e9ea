"""Which task a worker takes next: ready, safe to run beside the others, most urgent."""

from __future__ import annotations

import threading

from elt.parallel.tasks import Task


class Scheduler:
    """Hands out ready tasks, most important first, to worker threads.

    At most `max_copies` row copies run at once; the job passes half the
    workers. One COPY stream alone keeps two cores busy (source backend,
    destination backend and the two psql), so a second stream only slows the
    largest table's copy, and with it the start of its index builds, the
    longest chain of the run (docs/performance.md).
    """

    def __init__(self, tasks: list[Task], max_copies: int) -> None:
        self._waiting = list(tasks)
        self._done: set[str] = set()
        self._running = 0
        self._copies = 0
        self.max_copies = max_copies
        self._held: dict[str, list[bool]] = {}  # table -> modes of the running tasks' locks
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self.stopped = False

    def next(self) -> Task | None:
        with self._cond:
            while True:
                if self.stopped or (not self._waiting and self._running == 0):
                    return None
                ready = [
                    t
                    for t in self._waiting
                    if t.deps <= self._done
                    and (t.kind != "rows" or self._copies < self.max_copies)
                    and self._lockable(t)
                ]
                if ready:
                    task = min(ready, key=lambda t: t.rank)
                    self._waiting.remove(task)
                    self._running += 1
                    self._copies += task.kind == "rows"
                    for table, exclusive in task.locks.items():
                        self._held.setdefault(table, []).append(exclusive)
                    return task
                if self._running == 0:  # nothing runs, and nothing can: a planning bug
                    self.error = RuntimeError(
                        f"unschedulable tasks: {[t.key for t in self._waiting]}"
                    )
                    self.stopped = True
                    self._cond.notify_all()
                    return None
                self._cond.wait()

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
            self._done.add(task.key)
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
