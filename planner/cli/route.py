"""`shardplan route` and `shardplan check-schedule`: the in-VM task scheduler (shardplan.executors.routing)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from shardplan.planner.cli.common import console, errors

LOAD_TRACES = ("alibaba-2018", "bitbrains")


def register(app: typer.Typer) -> None:
    @app.command("route")
    def route_command(
        plan_dir: Path = typer.Argument(..., help="plan directory"),
        request_id: str = typer.Argument(..., help="a placed request: its compute parts run the tasks"),
        tasks: Path = typer.Option(..., "--tasks", help="tasks table (.csv or .parquet; DESIGN.md columns)"),
        policy: str = typer.Option("shardplan", "--policy", help="round_robin, random, least_loaded, power_of_two, "
                                   "locality or shardplan (default: earliest estimated finish)"),
        schedule: Optional[Path] = typer.Option(None, "--schedule", help="write the schedule here (.parquet or .csv)"),
        load: Optional[str] = typer.Option(None, "--load", help="other tenants' load on the parts' hosts: a table "
                                           "(part, t_s, util 0–1) or a real trace, alibaba-2018 or bitbrains"),
        datasets: Path = typer.Option(Path("../shared/datasets"), "--datasets", help="where the real traces are"),
        compare: bool = typer.Option(False, "--compare", help="run every policy side by side in one table"),
        as_json: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON here"),
        seed: int = typer.Option(0, "--seed", help="seed of the random policies"),
    ) -> None:
        """Route a placed request's tasks to its parts through a policy, with live load; write the schedule.

        The schedule has one row per task: task_id, host_id, shard, start_s, end_s, cores, remote_gib."""
        from shardplan.executors.routing.policies import POLICIES
        from shardplan.executors.routing.schedule import check_schedule
        from shardplan.executors.routing.simulate import lower_bound, route
        from shardplan.executors.routing.tasks import TaskError, load_tasks
        from shardplan.executors.routing.vm import VmError, vm_from_plan
        from shardplan.files import write_atomically, write_table_atomically
        from shardplan.plandir import PlanDirError

        if policy not in POLICIES:
            errors.print(f"bad option: --policy {policy!r} (known: {', '.join(POLICIES)})", style="bold red",
                         markup=False)
            raise typer.Exit(2)
        try:
            vm = vm_from_plan(plan_dir, request_id)
            task_set = load_tasks(tasks, vm.max_part_vcpu, vm.max_part_gpu)
            loads = _loads(load, datasets, len(vm.parts))
        except (VmError, PlanDirError, TaskError, ValueError, FileNotFoundError) as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        bound = lower_bound(vm, task_set, loads)
        replays = [route(vm, task_set, name, loads, seed=seed) for name in (POLICIES if compare else [policy])]
        chosen = next(r for r in replays if r.policy == policy)
        problems = check_schedule(vm, task_set, chosen.schedule)
        if problems:  # a bug: say so, write nothing
            for line in problems[:20]:
                errors.print(f"invalid schedule: {line}", style="bold red", markup=False)
            raise typer.Exit(1)
        if schedule is not None:
            write_table_atomically(chosen.schedule, schedule)
        rows = [{**r.figures(), "share_of_lower_bound": r.makespan_s / bound["lower_bound_s"]
                 if bound["lower_bound_s"] > 0 else None} for r in replays]
        # what the split costs: the same tasks on one host holding all of the VM, at the parts' mean speed and load
        from shardplan.executors.routing.simulate import split_cost

        split = split_cost(vm, task_set, loads, policy, seed, chosen)
        if as_json is not None:
            write_atomically(as_json, json.dumps({"request_id": request_id, "parts": len(vm.parts), "tasks": len(task_set),
                                                  "lower_bound": bound, "policies": rows, "split": split}, indent=1))
        console.print(render_replays(rows, request_id, len(vm.parts), len(task_set), bound["lower_bound_s"]))
        if split["split_cost"] is not None:
            console.print(f"split cost ({policy}): {chosen.makespan_s:,.1f} s on {len(vm.parts)} parts against "
                          f"{split['one_host_makespan_s']:,.1f} s on one host of the same capacity: "
                          f"× {split['split_cost']:.2f}")

    @app.command("check-schedule")
    def check_schedule_command(
        plan_dir: Path = typer.Argument(..., help="plan directory"),
        request_id: str = typer.Argument(..., help="the request the schedule routes"),
        tasks: Path = typer.Option(..., "--tasks", help="tasks table"),
        schedule: Path = typer.Option(..., "--schedule", help="schedule to check (.parquet or .csv)"),
    ) -> None:
        """Check a schedule against DESIGN.md's rules; print every violation (exit 1 if any)."""
        from shardplan.executors.routing.schedule import check_schedule, read_schedule
        from shardplan.executors.routing.tasks import TaskError, load_tasks
        from shardplan.executors.routing.vm import VmError, vm_from_plan
        from shardplan.plandir import PlanDirError

        try:
            vm = vm_from_plan(plan_dir, request_id)
            task_set = load_tasks(tasks)
            table = read_schedule(schedule)
        except (VmError, PlanDirError, TaskError, ValueError) as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        problems = check_schedule(vm, task_set, table)
        for line in problems:
            console.print(f"violation: {line}", markup=False)
        if problems:
            raise typer.Exit(1)
        console.print(f"schedule ok: {table.height} tasks on {len(vm.parts)} parts of {request_id}")


    @app.command("split-cost")
    def split_cost_command(
        plan_dir: Path = typer.Argument(..., help="plan directory"),
        tasks: Path = typer.Option(..., "--tasks", help="tasks table run on every split request (cores and GPUs "
                                   "clipped to each VM's largest part)"),
        out: Optional[Path] = typer.Option(None, "--out", help="write the table here (.parquet or .csv)"),
        load: Optional[str] = typer.Option(None, "--load", help="as for route"),
        datasets: Path = typer.Option(Path("../shared/datasets"), "--datasets"),
        policy: str = typer.Option("shardplan", "--policy"),
    ) -> None:
        """What its split costs each split request: the tasks' makespan on its parts ÷ on one host.

        One host of the same capacity (vcpu-weighted mean speed, pooled load): an operator sees which VMs a split
        hurts."""
        import polars as pl

        from shardplan.executors.routing.simulate import split_cost
        from shardplan.executors.routing.tasks import TaskError, read_tasks_frame, scaled_to, validate_tasks
        from shardplan.executors.routing.vm import vm_from_plan
        from shardplan.files import write_table_atomically
        from shardplan.plandir import PlanDirError, read_plan_dir

        try:
            plan = read_plan_dir(plan_dir)
            frame = validate_tasks(read_tasks_frame(tasks), str(tasks)).frame
        except (PlanDirError, TaskError) as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        placed = plan.requests_out.filter(pl.col("status") == "placed")["request_id"]
        compute = (plan.shards.filter((pl.col("vcpu") > 0) & pl.col("request_id").is_in(placed.implode()))
                   .group_by("request_id").len().filter(pl.col("len") > 1).sort("request_id"))
        rows = []
        for request_id in compute["request_id"]:
            vm = vm_from_plan(plan, request_id)
            mine = validate_tasks(scaled_to(frame, vm.max_part_vcpu, vm.max_part_gpu), str(tasks))
            if (mine.gpu > 0).any() and vm.max_part_gpu == 0:
                continue
            rows.append({"request_id": request_id, "parts": len(vm.parts), "vcpu": vm.total_vcpu,
                         "remote_ram_gib": sum(m.ram_gib for m in vm.memory),
                         **split_cost(vm, mine, _loads(load, datasets, len(vm.parts)), policy)})
        table = pl.DataFrame(rows, schema={"request_id": pl.Utf8, "parts": pl.Int64, "vcpu": pl.Int64,
                                           "remote_ram_gib": pl.Float64, "split_makespan_s": pl.Float64,
                                           "one_host_makespan_s": pl.Float64, "split_cost": pl.Float64})
        if out is not None:
            write_table_atomically(table, out)
        console.print(table.sort("split_cost", descending=True, nulls_last=True))

    @app.command("tasks")
    def tasks_command(
        trace: str = typer.Argument(..., help="wfcommons, alibaba-v2017 or openb-gpu"),
        out: Path = typer.Option(..., "--out", help="tasks table to write (.csv or .parquet)"),
        instance: Optional[str] = typer.Option(None, "--instance", help="wfcommons: the execution, e.g. "
                                               "makeflow/blast/blast-chameleon-small-001.json (default: list them)"),
        jobs: Optional[int] = typer.Option(None, "--jobs", help="alibaba-v2017: sample this many jobs (seeded)"),
        limit: Optional[int] = typer.Option(None, "--limit", help="openb-gpu: the first N GPU pods"),
        seed: int = typer.Option(0, "--seed"),
        datasets: Path = typer.Option(Path("../shared/datasets"), "--datasets", help="where the real traces are"),
    ) -> None:
        """Write a tasks table (DESIGN.md columns) from a real task trace, for `shardplan route --tasks`."""
        from shardplan.executors.routing.tasks import (
            TaskError,
            alibaba_batch_tasks,
            openb_gpu_tasks,
            validate_tasks,
            wfcommons_runs,
            wfcommons_tasks,
        )
        from shardplan.files import write_table_atomically

        try:
            if trace == "wfcommons":
                if instance is None:
                    console.print(wfcommons_runs(datasets))
                    raise typer.Exit(0)
                frame = wfcommons_tasks(datasets, instance)
            elif trace == "alibaba-v2017":
                frame = alibaba_batch_tasks(datasets, jobs=jobs, seed=seed)
            elif trace == "openb-gpu":
                frame = openb_gpu_tasks(datasets, limit)
            else:
                raise TaskError(trace, "unknown trace (wfcommons, alibaba-v2017, openb-gpu)")
            validate_tasks(frame, trace)
        except (TaskError, FileNotFoundError, OSError) as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        write_table_atomically(frame, out)
        console.print(f"tasks: {frame.height:,} rows from {trace} → {out}")


