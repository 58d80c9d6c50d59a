"""The `tasks` table of DESIGN.md ("Tasks inside a sharded VM"), validated, and loaders for the real task traces.

Columns: `task_id` (str, unique), `arrival_s` (float ≥ 0, default 0; a task is ready when it has arrived and its
parents have finished), `work_core_s` (float > 0: core-seconds on a host of cpu_score 1.0), `cores` (int ≥ 1,
default 1), `memory_gib` (float ≥ 0, default 0), `gpu` (int ≥ 0, default 0), `parents` (space-separated task ids),
`input_gib`, `output_gib` (float ≥ 0, default 0: data read from the parents, written for the children).

Every error names the file, the row (1 = the first data row) and the column, like every input of shardplan.

Trace loaders (`../shared/datasets/task-traces/`, each with its SOURCE.md):

- :func:`wfcommons_tasks`: one WfCommons execution (Makeflow BLAST/BWA, nf-core); `work_core_s` is the measured
  runtime × cores, i.e. the recorded hosts (Chameleon workers) are taken as cpu_score 1.0; memory, read and written
  bytes become memory_gib, input_gib and output_gib; `recorded_host` keeps the host the real run used.
- :func:`alibaba_batch_tasks`: the Alibaba v2017 batch task table, one task per row (its instances run as one unit):
  arrival = task_create_time, work = (task_end_time − task_create_time) × cores, cores = ceil(plan_cpu / 100)
  (the v2018 convention, 100 = one core; v2017 states no unit), memory = plan_mem × `ram_gib_per_unit` (plan_mem is
  normalised to the largest machine; 512 GiB by default, an assumption). Only Terminated tasks with end ≥ create.
- :func:`openb_gpu_tasks`: GPU pods of the Alibaba GPU trace (2023): arrival = creation_time, work =
  (deletion − creation) × cores, cores = ceil(cpu_milli / 1000), memory_mib / 1024, gpu = num_gpu (a pod sharing a
  fraction of one GPU asks for 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

import numpy as np
import polars as pl

TASK_COLUMNS: dict[str, tuple[pl.DataType, object]] = {
    "task_id": (pl.Utf8, None),
    "arrival_s": (pl.Float64, 0.0),
    "work_core_s": (pl.Float64, None),
    "cores": (pl.Int64, 1),
    "memory_gib": (pl.Float64, 0.0),
    "gpu": (pl.Int64, 0),
    "parents": (pl.Utf8, ""),
    "input_gib": (pl.Float64, 0.0),
    "output_gib": (pl.Float64, 0.0),
}
"""Column → (type, default; None = required)."""


class TaskError(ValueError):
    """A tasks table that cannot be routed: file, row and column named."""

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None) -> None:
        where = file + (f", row {row}" if row is not None else "") + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {message}")
        self.file, self.row, self.column = file, row, column


@dataclass
class TaskSet:
    """Validated tasks as arrays (index = row), with the DAG as parent and child index lists."""

    frame: pl.DataFrame
    ids: list[str]
    arrival: np.ndarray
    work: np.ndarray
    cores: np.ndarray
    memory: np.ndarray
    gpu: np.ndarray
    input_gib: np.ndarray
    output_gib: np.ndarray
    parents: list[list[int]]
    children: list[list[int]]
    order: list[int]          # a topological order

    def __len__(self) -> int:
        return len(self.ids)

    def critical_path_s(self, speed: float) -> float:
        """Longest chain of work (arrival included) on a host of `speed`, every task given its cores."""
        finish = np.zeros(len(self))
        for t in self.order:
            ready = max([self.arrival[t], *(finish[p] for p in self.parents[t])])
            finish[t] = ready + self.work[t] / (self.cores[t] * speed)
        return float(finish.max()) if len(self) else 0.0


def read_tasks_frame(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise TaskError(str(path), "no such file")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema_length=0)  # every column as text: the checks below name bad cells
    except Exception as exc:  # polars' several parse errors
        raise TaskError(str(path), f"not a readable {'Parquet' if path.suffix == '.parquet' else 'CSV'} file ({exc})") \
            from exc


def _headers(frame: pl.DataFrame, file: str) -> pl.DataFrame:
    """Column names with surrounding spaces dropped; a name that is one of DESIGN.md's columns misspelt
    (another case, a letter off: `Cores`, `gpus`, `parent`) is refused rather than kept as an extra column
    while the real one silently takes its default."""
    stripped = [c.strip() for c in frame.columns]
    for i, name in enumerate(stripped):
        if name in stripped[:i]:
            raise TaskError(file, f"column {name!r} appears twice", column=frame.columns[i])
        if name in TASK_COLUMNS:
            continue
        near = get_close_matches(name.lower(), list(TASK_COLUMNS), n=1, cutoff=0.8)
        if near and near[0] not in stripped:
            raise TaskError(file, f"unknown column {frame.columns[i]!r}: did you mean {near[0]!r}?",
                            column=frame.columns[i])
    return frame.rename(dict(zip(frame.columns, stripped)))


def _typed(frame: pl.DataFrame, file: str) -> pl.DataFrame:
    if frame.height == 0:
        raise TaskError(file, "the table has no rows")
    frame = _headers(frame, file)
    for name, (_dtype, default) in TASK_COLUMNS.items():
        if name not in frame.columns and default is None:
            raise TaskError(file, f"required column missing (expected {name})", column=name)
    columns = []
    for name, (dtype, default) in TASK_COLUMNS.items():
        if name not in frame.columns:
            columns.append(pl.Series(name, [default] * frame.height, dtype=dtype))
            continue
        raw = frame[name]
        if dtype == pl.Utf8:
            value = raw.cast(pl.Utf8)
            if default is not None:
                value = value.fill_null(default)
        else:
            text = raw.cast(pl.Utf8).str.strip_chars()
            cast = text.cast(dtype, strict=False)
            bad = (cast.is_null() & text.is_not_null() & (text != "")) | (cast.is_null() & (default is None))
            if bad.any():
                row = int(bad.arg_max())
                raise TaskError(file, f"{raw[row]!r} is not {'an integer' if dtype == pl.Int64 else 'a number'}",
                                row=row + 1, column=name)
            value = cast.fill_null(default) if default is not None else cast
        columns.append(value.alias(name))
    extra = [c for c in frame.columns if c not in TASK_COLUMNS]
    return pl.DataFrame(columns).hstack(frame.select(extra)) if extra else pl.DataFrame(columns)


def validate_tasks(frame: pl.DataFrame, file: str = "tasks", max_cores: int | None = None,
                   max_gpu: int | None = None) -> TaskSet:
    """Typed, checked tasks (TaskError names file, row and column): ids unique and non-empty, amounts in range,
    parents known, no cycle, and no task needing more cores or GPUs than the VM's largest part has."""
    frame = _typed(frame, file)

    def fail(mask: pl.Series, column: str, message: str) -> None:
        if mask.any():
            row = int(mask.arg_max())
            raise TaskError(file, message.format(value=frame[column][row], id=frame["task_id"][row]), row=row + 1,
                            column=column)

    fail(frame["task_id"].is_null() | (frame["task_id"] == ""), "task_id", "empty task id")
    fail(frame["task_id"].str.contains(r"\s"), "task_id",
         "task id {value!r} holds a space or tab: parents are space-separated, so no task could name it")
    fail(frame["task_id"].is_duplicated(), "task_id", "task id {value!r} appears twice")
    fail(frame["arrival_s"] < 0, "arrival_s", "{value} is negative")
    fail(frame["work_core_s"] <= 0, "work_core_s", "{value} must be > 0")
    fail(frame["cores"] < 1, "cores", "{value} must be ≥ 1")
    for column in ("memory_gib", "input_gib", "output_gib", "gpu"):
        fail(frame[column] < 0, column, "{value} is negative")
    for column in ("arrival_s", "work_core_s", "memory_gib", "input_gib", "output_gib"):
        fail(~frame[column].is_finite(), column, "{value} is not finite")
    if max_cores is not None:
        fail(frame["cores"] > max_cores, "cores",
             f"task {{id!r}} needs {{value}} cores; the VM's largest part has {max_cores}")
    if max_gpu is not None:
        fail(frame["gpu"] > max_gpu, "gpu", f"task {{id!r}} needs {{value}} GPUs; the VM's largest part has {max_gpu}")
    ids = frame["task_id"].to_list()
    index = {task: i for i, task in enumerate(ids)}
    parents: list[list[int]] = []
    for row, text in enumerate(frame["parents"].to_list()):
        mine = []
        for parent in (text or "").split():
            if parent not in index:
                raise TaskError(file, f"task {ids[row]!r}: unknown parent {parent!r}", row=row + 1, column="parents")
            if parent == ids[row]:
                raise TaskError(file, f"task {ids[row]!r} is its own parent", row=row + 1, column="parents")
            mine.append(index[parent])
        parents.append(sorted(set(mine)))
    children: list[list[int]] = [[] for _ in ids]
    for child, mine in enumerate(parents):
        for parent in mine:
            children[parent].append(child)
    order = _topological(parents, children)
    if len(order) < len(ids):
        stuck = next(i for i in range(len(ids)) if i not in set(order))
        cycle = _cycle_from(stuck, parents, set(order))
        raise TaskError(file, "cycle in parents: " + " → ".join(ids[i] for i in cycle), row=cycle[0] + 1,
                        column="parents")

    def array(column: str, dtype=float) -> np.ndarray:
        return frame[column].to_numpy().astype(dtype)

    return TaskSet(frame, ids, array("arrival_s"), array("work_core_s"), array("cores", np.int64),
                   array("memory_gib"), array("gpu", np.int64), array("input_gib"), array("output_gib"), parents,
                   children, order)


