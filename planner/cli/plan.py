"""`shardplan plan | nightly | check | explain | diff`: the placement side of the CLI."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from shardplan.plandir import PlanDirError
from shardplan.planner.cli.common import (
    cells_for,
    console,
    errors,
    fail_input,
    print_summary,
    print_violations,
    resolve_options,
    start_command,
    warn_fallback,
)
from shardplan.planner.validate.inputs import InputError, load_hosts, load_requests, load_topology
from shardplan.planner.validate.options import PlanOptions


def run_plan(hosts_file: Path, requests_file: Path, out: Path, options: PlanOptions, force: bool = False,
             as_json: bool = False, current_path: Path | None = None, dask_address: str | None = None,
             dask_workers: int | None = None, topology_path: Path | None = None) -> int:
    """validate → plan (search, bound, assign, check) → export under one search budget that started with the
    command; returns the exit code. `current_path`: what runs now (the plan edits it). Above one partition
    (options.partitions, or chosen from the size) the cells run on Dask: `dask_address`, else a LocalCluster."""
    from shardplan.planner.replan import load_current
    from shardplan.planner.report.export import write_plan_dir

    budget = start_command(options, out, force)
    try:
        with budget.fixed("read_inputs"):
            hosts = load_hosts(hosts_file)
            requests = load_requests(requests_file)
            current = None if current_path is None else load_current(current_path, hosts, requests)
            if topology_path is not None:
                options = options.replace(topology=load_topology(topology_path, hosts))
    except InputError as exc:
        fail_input(exc)
    k = cells_for(options, hosts.height, requests.height)
    result = plan_with_progress(hosts, requests, options, budget, current, k, dask_address, dask_workers)
    if result.plan_json.get("checker_fallback"):
        warn_fallback(result.plan_json["checker_fallback"])
    with budget.fixed("export"):
        write_plan_dir(out, hosts=hosts, requests=requests, shards=result.shards, requests_out=result.requests_out,
                       plan_json=result.plan_json, filters=result.filter_counts, current=result.current,
                       moves=result.moves)
    print_summary(result.plan_json, out, as_json)
    return 0


def plan_with_progress(hosts, requests, options: PlanOptions, budget, current=None, partitions: int = 1,
                       dask_address: str | None = None, dask_workers: int | None = None):
    """The engine's plan() (or, above one partition, the partitioned plan) under progress bars on stderr."""
    from shardplan.planner.engine import STAGES, plan
    from shardplan.planner.partition import plan_partitioned

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=errors, transient=not errors.is_terminal) as bar:
        task = bar.add_task("plan", total=len(STAGES))

        def stage(name: str) -> None:
            label = f"{name} (part of the ≤ {options.time_limit_s:g}s run)" if name in ("search", "solve") else name
            bar.update(task, description=label, completed=STAGES.index(name))

        if partitions > 1:
            cells = bar.add_task(f"{partitions} cells on Dask", total=partitions)
            bar.update(task, description="cells")

            def cell_done(done: int, total: int) -> None:
                bar.update(cells, completed=done)
            result = plan_partitioned(hosts, requests, options, partitions, address=dask_address,
                                      workers=dask_workers, progress=stage, on_cell=cell_done, budget=budget,
                                      current=current)
        else:
            result = plan(hosts, requests, options, progress=stage, budget=budget, current=current)
        bar.update(task, completed=len(STAGES), description="done")
    return result


PREVIOUS = typer.Option(None, "--previous", help="plan directory of what runs now (last night's): tonight's plan "
                        "is an edit of its shards.parquet")
CURRENT = typer.Option(None, "--current", help="table of what runs now in the shards columns (.csv or .parquet), "
                       "e.g. from `shardplan status --format parquet`")
MAX_MOVES = typer.Option(None, "--max-moves", help="at most this many running requests disrupted by choice "
                         "(moves off hosts that are not up do not count; default: no budget)")
DISRUPTION_COST = typer.Option(None, "--disruption-cost", help="$ once per running request disrupted (default 20)")
MOVE_COST_PER_GIB = typer.Option(None, "--move-cost-per-gib", help="$ once per GiB of RAM or storage moved "
                                 "(default 0.05)")
REMOTE_PRICING = typer.Option(None, "--remote-memory-pricing", help="use (default): a request's untouched RAM may "
                              "sit remotely at near-zero traffic, touched remote RAM is capped by its latency class's "
                              "slowdown; flat: every remote GiB at one rate, none for class low")

PARTITIONS = typer.Option(None, "--partitions", min=0, help="cells the fleet is split into, each planned as a Dask "
                          "task, then one global pass (1: monolithic; default 0: chosen from the size, "
                          "1 below 500,000 request × host pairs, else ⌈(pairs / 100,000)^¼⌉: 2 at 500 × 1,250, "
                          "4 at 2,000 × 5,000, 8 at 10,000 × 25,000)")
DASK = typer.Option(None, "--dask", help="address of an existing Dask scheduler (tcp://host:8786) for the cells; "
                    "default: a LocalCluster on this machine, started and closed by the command")
