"""`shardplan admit`: requests that arrive during the day, placed into a plan (shardplan.planner.admit)."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from shardplan.planner.cli.common import console, errors, fail_input, print_violations


def parse_moment(text: str, flag: str) -> datetime:
    """An ISO date-time (UTC when it names no zone); a bad one exits 2 naming the flag."""
    from shardplan.planner.admit import as_utc

    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError as exc:
        errors.print(f"bad option: {flag} {text!r}: expected an ISO date-time such as 2024-06-03T09:00",
                     style="bold red", markup=False)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    @app.command("admit")
    def admit_command(
        plan_dir: Path = typer.Argument(..., help="plan directory to admit into (a nightly's, or an earlier admit's)"),
        requests: Path = typer.Option(..., "--requests", help="arriving requests (CSV or Parquet, the requests "
                                      "columns; optional ends_at: when each leaves, UTC)"),
        at: str = typer.Option(..., "--at", help="when they arrive (ISO date-time, UTC unless it names a zone): "
                               "picks the reservation window, and what has ended by then leaves first"),
        out: Path = typer.Option(..., "--out", help="plan directory to write (may be PLAN_DIR itself: edited in "
                                 "place, atomically)"),
        force: bool = typer.Option(False, "--force", help="replace another plan already in --out"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
    ) -> None:
        """Place requests arriving during the day into the plan: from their reservation blocks first (a hit),
        else from free capacity (a miss), else unplaced with the reason; blocks' remaining amounts written back."""
        from shardplan.plandir import FILTERS_FILE, PlanDirError, read_plan_dir
        from shardplan.planner.admit import AdmitError, Ledger, admit, check_ledger, write_ledger
        from shardplan.planner.report.export import OutDirError, prepare_out_dir
        from shardplan.planner.validate.inputs import InputError, load_requests

        moment = parse_moment(at, "--at")
        try:
            plan = read_plan_dir(plan_dir)
        except PlanDirError as exc:
            errors.print(f"bad input: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        in_place = out.resolve() == plan_dir.resolve()
        if not in_place:
            try:
                prepare_out_dir(out, force)
            except OutDirError as exc:
                errors.print(f"bad option: {exc}", style="bold red", markup=False)
                raise typer.Exit(2) from exc
        try:
            arrivals = load_requests(requests)
        except InputError as exc:
            fail_input(exc)
        try:
            ledger, summary = admit(Ledger.from_plan_dir(plan), arrivals, moment)
        except AdmitError as exc:
            errors.print(f"bad input: {requests}: {exc}", style="bold red", markup=False)
            raise typer.Exit(2) from exc
        violations = check_ledger(ledger)
        if violations:  # a bug: write nothing
            print_violations(violations)
            errors.print("admit: the edited plan breaks the invariants above; nothing was written", style="bold red",
                         markup=False)
            raise typer.Exit(1)
        keep = ("forecast.parquet", "inputs/history.parquet", FILTERS_FILE) if in_place else ()
        write_ledger(ledger, out, keep=keep)
        figures = {"plan_dir": str(out), **summary.to_dict(),
                   "reservation_rows_left": ledger.reservations.height}
        if as_json:
            sys.stdout.write(json.dumps(figures, default=str) + "\n")
            return
        table = Table(title=f"admitted at {moment:%Y-%m-%d %H:%M} UTC → {out}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row("released (ended by --at)", str(summary.released))
        table.add_row("reservation rows expired", str(summary.expired_rows))
        for outcome, count in summary.outcomes.items():
            table.add_row(f"  {outcome}", str(count))
        for resource, amount in summary.asked.items():
            given = summary.from_reservations[resource]
            share = f" ({given / amount:.0%})" if amount else ""
            table.add_row(f"{resource} asked / from reservations", f"{amount} / {given}{share}")
        console.print(table)

    @app.command("predict")
    def predict_command(
        user: str = typer.Option(..., "--user", help="user_id"),
        app_type: str = typer.Option(..., "--app", help="application type"),
        at: str = typer.Option(..., "--at", help="hour to predict: an ISO date-time, or a time of day HH:MM (its "
                               "next occurrence after the history ends)"),
        history: Optional[Path] = typer.Option(None, "--history", help="history table (default: the embedded "
                                               "demo's)"),
        forecaster: Optional[str] = typer.Option(None, "--forecaster", help="registered forecaster (default: the "
                                                 "nightly's)"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    ) -> None:
        """What a (user, app type) will need at an hour: the forecast from its history, else the app type's
        documented default allocation (predict_resource_needs)."""
        from datetime import time as day_time

        from shardplan.forecasting.forecasters import FORECASTERS
        from shardplan.forecasting.predict import predict_resource_needs
        from shardplan.planner.nightly import NIGHTLY_FORECASTER, load_inputs
        from shardplan.planner.validate.inputs import InputError, load_history

        name = forecaster or NIGHTLY_FORECASTER
        if name not in FORECASTERS:
            errors.print(f"bad option: unknown forecaster {name!r} (known: {', '.join(sorted(FORECASTERS))})",
                         style="bold red", markup=False)
            raise typer.Exit(2)
        text = at.strip()
        if len(text) <= 5 and ":" in text:
            try:
                hour, minute = (int(x) for x in text.split(":"))
                moment = day_time(hour, minute)
            except ValueError as exc:
                errors.print(f"bad option: --at {at!r}: expected HH:MM or an ISO date-time", style="bold red",
                             markup=False)
                raise typer.Exit(2) from exc
        else:
            moment = parse_moment(text, "--at")
        try:
            table = load_history(history) if history is not None else load_inputs(None).history
        except InputError as exc:
            fail_input(exc)
        needs = predict_resource_needs(user, app_type, moment, table, forecaster=name)
        figures = {"user_id": needs.user_id, "app_type": needs.app_type,
                   "ts": None if needs.ts is None else needs.ts.isoformat(), "source": needs.source,
                   "model": needs.model, "vcpu": round(needs.vcpu, 3), "vcpu_lo": round(needs.vcpu_lo, 3),
                   "vcpu_hi": round(needs.vcpu_hi, 3), "ram_gib": round(needs.ram_gib, 3),
                   "ram_gib_lo": round(needs.ram_gib_lo, 3), "ram_gib_hi": round(needs.ram_gib_hi, 3)}
        if as_json:
            sys.stdout.write(json.dumps(figures) + "\n")
            return
        out = Table(title=f"{user} / {app_type} at {figures['ts'] or at}: {needs.source}"
                          + (f" ({needs.model})" if needs.model else ""))
        for column in ("resource", "P10", "point", "P90"):
            out.add_column(column, justify="left" if column == "resource" else "right")
        out.add_row("vcpu", f"{needs.vcpu_lo:.2f}", f"{needs.vcpu:.2f}", f"{needs.vcpu_hi:.2f}")
        out.add_row("ram_gib", f"{needs.ram_gib_lo:.1f}", f"{needs.ram_gib:.1f}", f"{needs.ram_gib_hi:.1f}")
        console.print(out)
