"""The nightly job: history → forecast → reservation sizing → plan (requests + blocks) → check → export.

:func:`run_nightly` does the work without printing, stage by stage; :func:`nightly_cli`
wraps it with a rich progress bar and the summary tables. Without a history the plan is
made without reservations, and the run says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from planner.budget import SearchBudget
from planner.checker import Violation, check_plan
from planner.inputs import load_history, load_hosts, load_requests
from planner.options import PlanOptions
from planner.reservations import (ReservationOptions, ReservationSizing, ReservedPlan, empty_blocks, group_outcome,
                                  plan_with_reservations, reservation_blocks, size_reservations)

NIGHTLY_STAGES: tuple[str, ...] = ("history", "forecast", "sizing", "plan", "check", "export")
NIGHTLY_FORECASTER = "mean_7_same_hours"
"""Default forecaster of the nightly run: the seasonal-naive mean of the last 7 same hours. In the pre-allocation
replay (benchmarks/preallocation.py, pooled per app type, 24 h window, P90) Prophet, the registry's default, left
7 % of the reserved vcpu idle on Azure where this rule left 14 %, but on the bursty Bitbrains trace 45–60 % where
this rule left 44–54 %, all at ≥ 99 % hit; it also took 54 s of a 207 s demo nightly on 2 loaded cores when
measured (this rule: 0.5 s). `--forecaster prophet` selects it."""
SUMMARY_GROUPS = 15
"""Groups listed in the summary table (largest reservations first); the rest are totalled."""

Note = Callable[[str, str | None], None]


@dataclass(frozen=True)
class NightlyInputs:
    """The tables a nightly run starts from and where they came from."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    history: pl.DataFrame | None
    source: str
    history_source: str | None


@dataclass
class NightlyRun:
    """Everything one nightly run produced, for export and the summary."""

    inputs: NightlyInputs
    forecaster: str
    forecast: pl.DataFrame | None
    sizing: ReservationSizing | None
    blocks: pl.DataFrame
    planned: ReservedPlan
    violations: list[Violation]
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def find_table(folder: Path, name: str) -> Path | None:
    """folder/<name>.parquet, else folder/<name>.csv, else None."""
    for suffix in (".parquet", ".csv"):
        candidate = folder / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def load_inputs(folder: Path | None) -> NightlyInputs:
    """Hosts, requests and history from `folder` (the embedded demo when None); raises InputError on bad files.

    The demo history is data/demo/history.parquet when installed, else the same seeded history
    generated in memory (forecasting.demo_history).
    """
    from planner.fleet import demo_dir

    root = Path(folder) if folder is not None else demo_dir()
    hosts_file, requests_file = find_table(root, "hosts"), find_table(root, "requests")
    if hosts_file is None or requests_file is None:
        missing = "hosts" if hosts_file is None else "requests"
        raise FileNotFoundError(f"{root}: no {missing}.parquet or {missing}.csv")
    history_file = find_table(root, "history")
    history, history_source = None, None
    if history_file is not None:
        history, history_source = load_history(history_file), str(history_file)
    elif folder is None:
        from forecasting.demo_history import demo_history

        history, history_source = demo_history(), "demo history (generated in memory: data/demo/history.parquet absent)"
    return NightlyInputs(load_hosts(hosts_file), load_requests(requests_file), history,
                         "embedded demo" if folder is None else str(root), history_source)


def run_nightly(inputs: NightlyInputs, plan_options: PlanOptions, reservation_options: ReservationOptions,
                forecaster: str = NIGHTLY_FORECASTER, note: Note | None = None,
                budget: SearchBudget | None = None) -> NightlyRun:
    """forecast → sizing → plan → check on loaded inputs; `note(stage, detail)` hears each stage start.
    Forecast and sizing run inside the budget's time limit (the command's, when given)."""
    from forecasting.export import forecast_demand

    tell = note or (lambda _stage, _detail: None)
    if budget is not None:  # the sizing model's limit within the command's: a fifth of what is left at most
        reservation_options = reservation_options.replace(
            time_limit_s=max(min(reservation_options.time_limit_s, 0.2 * budget.wall_left()), 1.0))
    seconds: dict[str, float] = {}
    notes: list[str] = []
    forecast, sizing, blocks = None, None, empty_blocks()
    started = time.perf_counter()
    if inputs.history is None or inputs.history.height == 0:
        notes.append("no history: planned without reservations")
    else:
        tell("forecast", forecaster)
        forecast = forecast_demand(inputs.history, reservation_options.horizon_hours, forecaster,
                                   reservation_options.train_days)
        seconds["forecast"] = time.perf_counter() - started
        started = time.perf_counter()
        tell("sizing", None)
        sizing = size_reservations(forecast, inputs.hosts, reservation_options, inputs.history)
        if sizing.note:
            notes.append(sizing.note)
        if sizing.result.status.has_solution:
            blocks = reservation_blocks(sizing, inputs.hosts, inputs.requests, plan_options, reservation_options)
        else:
            notes.append(f"reservation sizing {sizing.result.status}: planned without reservations")
        seconds["sizing"] = time.perf_counter() - started
    started = time.perf_counter()
    tell("plan", None)
    planned = plan_with_reservations(inputs.hosts, inputs.requests, blocks, plan_options, sizing,
                                     progress=lambda stage: tell("plan", stage), budget=budget)
    seconds["plan"] = time.perf_counter() - started
    started = time.perf_counter()
    tell("check", None)
    violations = check_plan(inputs.hosts, planned.requests, planned.shards, planned.requests_out, plan_options,
                            planned.reservations)
    seconds["check"] = time.perf_counter() - started
    planned.report.nightly = {"forecaster": forecaster if forecast is not None else None,
                                    "history": inputs.history_source, "inputs": inputs.source,
                                    "reservation_options": reservation_options.to_dict(), "notes": notes,
                                    "stage_seconds": {k: round(v, 3) for k, v in seconds.items()}}
    return NightlyRun(inputs, forecaster, forecast, sizing, blocks, planned, violations, notes, seconds)