DASK_WORKERS = typer.Option(None, "--dask-workers", min=1, help="Dask workers the cells are timed for (they run in "
                            "waves of this many; default: the cluster's workers, or one per core at most "
                            "--partitions for the LocalCluster); the plan is deterministic for a seed, "
                            "--partitions and this")


def current_table(previous: Path | None, current: Path | None) -> Path | None:
    """The current placement's file from --previous DIR or --current FILE (exit 2 on both)."""
    from shardplan.planner.replan import current_file

    try:
        return current_file(previous, current)
    except InputError as exc:
        fail_input(exc)


def register(app: typer.Typer) -> None:
    """Add the placement commands to the app."""

    @app.command("plan")
    def plan_command(
        hosts: Path = typer.Option(..., "--hosts", help="hosts table (.csv or .parquet)"),
        requests: Path = typer.Option(..., "--requests", help="requests table (.csv or .parquet)"),
        out: Path = typer.Option(..., "--out", help="plan directory to write"),
        mode: Optional[str] = typer.Option(None, help="sharded (default) or whole"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="seconds the whole command may take: "
                                                  "reading, search, bound, check, export (default 30)"),
        workers: Optional[int] = typer.Option(None, help="CP-SAT workers (default 2)"),
        seed: Optional[int] = typer.Option(None, help="CP-SAT seed (default 0)"),
        top_k: Optional[int] = typer.Option(None, "--top-k", help="candidate classes kept per request and zone"),
        min_local_ram: Optional[float] = typer.Option(None, "--min-local-ram-gib-per-vcpu"),
        lp: Optional[bool] = typer.Option(None, "--lp-bound/--no-lp-bound", help="LP relaxation bound"),
        previous: Optional[Path] = PREVIOUS,
        current: Optional[Path] = CURRENT,
        max_moves: Optional[int] = MAX_MOVES,
        disruption_cost: Optional[float] = DISRUPTION_COST,
        move_cost_per_gib: Optional[float] = MOVE_COST_PER_GIB,
        remote_memory_pricing: Optional[str] = REMOTE_PRICING,
        partitions: Optional[int] = PARTITIONS,
        dask: Optional[str] = DASK,
        dask_workers: Optional[int] = DASK_WORKERS,
        topology: Optional[Path] = typer.Option(None, "--topology", help="distances between racks (.csv or .parquet: "
                                                "from, to, latency_us, bandwidth_gbps; two racks of a zone, or a "
                                                "zone twice for its default): spreading costs by distance"),
        force: bool = typer.Option(False, "--force", help="replace the plan already in --out"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
    ) -> None:
        """Place the requests on the hosts and write a checked plan directory (with --previous or --current:
        an edit of what runs now, moves.parquet listing what moved and why)."""
        options = resolve_options(mode=mode, time_limit_s=time_limit, workers=workers, seed=seed, top_k=top_k,
                                  min_local_ram_gib_per_vcpu=min_local_ram, lp_bound=lp, max_moves=max_moves,
                                  disruption_cost=disruption_cost, move_cost_per_gib=move_cost_per_gib,
                                  remote_memory_pricing=remote_memory_pricing, partitions=partitions)
        raise typer.Exit(run_plan(hosts, requests, out, options, force, as_json, current_table(previous, current),
                                  dask, dask_workers, topology))

    @app.command("nightly")
    def nightly_command(
        out: Path = typer.Option(..., "--out", help="plan directory to write"),
        data: Optional[Path] = typer.Option(None, "--data", help="folder with hosts, requests, history and (optional) topology tables "
                                            "(default: embedded demo); without a history no reservations are made"),
        forecaster: Optional[str] = typer.Option(None, "--forecaster", help="registered forecaster for the next window "
                                                 "(default mean_7_same_hours; prophet is slower)"),
        horizon: Optional[int] = typer.Option(None, "--horizon", min=1, help="hours the reservations hold (default 24)"),
        window_hours: Optional[int] = typer.Option(None, "--window-hours", min=1, help="hours of each reservation "
                                                   "window; each window's blocks are sized from its forecast "
                                                   "(default 4)"),
        reserve_price: Optional[float] = typer.Option(None, "--reserve-price", help="$ per unit-hour of reserved "
                                                      "capacity where no host class prices it (unit: 1 vcpu or "
                                                      "4 GiB; default 0.03; classes use their cost_per_hour)"),
        shortfall_penalty: Optional[float] = typer.Option(None, "--shortfall-penalty", help="$ per unit-hour of peak "
                                                          "demand above the reservation (default 0.30)"),
        quantile_floor: Optional[float] = typer.Option(None, "--quantile-floor", help="reserve at least this quantile "
                                                       "of the forecast peak (default 0.5; 0 disables)"),
        reservation_weight: Optional[float] = typer.Option(None, "--reservation-weight", help="unplaced weight of a "
                                                           "reservation block relative to a real request (default 0.05)"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="seconds the whole nightly may take: "
                                                  "history, forecast, sizing, plan, check, export (default 30)"),
        previous: Optional[Path] = PREVIOUS,
        current: Optional[Path] = CURRENT,
        max_moves: Optional[int] = MAX_MOVES,
        disruption_cost: Optional[float] = DISRUPTION_COST,
        move_cost_per_gib: Optional[float] = MOVE_COST_PER_GIB,
        remote_memory_pricing: Optional[str] = REMOTE_PRICING,
        partitions: Optional[int] = PARTITIONS,
        dask: Optional[str] = DASK,
        dask_workers: Optional[int] = DASK_WORKERS,
        workers: Optional[int] = typer.Option(None, help="CP-SAT workers"),
        seed: Optional[int] = typer.Option(None, help="CP-SAT seed"),
        force: bool = typer.Option(False, "--force", help="replace the plan already in --out"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
        report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report.html, the plan drawn "
                                    "(shardplan report); skipped, with a note, when the time limit leaves no room"),
    ) -> None:
        """The nightly job: history → forecast → reservation sizing → plan (requests + reservation blocks) → check → export."""
        from shardplan.forecasting.forecasters import FORECASTERS
        from shardplan.planner.cli.nightly import nightly_cli
        from shardplan.planner.nightly import NIGHTLY_FORECASTER
        from shardplan.planner.reservations import ReservationOptions

        options = resolve_options(time_limit_s=time_limit, workers=workers, seed=seed,
                                  reservation_weight=reservation_weight, max_moves=max_moves,
                                  disruption_cost=disruption_cost, move_cost_per_gib=move_cost_per_gib,
                                  remote_memory_pricing=remote_memory_pricing, partitions=partitions)
        current_path = current_table(previous, current)
        name = forecaster or NIGHTLY_FORECASTER
        if name not in FORECASTERS:
            errors.print(f"[bold red]bad option[/]: unknown forecaster {name!r} (known: {', '.join(sorted(FORECASTERS))})")
            raise typer.Exit(2)
        try:
            reservation_options = ReservationOptions().replace(
                horizon_hours=horizon, window_hours=window_hours, reserve_price_per_unit_hour=reserve_price,
                shortfall_penalty_per_unit_hour=shortfall_penalty, quantile_floor=quantile_floor)
            reservation_options.validate()
        except ValueError as exc:
            errors.print(f"[bold red]bad option[/]: {exc}")
            raise typer.Exit(2) from exc
        raise typer.Exit(nightly_cli(data, out, options, reservation_options, name, console, errors, force, as_json,
                                     current_path, report, dask, dask_workers))

    @app.command("check")
    def check_command(plan_dir: Path = typer.Argument(..., help="plan directory")) -> None:
        """Verify the invariants from a plan directory alone; exit 1 on any violation."""
        from shardplan.planner.report.checker import check_plan_dir

        try:
            violations = check_plan_dir(plan_dir)
        except (FileNotFoundError, InputError, ValueError) as exc:
            errors.print(f"[bold red]cannot check[/]: {exc}")
            raise typer.Exit(2) from exc
        if violations:
            print_violations(violations)
            raise typer.Exit(1)
        console.print(f"[green]{plan_dir}: all invariants hold[/]")

    @app.command("explain")
    def explain_command(plan_dir: Path = typer.Argument(...), request_id: str = typer.Argument(...)) -> None:
        """Where each part of a request went and why, or why it stayed unplaced."""
        from shardplan.planner.report.explain import explain_request, render_explanation

        try:
            explanation = explain_request(plan_dir, request_id)
        except KeyError as exc:
            errors.print(f"[bold red]unknown request[/]: {request_id}")
            raise typer.Exit(2) from exc
        except (PlanDirError, InputError) as exc:
            errors.print(f"cannot explain: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        render_explanation(explanation, console)

    @app.command("diff")
    def diff_command(
        plan_a: Path = typer.Argument(...), plan_b: Path = typer.Argument(...),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
        parquet: Optional[Path] = typer.Option(None, "--parquet", help="also write the part changes as Parquet"),
        every: bool = typer.Option(False, "--all", help="an incremental plan B: list the new requests' parts too, "
                                   "not only what moved"),
    ) -> None:
        """Moved, added, removed and newly unplaced parts between two plans, grouped by reason, with cost,
        placed-demand and utilisation deltas (B an edit of A: only what moved, with the planner's reasons)."""
        from shardplan.planner.report.diff import diff_plans, render_diff, render_reasons, render_summary

        try:
            diff = diff_plans(plan_a, plan_b, moved_only=False if every else None)
        except (PlanDirError, InputError) as exc:
            errors.print(f"cannot diff: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        if parquet is not None:
            from shardplan.planner.report.export import write_parquet_atomic

            write_parquet_atomic(diff.to_frame(), parquet)
        if as_json:
            sys.stdout.write(diff.to_json() + "\n")
        else:
            for item in (render_reasons(diff), render_diff(diff), render_summary(diff)):
                console.print(item)


def _find_table(folder: Path, name: str) -> Path:
    for suffix in (".parquet", ".csv"):
        candidate = folder / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    errors.print(f"[bold red]bad input[/]: {folder}: no {name}.parquet or {name}.csv")
    raise typer.Exit(2)