def _loads(load: str | None, datasets: Path, n: int):
    from shardplan.executors.routing.load import alibaba_2018_load, bitbrains_load, read_load_file

    if load is None:
        return None
    if load == "alibaba-2018":
        return alibaba_2018_load(datasets, n)
    if load == "bitbrains":
        return bitbrains_load(datasets, n)
    if not Path(load).is_file():
        raise ValueError(f"--load {load}: not a file, nor one of {', '.join(LOAD_TRACES)}")
    return read_load_file(load, n)


def render_replays(rows: list[dict], request_id: str, parts: int, tasks: int, bound_s: float) -> Table:
    table = Table(title=f"{request_id}: {tasks:,} tasks on {parts} parts (lower bound {bound_s:,.1f} s)")
    columns = (("policy", "policy"), ("makespan_s", "makespan s"), ("share_of_lower_bound", "× lower bound"),
               ("mean_slowdown", "mean slowdown"), ("p99_slowdown", "p99 slowdown"), ("remote_gib", "remote GiB"),
               ("decision_us_median", "decision µs (median)"), ("wall_s", "replay s"))
    for key, header in columns:
        table.add_column(header, justify="left" if key == "policy" else "right")
    for row in rows:
        table.add_row(*[row[key] if key == "policy" else f"{row[key]:,.2f}" if row[key] is not None else "—"
                        for key, _ in columns])
    return table
