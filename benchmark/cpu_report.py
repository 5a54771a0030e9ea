"""The report's CPU figures: medians over a method's runs, and their table.

A run's figures are measured by benchmark/runner.py (Bench.cpu_after) with
benchmark/cpu.py; docs/performance.md ("The floor on 2 cores") says what
they count.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from benchmark.cpu import floor_seconds
from benchmark.runner import RunResult


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


CPU_PARTS = ("source", "destination", "method", "total")


def cpu_summary(good: Sequence[RunResult]) -> dict[str, Any]:
    """Medians over the runs that measured CPU: each server's CPU seconds, the
    method's, the total (the median of the runs' totals, so the parts need
    not add up to it exactly), the floor on the machine's cores, the CPU of
    the CHECKPOINT after each run, and each server's CPU by kind of process;
    {} when no run measured it."""
    runs = [r for r in good if r.cpu]
    if not runs:
        return {}

    def part(r: RunResult, name: str) -> float:
        value = r.cpu[name]
        return float(value["total"] if isinstance(value, dict) else value)

    out: dict[str, Any] = {
        f"{name}_s": statistics.median(part(r, name) for r in runs) for name in CPU_PARTS
    }
    out["runs"] = len(runs)
    out["cores"] = runs[0].cpu.get("cores")
    out["floor_s"] = floor_seconds(out["total_s"], out["cores"])
    out["wall_s"] = statistics.median(r.wall_s for r in runs)
    after = [r.cpu["after"] for r in runs if "after" in r.cpu]
    out["checkpoint_after_s"] = (
        statistics.median(a["source"] + a["destination"] for a in after) if after else None
    )
    for side in ("source", "destination"):
        kinds = sorted({k for r in runs for k in r.cpu[side] if k != "total"})
        out[f"{side}_by_kind"] = {
            k: statistics.median(float(r.cpu[side].get(k, 0.0)) for r in runs) for k in kinds
        }
    return out


def print_cpu(rows: list[dict[str, Any]]) -> None:
    """CPU seconds per method and side, and the floor they set (see cpu_summary)."""
    measured = [r for r in rows if r.get("cpu")]
    if not measured:
        print("CPU: not measured")
        return
    cores = measured[0]["cpu"]["cores"]
    print(
        "\nCPU seconds (user + system, medians of successful runs): each server's processes "
        "(the postmaster's reaped children and the ones still running), the method's own "
        f"processes; floor = total CPU / {cores} cores, the shortest wall time that CPU "
        "allows; busy = floor / wall; after: the CHECKPOINT after each run (not in total)"
    )
    head = (
        f"{'method':<11} {'source':>7} {'dest':>7} {'method':>7} {'total':>7} "
        f"{'floor s':>7} {'wall s':>7} {'busy':>5} {'after':>6}"
    )
    print(head)
    print("-" * len(head))
    for row in measured:
        c = row["cpu"]
        busy = c["floor_s"] / c["wall_s"] if c["wall_s"] else None
        print(
            f"{row['method']:<11} {c['source_s']:7.2f} {c['destination_s']:7.2f} "
            f"{c['method_s']:7.2f} {c['total_s']:7.2f} {c['floor_s']:7.2f} {c['wall_s']:7.2f} "
            f"{_fmt(busy, '.0%'):>5} {_fmt(c['checkpoint_after_s']):>6}"
        )
    for row in measured:
        for side in ("source", "destination"):
            kinds = row["cpu"][f"{side}_by_kind"]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in kinds.items() if v >= 0.005)
            print(f"  {row['method']} {side}: {parts or '-'}")
