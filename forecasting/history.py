"""Hourly demand series per (user_id, app_type) from the `history` table (DESIGN.md).

The history has one row per VM per time step. Demand is what the VMs used: vcpu
is cores used (cpu_util × vcpu where utilisation is given, else the allocated
vcpu) and ram_gib is taken as recorded. A VM's samples within one hour are
averaged, then the VMs of a (user_id, app_type) are summed.
"""
from __future__ import annotations

import polars as pl

DEMAND_RESOURCES: tuple[str, ...] = ("vcpu", "ram_gib")
"""Always forecast (every history has them)."""
OPTIONAL_RESOURCES: tuple[str, ...] = ("storage_gib", "net_gbps", "gpu")
"""Forecast where the history has them (a column with at least one value); a resource it lacks is not forecast
(and not as zero): :func:`missing_resources` names them."""
FORECAST_RESOURCES: tuple[str, ...] = (*DEMAND_RESOURCES, *OPTIONAL_RESOURCES)
SERIES_KEYS: tuple[str, ...] = ("user_id", "app_type")
HOUR = "1h"


def history_resources(history: pl.DataFrame) -> tuple[str, ...]:
    """The resources a history can be forecast in: vcpu, ram_gib and each optional one it has values of."""
    return (*DEMAND_RESOURCES, *(r for r in OPTIONAL_RESOURCES
                                 if r in history.columns and history.get_column(r).null_count() < history.height))


def missing_resources(history: pl.DataFrame) -> list[str]:
    """The optional resources the history has no values of (they are not forecast)."""
    have = set(history_resources(history))
    return [r for r in OPTIONAL_RESOURCES if r not in have]


def hourly_demand(history: pl.DataFrame) -> pl.DataFrame:
    """Demand per (user_id, app_type, ts) on the hourly grid: vcpu (cores used), ram_gib and the optional
    resources the history has (storage_gib, net_gbps, gpu: as recorded, like ram_gib).

    An hour in which none of a series' VMs reported is absent, not zero: the traces
    drop samples of VMs that were off or unmonitored, so absence means "unknown".
    A loader whose absence does mean zero (arrivals) writes the zero rows itself.
    """
    used_vcpu = pl.col("vcpu").cast(pl.Float64)
    if "cpu_util" in history.columns:
        used_vcpu = pl.when(pl.col("cpu_util").is_not_null()).then(pl.col("cpu_util") * used_vcpu).otherwise(used_vcpu)
    extra = [r for r in history_resources(history) if r in OPTIONAL_RESOURCES]
    return (
        history.lazy()
        .with_columns(pl.col("ts").dt.truncate(HOUR), used_vcpu.alias("vcpu"), pl.col("ram_gib").cast(pl.Float64),
                      *(pl.col(r).cast(pl.Float64) for r in extra))
        .group_by("vm_id", *SERIES_KEYS, "ts")
        .agg(pl.col("vcpu").mean(), pl.col("ram_gib").mean(), *(pl.col(r).mean() for r in extra))
        .group_by(*SERIES_KEYS, "ts").agg(pl.col("vcpu").sum(), pl.col("ram_gib").sum(),
                                          *(pl.col(r).sum() for r in extra))
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
    """The hourly demand as one series per (user_id, app_type, resource): columns keys, ts, y (every resource of
    FORECAST_RESOURCES the demand table has)."""
    resources = [r for r in FORECAST_RESOURCES if r in demand.columns]
    return (
        demand.unpivot(index=[*SERIES_KEYS, "ts"], on=resources, variable_name="resource", value_name="y")
        .sort(*SERIES_KEYS, "resource", "ts")
    )


def demand_wide(forecast: pl.DataFrame, value_columns: tuple[str, ...] = ("point", "lo", "hi")) -> pl.DataFrame:
    """Long forecasts (keys, resource, ts, point/lo/hi, model) back to one row per (user_id, app_type, ts).

    Columns become vcpu, vcpu_lo, vcpu_hi, ram_gib, ram_gib_lo, ram_gib_hi (and the same for each optional
    resource forecast) and model (one name, or the distinct names joined by +).
    """
    suffix = {"point": "", "lo": "_lo", "hi": "_hi"}
    present = set(forecast.get_column("resource").unique().to_list())
    resources = [r for r in FORECAST_RESOURCES if r in present or r in DEMAND_RESOURCES]
    wide = None
    for resource in resources:
        part = forecast.filter(pl.col("resource") == resource).select(
            *SERIES_KEYS, "ts", *(pl.col(v).alias(f"{resource}{suffix[v]}") for v in value_columns),
            pl.col("model").alias(f"model_{resource}"),
        )
        wide = part if wide is None else wide.join(part, on=[*SERIES_KEYS, "ts"], how="full", coalesce=True)
    names = [pl.col(f"model_{r}") for r in resources]
    distinct = pl.concat_list(names).list.drop_nulls().list.unique(maintain_order=True).list.join("+")
    return (wide.with_columns(distinct.alias("model")).drop(f"model_{r}" for r in resources)
            .sort(*SERIES_KEYS, "ts"))
