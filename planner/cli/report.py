"""`shardplan report`: one self-contained HTML page of a plan directory (or of a what-if run), and PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from shardplan.planner.cli.common import console, errors


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        plan_dir: Path = typer.Argument(..., help="plan directory (or a what-if --out folder: its scenarios compared)"),
        out: Path = typer.Option(..., "--out", help="HTML file to write (one file, opens offline)"),
        against: Optional[Path] = typer.Option(None, "--against", help="base plan directory: what moved since, "
                                               "and the cost, placed-demand and utilisation deltas"),
        png: Optional[Path] = typer.Option(None, "--png", help="also write every figure as a PNG into this folder"),
    ) -> None:
        """Draw a plan as one offline HTML page (and PNGs): utilisation, split requests, unplaced, search, moves.

        Utilisation by zone and rack, the split requests' parts, what stayed unplaced and why, the objective and
        the search's progress, what moved (--against), and the forecast and reservations (nightly)."""
        import polars as pl

        from shardplan.plandir import PLAN_FILE, PlanDirError
        from shardplan.planner.report.html import ReportError
        from shardplan.planner.report.page import write_plan_report, write_whatif_report

        if out.exists() and out.is_dir():
            errors.print(f"bad option: --out {out}: is a directory; name the HTML file to write", style="bold red",
                         markup=False)
            raise typer.Exit(2)
        whatif = (plan_dir / "comparison.parquet").is_file() and not (plan_dir / PLAN_FILE).is_file()
        try:
            if whatif:
                if against is not None:
                    raise PlanDirError(f"{plan_dir}: a what-if run is compared with its own base; drop --against")
                written = write_whatif_report(plan_dir, pl.read_parquet(plan_dir / "comparison.parquet"), out, png)
            else:
                written = write_plan_report(plan_dir, out, against, png)
        except PlanDirError as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        except ReportError as exc:
            errors.print(f"error: {exc}", style="bold red", markup=False)
            raise typer.Exit(1) from exc
        console.print(f"report: {written.page} ({written.bytes / 1e6:.2f} MB, {written.figures} figures)"
                      + (f"; {len(written.pngs)} PNG files in {png}" if written.pngs else ""))
