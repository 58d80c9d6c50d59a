"""Forecast every (user_id, app_type) of a history and write DIR/forecast.parquet (DESIGN.md)."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl

from shardplan.files import write_parquet_atomically
from shardplan.forecasting.forecasters import DEFAULT_FORECASTER, Forecaster, get_forecaster
from shardplan.forecasting.history import (
    OPTIONAL_RESOURCES,
    SERIES_KEYS,
    demand_long,
    demand_wide,
    hourly_demand,
)

FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Utf8,
    "app_type": pl.Utf8,
    "ts": pl.Datetime("us", "UTC"),
    "vcpu": pl.Float64,
    "vcpu_lo": pl.Float64,
    "vcpu_hi": pl.Float64,
    "ram_gib": pl.Float64,
    "ram_gib_lo": pl.Float64,
    "ram_gib_hi": pl.Float64,
    "model": pl.Utf8,
}


def forecast_demand(history: pl.DataFrame, horizon_hours: int, forecaster: str | Forecaster = DEFAULT_FORECASTER,
                    train_days: int = 14) -> pl.DataFrame:
    """One row per (user_id, app_type, ts) of the horizon after the history's last hour (FORECAST_SCHEMA, then
    `<resource>`, `_lo`, `_hi` for each optional resource the history has: storage_gib, net_gbps, gpu)."""
    if horizon_hours < 1:
        raise ValueError(f"the horizon must be at least 1 hour, got {horizon_hours}")
    demand = hourly_demand(history)
    last_ts = demand.get_column("ts").max()
    recent = demand.filter(pl.col("ts") > last_ts - timedelta(days=train_days))
    model = get_forecaster(forecaster) if isinstance(forecaster, str) else forecaster
    try:
        forecast = model.fit_predict(demand_long(recent), horizon_hours)
    finally:
        model.close()
    wide = demand_wide(forecast.with_columns(pl.lit(model.name).alias("model")))
    extra = [f"{r}{s}" for r in OPTIONAL_RESOURCES if r in wide.columns for s in ("", "_lo", "_hi")]
    return wide.select(*(pl.col(name).cast(dtype) for name, dtype in FORECAST_SCHEMA.items()),
                       *(pl.col(c).cast(pl.Float64) for c in extra)).sort(*SERIES_KEYS, "ts")


def write_forecast(forecast: pl.DataFrame, out_dir: str | Path, run: dict[str, object] | None = None) -> Path:
    """Write DIR/forecast.parquet atomically; `run` goes into the key-value metadata."""
    metadata = {"shardplan": json.dumps(run or {}, default=str)}
    return write_parquet_atomically(forecast, Path(out_dir) / "forecast.parquet", metadata=metadata)
