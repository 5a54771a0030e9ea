"""The parallel copy's tasks: post-data split into per-table builds (elt/parallel/tasks.py).

No database: the catalog rows are written out as elt/sql/staging_catalog.sql returns them.
"""

from __future__ import annotations

from elt.parallel.tables import CopyTable
from elt.parallel.tasks import build_tasks
from elt.parallel.toc import TocEntry

STAGING = "elt_staging_0"
STAGED = {"shop": STAGING}
ORDERS = CopyTable("shop", "orders", 90_000, ("id", "customer_id", "tags"), binary=True)
CUSTOMERS = CopyTable("shop", "customers", 5_000, ("id", "name"), binary=True)


def toc(dump_id: int, kind: str, oid: int, name: str) -> TocEntry:
    return TocEntry(dump_id, oid, kind, f"{dump_id}; 1259 {oid} {kind} shop {name} postgres")


# The columns of elt/sql/staging_catalog.sql, in its order.
CATALOG_COLUMNS = (
    "kind", "oid", "nspname", "relname", "relkind", "contype", "conindid", "ref_schema",
    "ref_table", "method", "conname", "index_def", "condeferrable", "condeferred",
)  # fmt: skip


def catalog_row(*values: object) -> dict[str, object]:
    return dict(zip(CATALOG_COLUMNS, values, strict=True))


def index_row(oid: int, table: str, method: str, relkind: str = "r") -> dict[str, object]:
    return catalog_row(
        "i",
        oid,
        STAGING,
        table,
        relkind,
        None,
        oid,
        None,
        None,
        method,
        None,
        None,
        None,
        None,
    )


def constraint_row(
    oid: int,
    table: str,
    contype: str,
    index: int,
    references: str | None = None,
    *,
    name: str = "",
    method: str = "btree",
) -> dict[str, object]:
    ref_schema = None if references is None else STAGING
    index_def = (
        f"CREATE UNIQUE INDEX {name} ON {STAGING}.{table} USING btree (id)"
        if contype in ("p", "u")
        else None
    )
    return catalog_row(
        "c", oid, STAGING, table, "r", contype, index, ref_schema, references, method,
        name, index_def, False, False,
    )  # fmt: skip


# The post-data of a small shop schema, in pg_dump's order.
ORDERS_PKEY = toc(10, "CONSTRAINT", 2001, "orders orders_pkey")
CUSTOMERS_PKEY = toc(11, "CONSTRAINT", 2002, "customers customers_pkey")
ORDERS_PLACED = toc(12, "INDEX", 1001, "orders_placed_idx")
ORDERS_TAGS = toc(13, "INDEX", 1002, "orders_tags_idx")
TOTALS_DAY = toc(14, "INDEX", 1003, "daily_totals_day_idx")  # on a materialized view
EVENTS_KIND = toc(15, "INDEX", 1004, "events_kind_idx")  # on a partitioned parent
ORDERS_TRIGGER = toc(16, "TRIGGER", 3001, "orders orders_audit")
ORDERS_CUSTOMER_FK = toc(17, "FK CONSTRAINT", 2003, "orders orders_customer_fk")
ORDERS_EVENT_FK = toc(18, "FK CONSTRAINT", 2004, "orders orders_event_fk")
ORDERS_LEGACY_FK = toc(19, "FK CONSTRAINT", 2005, "orders orders_legacy_fk")
ORDERS_NO_OVERLAP = toc(21, "CONSTRAINT", 2006, "orders orders_no_overlap")  # EXCLUDE
POST_DATA = [
    ORDERS_PKEY,
    CUSTOMERS_PKEY,
    ORDERS_PLACED,
    ORDERS_TAGS,
    TOTALS_DAY,
    EVENTS_KIND,
    ORDERS_TRIGGER,
    ORDERS_CUSTOMER_FK,
    ORDERS_EVENT_FK,
    ORDERS_LEGACY_FK,
    ORDERS_NO_OVERLAP,
]
CATALOG = {
    ("c", 2001): constraint_row(2001, "orders", "p", 1101, name="orders_pkey"),
    ("c", 2002): constraint_row(2002, "customers", "p", 1102, name="customers_pkey"),
    ("c", 2006): constraint_row(2006, "orders", "x", 1103, name="orders_no_overlap", method="gist"),
    ("i", 1001): index_row(1001, "orders", "btree"),
    ("i", 1002): index_row(1002, "orders", "gin"),
    ("i", 1003): index_row(1003, "daily_totals", "btree", relkind="m"),
    ("i", 1004): index_row(1004, "events", "btree", relkind="p"),
    # references the customers' primary key, built by a task
    ("c", 2003): constraint_row(2003, "orders", "f", 1102, references="customers"),
    # references the partitioned parent's index, which no task builds
    ("c", 2004): constraint_row(2004, "orders", "f", 1004, references="events"),
    # references a copied table through an index no task builds
    ("c", 2005): constraint_row(2005, "orders", "f", 1999, references="customers"),
}
ROWS_ORDERS, ROWS_CUSTOMERS = "rows:shop.orders", "rows:shop.customers"


