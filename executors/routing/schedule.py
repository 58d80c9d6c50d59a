"""What a valid schedule is (DESIGN.md "Tasks inside a sharded VM"), checked row by row: every task once; start
≥ arrival and ≥ every parent's end; no task faster than its host allows (end − start ≥ work_core_s / (cores ×
cpu_score)); at every instant the cores of the tasks running on a part ≤ its vcpu (and their GPUs ≤ its GPUs);
GPU tasks only on parts that hold GPUs. `check_schedule` returns every violation, not only the first."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from shardplan.executors.routing.simulate import SCHEDULE_SCHEMA
from shardplan.executors.routing.tasks import TaskSet
from shardplan.executors.routing.vm import VirtualMachine

TOLERANCE_S = 1e-6


def read_schedule(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    missing = [c for c in SCHEDULE_SCHEMA if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: required column missing (expected {missing[0]})")
    try:
        return frame.select(pl.col(c).cast(t) for c, t in SCHEDULE_SCHEMA.items())
    except Exception as exc:  # polars' cast errors
        raise ValueError(f"{path}: a column is not of its type ({exc})") from exc


def check_schedule(vm: VirtualMachine, tasks: TaskSet, schedule: pl.DataFrame) -> list[str]:
    """Every rule the schedule breaks, one line each (empty: valid)."""
    problems: list[str] = []
    index = {task: i for i, task in enumerate(tasks.ids)}
    parts = {(p.host_id, p.shard): p for p in vm.parts}
    counts = schedule.group_by("task_id").len()
    for row in counts.filter(pl.col("len") > 1).iter_rows(named=True):
        problems.append(f"task {row['task_id']!r} is scheduled {row['len']} times")
    seen = set(schedule["task_id"].to_list())
    missing = [t for t in tasks.ids if t not in seen]
    if missing:
        problems.append(f"{len(missing)} task(s) not scheduled, e.g. {', '.join(repr(t) for t in missing[:5])}")
    end: dict[str, float] = dict(zip(schedule["task_id"], schedule["end_s"]))
    by_part: dict[tuple[str, int], list[tuple[float, float, int, str]]] = {}
    for row in schedule.iter_rows(named=True):
        task = row["task_id"]
        times = (row["start_s"], row["end_s"])
        if any(t is None or t != t or t in (float("inf"), float("-inf")) for t in times):
            problems.append(f"task {task!r}: start_s and end_s must be finite numbers, got {times}")
            continue
        if task not in index:
            problems.append(f"task {task!r} is not in the tasks table")
            continue
        i = index[task]
        part = parts.get((row["host_id"], row["shard"]))
        if part is None:
            problems.append(f"task {task!r} on host {row['host_id']!r} shard {row['shard']}: not a compute part of "
                            f"{vm.request_id}")
            continue
        if row["cores"] != int(tasks.cores[i]):
            problems.append(f"task {task!r} runs on {row['cores']} cores; it needs {int(tasks.cores[i])}")
        if row["start_s"] < tasks.arrival[i] - TOLERANCE_S:
            problems.append(f"task {task!r} starts at {row['start_s']:.6g} s, before it arrives ({tasks.arrival[i]:.6g} s)")
        for parent in tasks.parents[i]:
            parent_end = end.get(tasks.ids[parent])
            if parent_end is not None and row["start_s"] < parent_end - TOLERANCE_S:
                problems.append(f"task {task!r} starts at {row['start_s']:.6g} s, before its parent "
                                f"{tasks.ids[parent]!r} ends ({parent_end:.6g} s)")
        fastest = tasks.work[i] / (tasks.cores[i] * part.cpu_score)
        if row["end_s"] - row["start_s"] < fastest - max(TOLERANCE_S, 1e-9 * fastest):
            problems.append(f"task {task!r} runs {row['end_s'] - row['start_s']:.6g} s on {part.host_id}; its work "
                            f"needs ≥ {fastest:.6g} s there (cpu_score {part.cpu_score:g})")
        if tasks.gpu[i] > part.gpu:
            problems.append(f"task {task!r} needs {int(tasks.gpu[i])} GPU(s); part {part.host_id} has {part.gpu}")
        if row["remote_gib"] is not None and row["remote_gib"] < 0:
            problems.append(f"task {task!r}: negative remote_gib")
        by_part.setdefault((part.host_id, part.shard), []).append((row["start_s"], row["end_s"], row["cores"],
                                                                   int(tasks.gpu[i]), task))
    for key, runs in by_part.items():
        for what, column, limit in (("cores", 2, parts[key].vcpu), ("GPUs", 3, parts[key].gpu)):
            events = sorted([(r[0], 1, r[column], r[4]) for r in runs] + [(r[1], 0, -r[column], r[4]) for r in runs])
            used = 0
            for moment, _kind, delta, task in events:  # ends (kind 0) before starts at the same instant
                used += delta
                if used > limit:
                    problems.append(f"part {key[0]} (shard {key[1]}): {used} {what} in use at {moment:.6g} s when "
                                    f"task {task!r} starts; the part has {limit} {'vcpu' if what == 'cores' else what}")
                    break
    return problems