def _topological(parents: list[list[int]], children: list[list[int]]) -> list[int]:
    waiting = [len(p) for p in parents]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    order = []
    while ready:
        task = ready.pop()
        order.append(task)
        for child in children[task]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order


def _cycle_from(start: int, parents: list[list[int]], done: set[int]) -> list[int]:
    """Walk up parents that are not done (all of them sit on or above a cycle) until a task repeats."""
    seen: dict[int, int] = {}
    path = []
    task = start
    while task not in seen:
        seen[task] = len(path)
        path.append(task)
        task = next(p for p in parents[task] if p not in done)
    cycle = path[seen[task]:]
    return [*cycle, cycle[0]]


def load_tasks(path: str | Path, max_cores: int | None = None, max_gpu: int | None = None) -> TaskSet:
    """Read and check a tasks table (CSV or Parquet)."""
    return validate_tasks(read_tasks_frame(path), str(path), max_cores, max_gpu)


# --- the real traces ------------------------------------------------------------------------------------

GIB = float(1 << 30)
WFCOMMONS_CSV = "task-traces/wfcommons-wfinstances/tasks.csv.gz"
ALIBABA_BATCH_CSV = "task-traces/alibaba-v2017-batch_task/batch_task.csv.gz"
OPENB_PODS_CSV = "vm-requests/alibaba-openb-pods-2023/openb_pod_list_default.csv"


