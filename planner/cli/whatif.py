"""`shardplan whatif`: scenarios edited from a base plan, re-planned incrementally, compared side by side."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from shardplan.planner.cli.common import command_started, console, errors


def register(app: typer.Typer) -> None:
    @app.command("whatif")
    def whatif_command(
        base: Path = typer.Argument(..., help="base plan directory: its inputs are edited, its placement is what runs"),
        scenarios: Path = typer.Option(..., "--scenarios", help="scenario file (.toml)"),
        out: Path = typer.Option(..., "--out", help="folder for one plan directory per scenario and comparison.parquet"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="seconds the whole command may take, "
                                                  "all scenarios together (default 30 per scenario)"),
        as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
        parquet: Optional[Path] = typer.Option(None, "--parquet", help="also write the comparison to this file"),
        force: bool = typer.Option(False, "--force", help="replace plans already in --out"),
    ) -> None:
        """Plan each scenario as an edit of BASE's placement; compare placed demand, moves, freed hosts and cost."""
        from shardplan.files import parquet_bytes, write_atomically
        from shardplan.plandir import PlanDirError
        from shardplan.planner.report.export import OutDirError
        from shardplan.planner.whatif import ScenarioError, base_options, read_base, read_scenarios, run_whatif

        try:
            base_dir = read_base(base)
            planned = read_scenarios(scenarios, base_dir, base_options(base_dir))
        except (ScenarioError, PlanDirError) as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        limit = time_limit if time_limit is not None else 30.0 * len(planned)
        if limit <= 0:
            errors.print("bad option: --time-limit must be > 0", style="bold red", markup=False)
            raise typer.Exit(2)

        def note(scenario, i: int) -> None:
            errors.print(f"[{i + 1}/{len(planned)}] {scenario.name}: " + ("; ".join(scenario.edits) or "no edits"))

        try:
            table = run_whatif(base, planned, out, limit, command_started(), force, note)
        except OutDirError as exc:
            errors.print(f"bad option: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        write_atomically(out / "comparison.parquet", parquet_bytes(table))
        write_atomically(out / "comparison.json", json.dumps(table.to_dicts(), indent=1))
        if parquet is not None:
            write_atomically(parquet, parquet_bytes(table))
        _report(out, table, limit)
        if as_json:
            sys.stdout.write(json.dumps(table.to_dicts()) + "\n")
            return
        console.print(render_comparison(table))


def _report(out: Path, table, limit: float) -> None:
    """OUT/report.html: the scenarios side by side, when the time limit leaves room (a note otherwise)."""
    import time

    from shardplan.planner.report.page import REPORT_S_FIXED, REPORT_S_PER_SCENARIO, write_whatif_report

    left = limit - (time.perf_counter() - command_started())
    if left < REPORT_S_FIXED + REPORT_S_PER_SCENARIO * table.height:
        errors.print(f"note: report.html skipped, {left:.1f}s of the time limit left (run `shardplan report {out} "
                     f"--out {out / 'report.html'}`)")
        return
    try:
        written = write_whatif_report(out, table)
    except Exception as exc:  # drawing is not planning: the plans and the comparison are written
        errors.print(f"note: report.html not written ({type(exc).__name__}: {exc})", markup=False)
        return
    errors.print(f"report: {written.page} ({written.bytes / 1e6:.1f} MB, {written.figures} figures)", markup=False)


def render_comparison(table) -> Table:
    out = Table(title="What-if scenarios against the base (Δ: scenario − base)")
    columns = (("scenario", "scenario"), ("placed", "placed"), ("unplaced", "unplaced"),
               ("placed_demand", "prio-weighted demand"), ("placed_demand_delta", "Δ demand"),
               ("newly_unplaced_running", "running now unplaced"), ("moves_mandatory", "moves mandatory"),
               ("moves_voluntary", "moves voluntary"), ("evicted", "evicted"), ("lost", "lost"),
               ("moved_gib", "moved GiB"), ("hosts_freed", "hosts freed"), ("active_cost", "active $/h"),
               ("active_cost_delta", "Δ $/h"), ("wall_s", "wall s"))
    for key, header in columns:
        out.add_column(header, justify="left" if key == "scenario" else "right")
    for row in table.iter_rows(named=True):
        cells = []
        for key, _ in columns:
            value = row[key]
            cells.append(f"{value:,.1f}" if isinstance(value, float) else str(value))
        out.add_row(*cells)
    return out