def test_build_tasks_splits_post_data_into_per_table_builds_and_the_rest() -> None:
    tasks, remainder = build_tasks([CUSTOMERS, ORDERS], POST_DATA, CATALOG, STAGED)

    summary = {
        t.key: (
            t.kind,
            t.table.label,
            t.entry.dump_id if t.entry else t.statement,
            t.deps,
            t.locks,
        )
        for t in tasks
    }
    orders, customers = '"elt_staging_0"."orders"', '"elt_staging_0"."customers"'
    assert summary == {
        ROWS_ORDERS: ("rows", "shop.orders", None, set(), {}),
        ROWS_CUSTOMERS: ("rows", "shop.customers", None, set(), {}),
        # A primary key in two steps. Its unique index takes CREATE INDEX's
        # SHARE lock, which only conflicts with the keys ...
        "index:10": (
            "build",
            "shop.orders",
            "CREATE UNIQUE INDEX orders_pkey ON elt_staging_0.orders USING btree (id)",
            {ROWS_ORDERS},
            {"shop.orders": False},
        ),
        # ... and then the constraint, under its name (what a foreign key waits
        # for), locks its table against every other build on it.
        "entry:10": (
            "build",
            "shop.orders",
            f'ALTER TABLE ONLY {orders} ADD CONSTRAINT "orders_pkey" '
            'PRIMARY KEY USING INDEX "orders_pkey"',
            {ROWS_ORDERS, "index:10"},
            {"shop.orders": True},
        ),
        "index:11": (
            "build",
            "shop.customers",
            "CREATE UNIQUE INDEX customers_pkey ON elt_staging_0.customers USING btree (id)",
            {ROWS_CUSTOMERS},
            {"shop.customers": False},
        ),
        "entry:11": (
            "build",
            "shop.customers",
            f'ALTER TABLE ONLY {customers} ADD CONSTRAINT "customers_pkey" '
            'PRIMARY KEY USING INDEX "customers_pkey"',
            {ROWS_CUSTOMERS, "index:11"},
            {"shop.customers": True},
        ),
        "entry:12": ("build", "shop.orders", 12, {ROWS_ORDERS}, {"shop.orders": False}),
        "entry:13": ("build", "shop.orders", 13, {ROWS_ORDERS}, {"shop.orders": False}),
        # a foreign key waits for both tables' rows and the referenced key
        "entry:17": (
            "build",
            "shop.orders",
            17,
            {ROWS_ORDERS, ROWS_CUSTOMERS, "entry:11"},
            {"shop.orders": True, "shop.customers": True},
        ),
        # an exclusion constraint has no USING INDEX form: restored whole
        "entry:21": ("build", "shop.orders", 21, {ROWS_ORDERS}, {"shop.orders": True}),
    }
    assert sorted(e.dump_id for e in remainder) == [14, 15, 16, 18, 19]


def test_build_tasks_ranks_the_largest_table_first_and_slow_index_methods_early() -> None:
    tasks, _ = build_tasks([CUSTOMERS, ORDERS], POST_DATA, CATALOG, STAGED)
    assert [t.key for t in sorted(tasks, key=lambda t: t.rank)] == [
        ROWS_ORDERS,
        "entry:10",  # attaching orders' primary key: exclusive, but only a catalog change
        "entry:21",  # an exclusion constraint, exclusive too
        "entry:13",  # GIN: the longest build starts first
        "index:10",  # the primary key's unique index
        "entry:12",  # btree
        "entry:17",  # foreign key
        ROWS_CUSTOMERS,
        "entry:11",
        "index:11",
    ]


# pg_restore --use-list restores the remainder in the order of its list, and
# pg_dump writes the COMMENT on a constraint right after the constraint.
def test_build_tasks_keeps_the_remainder_in_pg_dump_order() -> None:
    fk_comment = TocEntry(
        20, 0, "COMMENT", "20; 0 0 COMMENT shop CONSTRAINT orders_event_fk ON orders postgres"
    )
    post_data = [*POST_DATA[:9], fk_comment, *POST_DATA[9:]]
    _, remainder = build_tasks([CUSTOMERS, ORDERS], post_data, CATALOG, STAGED)
    assert [e.dump_id for e in remainder] == [14, 15, 16, 18, 20, 19]