def wfcommons_runs(datasets: Path) -> pl.DataFrame:
    """One row per WfCommons execution: instance, workflow, runtime system, recorded makespan, hosts, tasks."""
    frame = pl.read_csv(datasets / WFCOMMONS_CSV, infer_schema_length=20000)
    return (frame.group_by("instance", maintain_order=True)
            .agg(pl.col("workflow_name").first(), pl.col("runtime_system").first(), pl.col("makespan_s").first(),
                 pl.col("n_machines").first(), pl.len().alias("tasks")))


def wfcommons_tasks(datasets: Path, instance: str) -> pl.DataFrame:
    """The tasks table of one WfCommons execution (see the module docstring), plus `recorded_host`."""
    frame = pl.read_csv(datasets / WFCOMMONS_CSV, infer_schema_length=20000).filter(pl.col("instance") == instance)
    if frame.height == 0:
        raise TaskError(str(datasets / WFCOMMONS_CSV), f"no execution named {instance!r}")
    cores = frame["core_count"].fill_null(1).cast(pl.Int64).clip(lower_bound=1)
    return pl.DataFrame({
        "task_id": frame["task_id"].cast(pl.Utf8),
        "arrival_s": pl.Series([0.0] * frame.height),
        "work_core_s": (frame["runtime_s"].cast(pl.Float64).clip(lower_bound=1e-3) * cores).alias("work_core_s"),
        "cores": cores,
        "memory_gib": frame["memory_bytes"].fill_null(0).cast(pl.Float64) / GIB,
        "gpu": pl.Series([0] * frame.height, dtype=pl.Int64),
        "parents": frame["parents"].fill_null("").cast(pl.Utf8),
        "input_gib": frame["read_bytes"].fill_null(0).cast(pl.Float64) / GIB,
        "output_gib": frame["written_bytes"].fill_null(0).cast(pl.Float64) / GIB,
        "recorded_host": frame["machines"].cast(pl.Utf8),
    })


