"""`shardplan nightly`: the nightly pipeline (planner.nightly) under a progress bar, with its summary tables."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shardplan.planner.nightly import (
    NIGHTLY_STAGES,
    SUMMARY_GROUPS,
    NightlyRun,
    export_nightly,
    load_inputs,
    run_nightly,
)
from shardplan.planner.reservations import ReservationOptions, group_outcome, window_hours
from shardplan.planner.validate.options import PlanOptions


def nightly_cli(folder: Path | None, out: Path, plan_options: PlanOptions, reservation_options: ReservationOptions,
                forecaster: str, console: Console, errors: Console, force: bool = False, as_json: bool = False,
                current_path: Path | None = None, report: bool = True, dask_address: str | None = None,
                dask_workers: int | None = None) -> int:
    """The `shardplan nightly` command body: progress bar per stage, summary tables; returns the exit code.
    `--time-limit` bounds the whole command: its budget starts with the command. Above one partition
    (--partitions, or chosen from the size as for `shardplan plan`) the plan's cells run on Dask."""
    from shardplan.planner.cli.common import cells_for, print_summary, print_violations, start_command, warn_fallback
    from shardplan.planner.replan import load_current
    from shardplan.planner.report.page import report_seconds
    from shardplan.planner.validate.inputs import InputError

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
                if current_path is not None:
                    inputs = dataclasses.replace(inputs, current=load_current(current_path, inputs.hosts,
                                                                              inputs.requests))
        except (InputError, FileNotFoundError) as exc:
            bar.stop()
            errors.print("bad input: " + str(exc), style="bold red", markup=False)
            return 2
        if report:  # the page is drawn after the export, inside --time-limit (twice its estimate set aside: the
            # bound's LP may overrun its grant by a second or two, and the page comes last)
            budget.extra_after_s = 2 * report_seconds(inputs.hosts.height)
        k = cells_for(plan_options, inputs.hosts.height, inputs.requests.height)
        run = run_nightly(inputs, plan_options, reservation_options, forecaster, note=stage, budget=budget,
                          cells=(k, dask_address, dask_workers))
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
        if report:
            stage("export", "report.html")
            started = time.perf_counter()
            run.notes.extend(write_report(out, budget, inputs.hosts.height))
            run.stage_seconds["report"] = time.perf_counter() - started
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


def write_report(out: Path, budget, n_hosts: int) -> list[str]:
    """OUT/report.html from the plan directory just written, when the time limit leaves room for it; the notes
    to print (a skipped or failed report never fails the nightly: the plan is written and valid)."""
    from shardplan.plandir import REPORT_FILE
    from shardplan.planner.report.page import report_seconds, write_plan_report

    left = budget.time_limit_s - budget.elapsed()
    if left < report_seconds(n_hosts):
        return [f"report.html skipped: {left:.1f}s of the time limit left, it needs about "
                f"{report_seconds(n_hosts):.1f}s (run `shardplan report {out} --out {out / REPORT_FILE}`)"]
    try:
        with budget.fixed("report"):
            written = write_plan_report(out, out / REPORT_FILE)
    except Exception as exc:  # drawing is not planning: say so and keep the plan
        return [f"report.html not written ({type(exc).__name__}: {exc}); the plan directory is complete"]
    return [f"report: {written.page} ({written.bytes / 1e6:.1f} MB, {written.figures} figures)"]


def reservation_table(run: NightlyRun) -> Table:
    """Reserved per group (largest first), the blocks the plan held, and the totals."""
    outcome = group_outcome(run.sizing, run.blocks, run.planned.requests_out)
    sizing = run.sizing
    window = ("" if sizing.window_start is None
              else f" {sizing.window_start:%Y-%m-%d %H:%M} → {sizing.window_end:%Y-%m-%d %H:%M} UTC")
    hours = window_hours(sizing)
    if hours is not None:
        window += f" in {sizing.groups['window'].n_unique()} windows of {hours:g} h (largest window shown)"
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
