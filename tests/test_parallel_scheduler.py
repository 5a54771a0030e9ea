"""The parallel copy's scheduler (elt/parallel/scheduler.py): dependencies, the row-copy cap,
table locks. No database; no test waits on the clock.
"""

from __future__ import annotations

import threading

import pytest

from elt.parallel.scheduler import Scheduler
from elt.parallel.tables import CopyTable
from elt.parallel.tasks import Task

ORDERS = CopyTable("shop", "orders", 90_000, ("id", "customer_id", "tags"), binary=True)


STEP_SAFETY_NET_SECONDS = 30.0


def task(
    key: str,
    kind: str = "build",
    *,
    rank: tuple[int, ...],
    deps: tuple[str, ...] = (),
    locks: dict[str, bool] | None = None,
) -> Task:
    return Task(key, kind, ORDERS, deps=set(deps), rank=rank, locks=locks or {})


def step(scheduler: Scheduler) -> Task | None:
    """scheduler.next(), called only when a task is ready or none is left: it must not block.

    It runs in a thread so that a scheduler that does block fails the test
    (after a safety net) instead of hanging it.
    """
    result: list[Task | None] = []
    thread = threading.Thread(target=lambda: result.append(scheduler.next()))
    thread.start()
    thread.join(STEP_SAFETY_NET_SECONDS)
    if thread.is_alive():
        scheduler.stop()  # wakes it up
        thread.join()
        pytest.fail("Scheduler.next() blocked although a task was ready")
    return result[0]