def alibaba_batch_tasks(datasets: Path, ram_gib_per_unit: float = 512.0, jobs: int | None = None,
                        seed: int = 0, every_row: bool = False, exclude_jobs: set[int] | None = None) -> pl.DataFrame:
    """The Alibaba v2017 batch tasks as a tasks table (see the module docstring); `jobs` samples that many jobs
    (seeded), else every usable task. Arrival is relative to the first task kept; `job_id` is kept beside.
    `every_row` keeps all 80,553 rows (the speed benchmark): a task with no plan_cpu asks for 1 core, one with
    no end or an end before its create runs 1 s, a create before the trace's start is 0. `exclude_jobs` leaves
    those jobs out (a sample disjoint from another)."""
    raw = pl.read_csv(datasets / ALIBABA_BATCH_CSV, infer_schema_length=0)
    raw = raw.rename({c: c.strip() for c in raw.columns})
    frame = raw.select(
        pl.col("task_create_time").cast(pl.Float64).alias("create"),
        pl.col("task_end_time").cast(pl.Float64).alias("end"),
        pl.col("job_id").cast(pl.Int64), pl.col("task_id").cast(pl.Int64),
        pl.col("status").str.strip_chars(),
        pl.col("number_of_cpus_requested_per_instance_in_the_task").cast(pl.Float64, strict=False).alias("plan_cpu"),
        pl.col("normalized_memory_requested_per_instance_in_the_task").cast(pl.Float64, strict=False).alias("plan_mem"),
    )
    if every_row:
        frame = frame.with_columns(pl.col("create").clip(lower_bound=0), pl.col("plan_cpu").fill_null(100.0))
        frame = frame.with_columns(pl.max_horizontal(pl.col("end").fill_null(pl.col("create")), pl.col("create"))
                                   .alias("end"))
    else:
        frame = frame.filter((pl.col("status") == "Terminated") & (pl.col("end") >= pl.col("create"))
                             & pl.col("plan_cpu").is_not_null() & (pl.col("create") >= 0))
    if exclude_jobs:
        frame = frame.filter(~pl.col("job_id").is_in(sorted(exclude_jobs)))
    if jobs is not None:
        chosen = frame.select("job_id").unique().sort("job_id").sample(n=min(jobs, frame["job_id"].n_unique()),
                                                                       seed=seed)
        frame = frame.join(chosen, on="job_id", how="semi")
    frame = frame.sort("create", "task_id")
    cores = (frame["plan_cpu"] / 100).ceil().cast(pl.Int64).clip(lower_bound=1)
    return pl.DataFrame({
        "task_id": frame["task_id"].cast(pl.Utf8),
        "arrival_s": frame["create"] - frame["create"].min(),
        "work_core_s": (frame["end"] - frame["create"]).clip(lower_bound=1.0) * cores,
        "cores": cores,
        "memory_gib": frame["plan_mem"].fill_null(0.0) * ram_gib_per_unit,
        "gpu": pl.Series([0] * frame.height, dtype=pl.Int64),
        "parents": pl.Series([""] * frame.height),
        "input_gib": pl.Series([0.0] * frame.height),
        "output_gib": pl.Series([0.0] * frame.height),
        "job_id": frame["job_id"],
    })


def openb_gpu_tasks(datasets: Path, limit: int | None = None) -> pl.DataFrame:
    """GPU pods of the Alibaba GPU trace (2023) that were scheduled, as tasks (see the module docstring)."""
    raw = pl.read_csv(datasets / OPENB_PODS_CSV, infer_schema_length=20000)
    frame = raw.filter((pl.col("num_gpu") > 0) & pl.col("scheduled_time").is_not_null()
                       & (pl.col("deletion_time") > pl.col("creation_time"))).sort("creation_time")
    if limit is not None:
        frame = frame.head(limit)
    cores = (frame["cpu_milli"] / 1000).ceil().cast(pl.Int64).clip(lower_bound=1)
    return pl.DataFrame({
        "task_id": frame["name"].cast(pl.Utf8),
        "arrival_s": (frame["creation_time"] - frame["creation_time"].min()).cast(pl.Float64),
        "work_core_s": (frame["deletion_time"] - frame["creation_time"]).cast(pl.Float64) * cores,
        "cores": cores,
        "memory_gib": frame["memory_mib"].cast(pl.Float64) / 1024,
        "gpu": frame["num_gpu"].cast(pl.Int64),
        "parents": pl.Series([""] * frame.height),
        "input_gib": pl.Series([0.0] * frame.height),
        "output_gib": pl.Series([0.0] * frame.height),
    })


def scaled_to(tasks: pl.DataFrame, max_cores: int, max_gpu: int) -> pl.DataFrame:
    """Tasks clipped to what the VM's largest part has (a trace asks for machines bigger than one VM part)."""
    return tasks.with_columns(pl.col("cores").clip(upper_bound=max(max_cores, 1)),
                              pl.col("gpu").clip(upper_bound=max(max_gpu, 0)))
