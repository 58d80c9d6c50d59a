"""`shardplan forecast` and `shardplan backtest`: the forecasting half of the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from shardplan.files import write_atomically
from shardplan.forecasting.backtest import BacktestResult, BacktestSettings, run_backtest
from shardplan.forecasting.export import forecast_demand, write_forecast
from shardplan.forecasting.forecasters import BASELINES, DEFAULT_FORECASTER, FORECASTERS
from shardplan.forecasting.history import demand_long, hourly_demand
from shardplan.planner.validate.inputs import InputError, load_history

DEMO_HISTORY = Path(__file__).resolve().parents[1] / "data" / "demo" / "history.parquet"
DEFAULT_BACKTEST_FORECASTERS = (DEFAULT_FORECASTER, *BASELINES)

console = Console()
errors = Console(stderr=True)


def _history(path: Path | None):
    """The validated history table (the embedded demo when no file is given); exit 2 on a bad file."""
    try:
        return load_history(path if path is not None else DEMO_HISTORY)
    except InputError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _forecaster_names(names: list[str] | None, default: tuple[str, ...]) -> list[str]:
    chosen = [n.strip() for item in (names or default) for n in item.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in FORECASTERS]
    if unknown:
        errors.print(f"[red]error:[/red] unknown forecaster {unknown[0]!r} (known: {', '.join(sorted(FORECASTERS))})")
        raise typer.Exit(2)
    return chosen


def backtest_table(result: BacktestResult) -> Table:
    """The summary as a rich table: one row per forecaster and resource."""
    table = Table(title=f"rolling backtest: {len(result.origins)} origins, {result.settings.train_days} d training, "
                        f"{result.settings.horizon_hours} h horizon")
    columns = ("forecaster", "resource", "wape_series_median", "wape_fleet", "mase_series_median", "mase_fleet",
               "coverage", "seconds_per_series")
    for column in columns:
        table.add_column(column, justify="left" if column in ("forecaster", "resource") else "right")
    for row in result.summary.iter_rows(named=True):
        table.add_row(*(f"{row[c]:.3f}" if isinstance(row[c], float) else ("–" if row[c] is None else str(row[c]))
                        for c in columns))
    return table


HISTORY_OPTION = typer.Option("--history", help="history table (CSV or Parquet); default: the demo")


def forecast_command(
    history: Annotated[Optional[Path], HISTORY_OPTION] = None,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="hours to forecast after the history")] = 24,
    out: Annotated[Path, typer.Option("--out", help="directory for forecast.parquet")] = Path("out"),
    forecaster: Annotated[str, typer.Option("--forecaster", help="registered forecaster name")] = DEFAULT_FORECASTER,
    train_days: Annotated[int, typer.Option("--train-days", min=1, help="days of history each fit sees")] = 14,
    dask: Annotated[Optional[str], typer.Option("--dask", help="per-series fits (prophet, mstl, auto_ets, auto_theta, "
                                                "sf_seasonal_naive) as tasks on this Dask scheduler, or `local` for a "
                                                "LocalCluster of one worker per core; the global model trains here")
                    ] = None,
) -> None:
    """Forecast hourly vcpu and ram_gib per (user_id, app_type) and write DIR/forecast.parquet."""
    name = _forecaster_names([forecaster], (DEFAULT_FORECASTER,))[0]
    table = _history(history)
    if dask is None:
        forecast = forecast_demand(table, horizon, name, train_days)
    else:
        from shardplan.cluster import dask_client
        from shardplan.forecasting.on_dask import on_dask

        with dask_client(dask) as client:
            forecast = forecast_demand(table, horizon, on_dask(name, client), train_days)
    run = {"forecaster": name, "horizon_hours": horizon, "train_days": train_days,
           "history": str(history or DEMO_HISTORY), "rows": forecast.height, "dask": dask}
    path = write_forecast(forecast, out, run)
    console.print(f"wrote {path} ({forecast.height} rows, {forecast.select('user_id', 'app_type').unique().height} "
                  f"series, model {name})")


def backtest_command(
    history: Annotated[Optional[Path], HISTORY_OPTION] = None,
    forecasters: Annotated[Optional[list[str]],
                           typer.Option("--forecasters", help="names, repeated or comma-separated")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the scores as JSON here")] = None,
    train_days: Annotated[int, typer.Option("--train-days", min=1)] = 14,
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="hours ahead each origin forecasts")] = 24,
    step_hours: Annotated[int, typer.Option("--step-hours", min=1, help="hours between origins")] = 24,
    max_origins: Annotated[Optional[int],
                           typer.Option("--max-origins", min=1, help="spread at most this many origins")] = None,
) -> None:
    """Rolling-origin backtest of the forecasters side by side: WAPE, MASE, 10–90 coverage."""
    names = _forecaster_names(forecasters, DEFAULT_BACKTEST_FORECASTERS)
    table = _history(history)
    settings = BacktestSettings(train_days=train_days, horizon_hours=horizon, step_hours=step_hours,
                                max_origins=max_origins)
    try:
        result = run_backtest(demand_long(hourly_demand(table)), names, settings)
    except ValueError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(backtest_table(result))
    if json_out is not None:
        write_atomically(json_out, result.to_json())
        console.print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Add the `forecast` and `backtest` commands to the shardplan app."""
    app.command("forecast")(forecast_command)
    app.command("backtest")(backtest_command)