def export_nightly(run: NightlyRun, out: Path) -> None:
    """Write the plan directory (with reservations.parquet when pre-allocation ran) and forecast.parquet."""
    from forecasting.export import write_forecast
    from planner.export import write_plan_dir

    planned = run.planned
    write_plan_dir(out, hosts=run.inputs.hosts, requests=planned.requests, shards=planned.shards,
                   requests_out=planned.requests_out, plan_json=planned.plan_json,
                   reservations=planned.reservations if run.sizing is not None else None,
                   keep=("forecast.parquet",) if run.forecast is not None else (),
                   filters=planned.plan.filter_counts)
    if run.forecast is not None:
        write_forecast(run.forecast, out, {"forecaster": run.forecaster, "history": run.inputs.history_source})


def nightly_cli(folder: Path | None, out: Path, plan_options: PlanOptions, reservation_options: ReservationOptions,
                forecaster: str, console: Console, errors: Console, force: bool = False, as_json: bool = False) -> int:
    """The `shardplan nightly` command body: progress bar per stage, summary tables; returns the exit code.
    `--time-limit` bounds the whole command: its budget starts with the command."""
    from planner.cli_plan import print_summary, print_violations, start_command, warn_fallback
    from planner.inputs import InputError

    budget = start_command(plan_options, out, force)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=errors,
                  transient=not errors.is_terminal) as bar:
        task = bar.add_task("history", total=len(NIGHTLY_STAGES))

        def stage(name: str, detail: str | None = None) -> None:
            if name == "plan" and detail in ("search", "solve"):
                detail = f"{detail}, part of the ≤ {plan_options.time_limit_s:g}s run"
            bar.update(task, completed=NIGHTLY_STAGES.index(name),
                       description=name if detail is None else f"{name}: {detail}")

        stage("history")
        try:
            with budget.fixed("read_inputs"):
                inputs = load_inputs(folder)
        except (InputError, FileNotFoundError) as exc:
            bar.stop()
            errors.print("bad input: " + str(exc), style="bold red", markup=False)
            return 2
        run = run_nightly(inputs, plan_options, reservation_options, forecaster, note=stage, budget=budget)
        if run.violations:
            bar.stop()
            print_violations(run.violations)
            errors.print("[bold red]the plan breaks the invariants above; nothing was written[/]")
            return 1
        stage("export")
        started = time.perf_counter()
        with budget.fixed("export"):
            export_nightly(run, out)
        run.stage_seconds["export"] = time.perf_counter() - started
        bar.update(task, completed=len(NIGHTLY_STAGES), description="done")
    if run.planned.plan_json.get("checker_fallback"):
        warn_fallback(run.planned.plan_json["checker_fallback"])
    if as_json:
        print_summary(run.planned.plan_json, out, as_json=True)
        return 0
    for line in run.notes:
        console.print(f"[yellow]note[/]: {line}")
    print_summary(run.planned.plan_json, out)
    if run.sizing is not None:
        console.print(reservation_table(run))
    console.print(f"nightly: {budget.elapsed():.1f}s wall ("
                  + ", ".join(f"{k} {v:.1f}s" for k, v in run.stage_seconds.items()) + ")")
    return 0


def reservation_table(run: NightlyRun) -> Table:
    """Reserved per group (largest first), the blocks the plan held, and the totals."""
    outcome = group_outcome(run.sizing, run.blocks, run.planned.requests_out)
    sizing = run.sizing
    window = ("" if sizing.window_start is None
              else f" {sizing.window_start:%Y-%m-%d %H:%M} → {sizing.window_end:%Y-%m-%d %H:%M} UTC")
    table = Table(title=f"reservations{window}: {run.forecaster}, sizing {sizing.result.status} "
                        f"in {sizing.result.wall_s:.2f}s, expected cost ${sizing.result.objective or 0:,.2f}")
    columns = ("user", "app", "vcpu peak P50–P90", "vcpu rsv", "GiB peak P50–P90", "GiB rsv", "blocks held",
               "held vcpu/GiB")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 2 else "right")

    def add(row: dict, user: str, app: str, **style: str) -> None:
        table.add_row(user, app, f"{row['peak_p50_vcpu']:.1f}–{row['peak_p90_vcpu']:.1f}",
                      f"{row['reserved_vcpu']:.1f}", f"{row['peak_p50_ram_gib']:.0f}–{row['peak_p90_ram_gib']:.0f}",
                      f"{row['reserved_ram_gib']:.0f}",
                      f"{row['held']}/{row['blocks']}", f"{row['held_vcpu']}/{row['held_ram_gib']}", **style)

    shown = outcome.head(SUMMARY_GROUPS)
    for row in shown.iter_rows(named=True):
        add(row, row["user_id"], row["app_type"])
    if outcome.height > shown.height:
        table.add_row(f"… {outcome.height - shown.height} more", *[""] * (len(columns) - 1))
    totals = outcome.drop("user_id", "app_type").sum().row(0, named=True)
    add(totals, "all", f"{outcome.height} groups", style="bold")
    return table
