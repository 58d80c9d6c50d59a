"""The nightly job: history → forecast → reservation sizing → plan (requests + blocks) → check → export.

:func:`run_nightly` does the work without printing, stage by stage; the command
(`shardplan.planner.cli.nightly`) wraps it with a progress bar and the summary tables. Without a history the plan is
made without reservations, and the run says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from shardplan.planner.replan import CurrentPlacement
from shardplan.planner.report.checker import Violation, check_plan
from shardplan.planner.reservations import (
    ReservationOptions,
    ReservationSizing,
    ReservedPlan,
    empty_blocks,
    plan_with_reservations,
    reservation_blocks,
    size_reservations,
)
from shardplan.planner.search.budget import SearchBudget
from shardplan.planner.validate.inputs import load_history, load_hosts, load_requests, load_topology
from shardplan.planner.validate.options import PlanOptions

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
    current: CurrentPlacement | None = None   # what runs now (--previous / --current): the plan edits it
    topology: tuple = ()   # distances between racks (the folder's topology table), PlanOptions.topology's rows


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
    generated in memory (shardplan.forecasting.demo_history).
    """
    from shardplan.data.generator import demo_dir

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
        from shardplan.forecasting.demo_history import demo_history

        history, history_source = demo_history(), "demo history (generated in memory: data/demo/history.parquet absent)"
    hosts = load_hosts(hosts_file)
    topology_file = find_table(root, "topology")
    topology = () if topology_file is None else load_topology(topology_file, hosts)
    return NightlyInputs(hosts, load_requests(requests_file), history,
                         "embedded demo" if folder is None else str(root), history_source, topology=topology)


def run_nightly(inputs: NightlyInputs, plan_options: PlanOptions, reservation_options: ReservationOptions,
                forecaster: str = NIGHTLY_FORECASTER, note: Note | None = None,
                budget: SearchBudget | None = None,
                cells: tuple[int, str | None, int | None] = (1, None, None)) -> NightlyRun:
    """forecast → sizing → plan → check on loaded inputs; `note(stage, detail)` hears each stage start.
    Forecast and sizing run inside the budget's time limit (the command's, when given). `cells`: partitions,
    Dask scheduler address (None: a LocalCluster) and workers of a partitioned plan (1 partition: monolithic)."""
    from shardplan.forecasting.export import forecast_demand

    tell = note or (lambda _stage, _detail: None)
    if inputs.topology and not plan_options.topology:
        plan_options = plan_options.replace(topology=inputs.topology)
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
        from shardplan.forecasting.history import history_resources, missing_resources

        missing = missing_resources(inputs.history)
        if missing:
            notes.append(f"the history has no {', '.join(missing)}: forecast {', '.join(history_resources(inputs.history))}"
                         f" only (those are not forecast as zero); reservations hold vcpu and RAM (GPUs by the "
                         f"group's vcpu per GPU)")
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
    requests = inputs.requests
    if plan_options.remote_memory_pricing == "use":
        from shardplan.forecasting.untouched import with_untouched

        requests, untouched = with_untouched(requests, inputs.history)
        if untouched["by_user_and_app"] + untouched["by_app"]:
            notes.append(f"untouched memory predicted from history for {untouched['by_user_and_app']} requests by "
                         f"user and app type, {untouched['by_app']} by app type ({untouched['predicted_gib']} GiB); "
                         f"{untouched['stated']} stated theirs, {untouched['none']} got none")
    started = time.perf_counter()
    tell("plan", None)
    planned = plan_with_reservations(inputs.hosts, requests, blocks, plan_options, sizing,
                                     progress=lambda stage: tell("plan", stage), budget=budget,
                                     current=inputs.current, cells=cells)
    seconds["plan"] = time.perf_counter() - started
    started = time.perf_counter()
    tell("check", None)
    violations = check_plan(inputs.hosts, planned.requests, planned.shards, planned.requests_out, plan_options,
                            planned.reservations, current=None if inputs.current is None else inputs.current.shards)
    seconds["check"] = time.perf_counter() - started
    planned.report.nightly = {"forecaster": forecaster if forecast is not None else None,
                                    "history": inputs.history_source, "inputs": inputs.source,
                                    "reservation_options": reservation_options.to_dict(), "notes": notes,
                                    "stage_seconds": {k: round(v, 3) for k, v in seconds.items()}}
    return NightlyRun(inputs, forecaster, forecast, sizing, blocks, planned, violations, notes, seconds)


def demand_history(run: NightlyRun) -> pl.DataFrame | None:
    """The hourly demand per (user_id, app_type) the forecaster was trained on (its last train_days), which
    the plan directory keeps as inputs/history.parquet so its report can draw forecast against history."""
    from datetime import timedelta

    from shardplan.forecasting.history import hourly_demand

    if run.forecast is None or run.inputs.history is None or run.inputs.history.height == 0:
        return None
    demand = hourly_demand(run.inputs.history)
    days = int((run.planned.plan_json.get("nightly") or {}).get("reservation_options", {}).get("train_days", 14))
    return demand.filter(pl.col("ts") > demand["ts"].max() - timedelta(days=days))


def export_nightly(run: NightlyRun, out: Path) -> None:
    """Write the plan directory (with reservations.parquet when pre-allocation ran), forecast.parquet and the
    demand history it was forecast from (inputs/history.parquet)."""
    from shardplan.files import parquet_bytes, write_atomically
    from shardplan.forecasting.export import write_forecast
    from shardplan.plandir import INPUT_HISTORY_FILE
    from shardplan.planner.report.export import write_plan_dir

    planned = run.planned
    history = demand_history(run)
    write_plan_dir(out, hosts=run.inputs.hosts, requests=planned.requests, shards=planned.shards,
                   requests_out=planned.requests_out, plan_json=planned.plan_json,
                   reservations=planned.reservations if run.sizing is not None else None,
                   keep=("forecast.parquet", INPUT_HISTORY_FILE) if run.forecast is not None else (),
                   filters=planned.plan.filter_counts, current=planned.plan.current, moves=planned.plan.moves)
    if run.forecast is not None:
        write_forecast(run.forecast, out, {"forecaster": run.forecaster, "history": run.inputs.history_source})
    if history is not None:
        write_atomically(out / INPUT_HISTORY_FILE, parquet_bytes(history))