# Each case: max_copies, the tasks, and a script of ("next", the key it must
# hand out, or None: nothing left) and ("done", key) steps. "spare" tasks rank
# last and are always ready: handing one out proves that a better-ranked task
# was held back on purpose.
SPARE = task("spare", rank=(9,))
SPARE_2 = task("spare 2", rank=(10,))
SCHEDULES: dict[str, tuple[int, list[Task], list[tuple[str, str | None]]]] = {
    "a build waits for its table's rows": (
        2,
        [
            task("rows:t", "rows", rank=(0, 0)),
            task("index:t", rank=(0, 1), deps=("rows:t",)),
            SPARE,
        ],
        [
            ("next", "rows:t"),
            ("next", "spare"),
            ("done", "rows:t"),
            ("next", "index:t"),
            ("done", "index:t"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
    "a foreign key waits for every dependency": (
        2,
        [
            task("rows:a", "rows", rank=(0, 0)),
            task("rows:b", "rows", rank=(1, 0)),
            task("fk", rank=(0, 5), deps=("rows:a", "rows:b")),
            SPARE,
        ],
        [
            ("next", "rows:a"),
            ("next", "rows:b"),
            ("done", "rows:a"),
            ("next", "spare"),
            ("done", "rows:b"),
            ("next", "fk"),
            ("done", "spare"),
            ("done", "fk"),
            ("next", None),
        ],
    ),
    "at most max_copies row copies at once": (
        2,
        [
            task("rows:a", "rows", rank=(-3, 0)),
            task("rows:b", "rows", rank=(-2, 0)),
            task("rows:c", "rows", rank=(-1, 0)),
            SPARE,
        ],
        [
            ("next", "rows:a"),
            ("next", "rows:b"),
            ("next", "spare"),
            ("done", "rows:a"),
            ("next", "rows:c"),
            ("done", "rows:b"),
            ("done", "rows:c"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
    "an exclusive lock waits for shared ones": (
        4,
        [
            task("index 1", rank=(0, 1), locks={"t": False}),
            task("pkey", rank=(0, 2), locks={"t": True}),
            task("index 2", rank=(0, 3), locks={"t": False}),
            SPARE,
            SPARE_2,
        ],
        [
            ("next", "index 1"),
            ("next", "index 2"),  # shared with shared: fine
            ("next", "spare"),
            ("done", "index 1"),
            ("next", "spare 2"),  # "index 2" still holds its shared lock
            ("done", "index 2"),
            ("next", "pkey"),
            ("done", "pkey"),
            ("done", "spare"),
            ("done", "spare 2"),
            ("next", None),
        ],
    ),
    "shared locks wait for an exclusive one; other tables do not": (
        4,
        [
            task("pkey", rank=(0, 1), locks={"t": True}),
            task("index t", rank=(0, 2), locks={"t": False}),
            task("index u", rank=(0, 3), locks={"u": False}),
            SPARE,
        ],
        [
            ("next", "pkey"),
            ("next", "index u"),
            ("next", "spare"),
            ("done", "pkey"),
            ("next", "index t"),
            ("done", "index t"),
            ("done", "index u"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
    "a foreign key locks both of its tables": (
        4,
        [
            task("index u", rank=(0, 1), locks={"u": False}),
            task("fk", rank=(0, 2), locks={"t": True, "u": True}),
            task("index t", rank=(0, 3), locks={"t": False}),
            SPARE,
        ],
        [
            ("next", "index u"),
            ("next", "index t"),
            ("next", "spare"),
            ("done", "index u"),
            ("done", "index t"),
            ("next", "fk"),
            ("done", "fk"),
            ("done", "spare"),
            ("next", None),
        ],
    ),
}


@pytest.mark.parametrize(("max_copies", "tasks", "script"), SCHEDULES.values(), ids=SCHEDULES)
def test_scheduler_hands_out_tasks_in_a_safe_order(
    max_copies: int, tasks: list[Task], script: list[tuple[str, str | None]]
) -> None:
    scheduler = Scheduler(tasks, max_copies=max_copies)
    running: dict[str, Task] = {}
    for number, (action, key) in enumerate(script):
        if action == "next":
            got = step(scheduler)
            assert (got.key if got else None) == key, f"step {number}"
            if got is not None:
                running[got.key] = got
        else:
            assert key is not None
            scheduler.done(running.pop(key))
    assert running == {}
    assert scheduler.error is None


def test_scheduler_stop_ends_the_hand_out() -> None:
    scheduler = Scheduler([task("a", rank=(0,)), task("b", rank=(1,))], max_copies=2)
    first = step(scheduler)
    assert first is not None
    assert first.key == "a"
    scheduler.stop()
    assert step(scheduler) is None  # "b" is ready, but the run stopped
    assert scheduler.stopped
    assert scheduler.error is None


@pytest.mark.parametrize(
    "tasks",
    [
        [task("orphan", rank=(0,), deps=("missing",))],
        [task("a", rank=(0,), deps=("b",)), task("b", rank=(1,), deps=("a",))],
    ],
    ids=["missing dependency", "dependency cycle"],
)
def test_scheduler_reports_tasks_that_can_never_run(tasks: list[Task]) -> None:
    scheduler = Scheduler(tasks, max_copies=2)
    assert step(scheduler) is None
    assert isinstance(scheduler.error, RuntimeError)
    for t in tasks:
        assert t.key in str(scheduler.error)
    assert scheduler.stopped


class ReferenceScheduler:
    """The rule the scheduler implements, written as a scan of every waiting task:
    of the ready tasks that may start now, the lowest rank, the first in the plan."""

    def __init__(self, tasks: list[Task], max_copies: int) -> None:
        self.waiting, self.done, self.running = list(tasks), set[str](), list[Task]()
        self.max_copies = max_copies

    def startable(self) -> list[Task]:
        copies = sum(t.kind == "rows" for t in self.running)
        return [
            t
            for t in self.waiting
            if t.deps <= self.done
            and (t.kind != "rows" or copies < self.max_copies)
            and all(
                not (exclusive or other.locks[table])
                for table, exclusive in t.locks.items()
                for other in self.running
                if table in other.locks
            )
        ]

    def next(self) -> Task:
        task = min(self.startable(), key=lambda t: t.rank)
        self.waiting.remove(task)
        self.running.append(task)
        return task

    def finish(self, task: Task) -> None:
        self.running.remove(task)
        self.done.add(task.key)


def many_tables_plan(count: int) -> list[Task]:
    """Rows, a key in two steps, an index, a foreign key to the previous table and
    the checks per table, with ties in rank (equal sizes) as in a real plan."""
    tasks = []
    for i in range(count):
        table, size = f"t{i}", -(i % 3)
        rows = task(f"rows:{table}", "rows", rank=(size, 0))
        index = task(f"index:{table}", rank=(size, 3), deps=(rows.key,), locks={table: False})
        key = task(f"key:{table}", rank=(size, 1), deps=(rows.key, index.key), locks={table: True})
        other = task(f"other:{table}", rank=(size, 4), deps=(rows.key,), locks={table: False})
        tasks += [rows, index, key, other]
        if i:
            deps = (rows.key, f"key:t{i - 1}")
            locks = {table: True, f"t{i - 1}": True}
            tasks.append(task(f"fk:{table}", rank=(size, 5), deps=deps, locks=locks))
        check = task(f"check:{table}", "check_destination", rank=(1, size), deps=(rows.key,))
        check.locks = {table: False}
        tasks.append(check)
    return tasks


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_tasks_come_in_the_order_of_the_rule(workers: int) -> None:
    plan = many_tables_plan(40)
    reference, scheduler = ReferenceScheduler(plan, 1), Scheduler(plan, max_copies=1)
    handed_out: list[Task] = []
    while reference.waiting or reference.running:
        # Fill the free workers, then finish the oldest running task.
        while len(reference.running) < workers and reference.startable():
            expected = reference.next()
            got = step(scheduler)
            assert got is expected, (got and got.key, expected.key)
            handed_out.append(expected)
        oldest = reference.running[0]
        reference.finish(oldest)
        scheduler.done(oldest)
    assert step(scheduler) is None
    assert len(handed_out) == len(plan)
