"""predict_resource_needs: what one (user_id, app_type) will need at a given hour.

No history → the documented default allocation of its application type. Else the
forecast of its hourly demand. Then, optionally, × (1 + current system load) for
vcpu and ram_gib. The backtest measures whether that adjustment helps
(benchmarks/forecast.py, "load adjustment"); :data:`LOAD_ADJUSTMENT_DEFAULT`
follows that measurement.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

import polars as pl

from shardplan.forecasting.forecasters import DEFAULT_FORECASTER, get_forecaster
from shardplan.forecasting.history import demand_long, demand_wide, hourly_demand, system_load


@dataclass(frozen=True)
class Allocation:
    """vcpu and ram_gib handed to a (user, app type) nobody has history for."""

    vcpu: float
    ram_gib: float


DEFAULT_ALLOCATIONS: dict[str, Allocation] = {
    "web": Allocation(2, 4),
    "db": Allocation(8, 56),
    "analytics": Allocation(26, 56),
    "cache": Allocation(8, 56),
    "batch": Allocation(2, 4),
    "ml-training": Allocation(16, 60),
}
"""Default allocation per application type: the median vcpu and ram_gib of that type in the demo requests."""
FALLBACK_ALLOCATION = Allocation(2, 4)
"""For an application type not in DEFAULT_ALLOCATIONS (the Azure V1 modal size is 1–2 vCPU, 1.75–3.5 GB)."""

LOAD_ADJUSTMENT_DEFAULT = False
"""Off, because the backtest says it hurts (benchmarks/forecast.py, "load adjustment"): × (1 + fleet CPU
load) raised the shipped forecaster's median series WAPE on Bitbrains Rnd (vcpu 0.188 → 0.256, ram 0.151 →
0.209) and on the Azure sample (vcpu 0.114 → 0.153), its fleet WAPE too (Bitbrains vcpu 0.265 → 0.389),
and dropped its 10–90 coverage from ~81 % to ~55 %; the same held for every baseline."""


@dataclass(frozen=True)
class ResourceNeeds:
    """What a (user, app type) is expected to need at `ts`, and where the figure came from."""

    user_id: str
    app_type: str
    ts: datetime | None
    vcpu: float
    ram_gib: float
    vcpu_lo: float
    vcpu_hi: float
    ram_gib_lo: float
    ram_gib_hi: float
    source: str
    """default (no history) or forecast."""
    model: str | None
    load: float | None
    """The system load the figures were multiplied by (1 + load) with, else None."""


def target_hour(time_of_day: datetime | time, last_ts: datetime | None) -> datetime | None:
    """The hour to forecast: a datetime as given (truncated to the hour), a time of day as its next occurrence
    after the last history hour."""
    if isinstance(time_of_day, datetime):
        moment = time_of_day if time_of_day.tzinfo else time_of_day.replace(tzinfo=timezone.utc)
        return moment.replace(minute=0, second=0, microsecond=0)
    if last_ts is None:
        return None
    candidate = last_ts.replace(hour=time_of_day.hour, minute=0, second=0, microsecond=0)
    return candidate if candidate > last_ts else candidate + timedelta(days=1)


def predict_resource_needs(user_id: str, app_type: str, time_of_day: datetime | time,
                           history: pl.DataFrame | None = None, *, load: float | None = None,
                           adjust_for_load: bool = LOAD_ADJUSTMENT_DEFAULT, forecaster: str = DEFAULT_FORECASTER,
                           train_days: int = 14) -> ResourceNeeds:
    """Forecast vcpu and ram_gib of (user_id, app_type) at `time_of_day` from the `history` table.

    `load` is the current system load (0–1); when `adjust_for_load` and it is None, the
    fleet utilisation of the history's last hour is used.
    """
    rows = None
    if history is not None and history.height:
        rows = history.filter((pl.col("user_id") == user_id) & (pl.col("app_type") == app_type))
    if rows is None or rows.height == 0:
        allocation = DEFAULT_ALLOCATIONS.get(app_type, FALLBACK_ALLOCATION)
        factor, used_load = _load_factor(adjust_for_load, load, history)
        vcpu, ram = allocation.vcpu * factor, allocation.ram_gib * factor
        when = target_hour(time_of_day, None)
        return ResourceNeeds(user_id, app_type, when, vcpu, ram, vcpu, vcpu, ram, ram, "default", None, used_load)
    demand = hourly_demand(rows)
    last_ts = demand.get_column("ts").max()
    when = target_hour(time_of_day, last_ts)
    horizon = max(1, int((when - last_ts) / timedelta(hours=1)))
    recent = demand.filter(pl.col("ts") > last_ts - timedelta(days=train_days))
    model = get_forecaster(forecaster)
    try:
        forecast = model.fit_predict(demand_long(recent), horizon).with_columns(pl.lit(model.name).alias("model"))
    finally:
        model.close()
    row = demand_wide(forecast).filter(pl.col("ts") == when)
    if row.height == 0:  # the hour asked for lies in the history already: report what was used then
        row = demand.filter(pl.col("ts") == when).with_columns(
            *(pl.col(r).alias(f"{r}{s}") for r in ("vcpu", "ram_gib") for s in ("_lo", "_hi")),
            pl.lit("history").alias("model"),
        )
    factor, used_load = _load_factor(adjust_for_load, load, history)
    first = row.row(0, named=True) if row.height else {c: 0.0 for c in ("vcpu", "vcpu_lo", "vcpu_hi", "ram_gib",
                                                                        "ram_gib_lo", "ram_gib_hi")} | {"model": None}
    return ResourceNeeds(
        user_id, app_type, when,
        first["vcpu"] * factor, first["ram_gib"] * factor, first["vcpu_lo"] * factor, first["vcpu_hi"] * factor,
        first["ram_gib_lo"] * factor, first["ram_gib_hi"] * factor, "forecast", first["model"], used_load,
    )


def _load_factor(adjust: bool, load: float | None, history: pl.DataFrame | None) -> tuple[float, float | None]:
    """(1 + load, load) when adjusting, else (1, None); the load defaults to the history's last hour."""
    if not adjust:
        return 1.0, None
    if load is None:
        load = 0.0
        if history is not None and history.height:
            load = float(system_load(history).sort("ts").get_column("load")[-1])
    return 1.0 + load, load
