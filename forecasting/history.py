"""Hourly demand series per (user_id, app_type) from the `history` table (DESIGN.md).

The history has one row per VM per time step. Demand is what the VMs used: vcpu
is cores used (cpu_util × vcpu where utilisation is given, else the allocated
vcpu) and ram_gib is taken as recorded. A VM's samples within one hour are
averaged, then the VMs of a (user_id, app_type) are summed.
"""
from __future__ import annotations

import polars as pl

DEMAND_RESOURCES: tuple[str, ...] = ("vcpu", "ram_gib")
SERIES_KEYS: tuple[str, ...] = ("user_id", "app_type")
HOUR = "1h"


def hourly_demand(history: pl.DataFrame) -> pl.DataFrame:
    """Demand per (user_id, app_type, ts) on the hourly grid: vcpu (cores used) and ram_gib.

    An hour in which none of a series' VMs reported is absent, not zero: the traces
    drop samples of VMs that were off or unmonitored, so absence means "unknown".
    A loader whose absence does mean zero (arrivals) writes the zero rows itself.
    """
    used_vcpu = pl.col("vcpu").cast(pl.Float64)
    if "cpu_util" in history.columns:
        used_vcpu = pl.when(pl.col("cpu_util").is_not_null()).then(pl.col("cpu_util") * used_vcpu).otherwise(used_vcpu)
    return (
        history.lazy()
        .with_columns(pl.col("ts").dt.truncate(HOUR), used_vcpu.alias("vcpu"), pl.col("ram_gib").cast(pl.Float64))
        .group_by("vm_id", *SERIES_KEYS, "ts")
        .agg(pl.col("vcpu").mean(), pl.col("ram_gib").mean())
        .group_by(*SERIES_KEYS, "ts").agg(pl.col("vcpu").sum(), pl.col("ram_gib").sum())
        .sort(*SERIES_KEYS, "ts")
        .collect()
    )


def system_load(history: pl.DataFrame) -> pl.DataFrame:
    """Fleet CPU load per hour: cores used / cores allocated over all VMs (columns ts, load in 0–1)."""
    used = pl.col("vcpu").cast(pl.Float64)
    if "cpu_util" in history.columns:
        used = pl.col("cpu_util").fill_null(1.0) * used
    return (
        history.lazy()
        .with_columns(pl.col("ts").dt.truncate(HOUR))
        .group_by("vm_id", "ts").agg(used.mean().alias("used"), pl.col("vcpu").cast(pl.Float64).mean())
        .group_by("ts").agg((pl.col("used").sum() / pl.col("vcpu").sum()).fill_nan(0.0).alias("load"))
        .sort("ts")
        .collect()
    )


def demand_long(demand: pl.DataFrame) -> pl.DataFrame:
    """The hourly demand as one series per (user_id, app_type, resource): columns keys, ts, y."""
    return (
        demand.unpivot(index=[*SERIES_KEYS, "ts"], on=list(DEMAND_RESOURCES), variable_name="resource", value_name="y")
        .sort(*SERIES_KEYS, "resource", "ts")
    )


def demand_wide(forecast: pl.DataFrame, value_columns: tuple[str, ...] = ("point", "lo", "hi")) -> pl.DataFrame:
    """Long forecasts (keys, resource, ts, point/lo/hi, model) back to one row per (user_id, app_type, ts).

    Columns become vcpu, vcpu_lo, vcpu_hi, ram_gib, ram_gib_lo, ram_gib_hi and model.
    """
    suffix = {"point": "", "lo": "_lo", "hi": "_hi"}
    pieces = []
    for resource in DEMAND_RESOURCES:
        part = forecast.filter(pl.col("resource") == resource).select(
            *SERIES_KEYS, "ts", *(pl.col(v).alias(f"{resource}{suffix[v]}") for v in value_columns),
            pl.col("model").alias(f"model_{resource}"),
        )
        pieces.append(part)
    wide = pieces[0].join(pieces[1], on=[*SERIES_KEYS, "ts"], how="full", coalesce=True)
    models = pl.concat_str(
        pl.col("model_vcpu"), pl.col("model_ram_gib"), separator="+", ignore_nulls=True
    )
    model = pl.when(pl.col("model_vcpu") == pl.col("model_ram_gib")).then(pl.col("model_vcpu")).otherwise(models)
    return wide.with_columns(model.alias("model")).drop("model_vcpu", "model_ram_gib").sort(*SERIES_KEYS, "ts")
