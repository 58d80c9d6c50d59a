"""Pre-allocation in the plan: forecast peaks → reservation sizing → blocks → plan → split.

A forecast (one row per (user_id, app_type, hour), point and 10th/90th percentiles) becomes
three scenarios of each group's peak demand in the window (Swanson's 0.3/0.4/0.3 on the
10th/50th/90th percentiles). :mod:`shardplan.models.reservations` sizes what to reserve per group
and resource within the free capacity of the host classes that suit the group. The
amounts are cut into blocks one host can hold, planned as requests of their own kind
beside the real requests (which win: ``PlanOptions.reservation_weight``), and the placed
blocks leave shards.parquet for reservations.parquet with status ``reserved``.

Which host classes suit which application type (:data:`APP_HOST_CLASSES`): GPU groups
(app type in :data:`GPU_APP_TYPES`, or GPUs in their history) only classes whose hosts
carry GPUs; db and cache the memory-optimized and general classes; analytics cpu-optimized,
memory-optimized and general; web general and cpu-optimized; batch cpu-optimized, general
and storage-hdd (cheap bulk hosts). Any other type, or a type none of whose classes exist
in the fleet, may use every class without GPUs. The mapping bounds the sizing only: the
placement puts a block on any host that fits it (GPU blocks on GPU hosts by their GPUs).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from shardplan.models.problem import PlanStatus, SolveResult
from shardplan.models.reservations import ReservationProblem, solve_reservations
from shardplan.planner.engine import KIND_COLUMN, RESERVATION_KIND, Plan, PlanReport, plan
from shardplan.planner.search.budget import SearchBudget
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import REQUEST_COLUMNS, RESERVATIONS_SCHEMA, RESOURCES, capacity_expr, free_expr

SIZED_RESOURCES: tuple[str, ...] = ("vcpu", "ram_gib")
"""Resources the forecast covers and the sizing reserves (GPUs follow vcpu in GPU groups)."""
SCENARIO_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
SWANSON_WEIGHTS: tuple[float, ...] = (0.3, 0.4, 0.3)
"""Swanson's rule: P10, P50 and P90 weighted 0.3 / 0.4 / 0.3 approximate the distribution's mean."""
SCENARIO_COLUMNS: tuple[str, ...] = ("peak_p10", "peak_p50", "peak_p90")
REQUEST_KIND = "request"

GPU_APP_TYPES: tuple[str, ...] = ("ml-training", "training", "inference", "gpu")
APP_HOST_CLASSES: dict[str, tuple[str, ...]] = {
    "db": ("memory-optimized", "general"),
    "cache": ("memory-optimized", "general"),
    "analytics": ("cpu-optimized", "memory-optimized", "general"),
    "web": ("general", "cpu-optimized"),
    "batch": ("cpu-optimized", "general", "storage-hdd"),
}
"""Host classes (hosts.host_class) a non-GPU application type may reserve on; see the module docstring."""
ANY_CLASS = "any"
"""The single unlimited class used when sizing without a fleet (the pre-allocation replay)."""


@dataclass(frozen=True)
class ReservationOptions:
    """Knobs of the reservation sizing and of the blocks; units in the names."""

    reserve_price_per_unit_hour: float = 0.03
    """$ per unit-hour of reserved capacity where no host class prices it (sizing without a fleet, or a class
    whose hosts list no cost): m6id.metal (general) lists $7.59/h for 128 vcpu + 512 GiB = 256 units. With a
    fleet each class's own price is used (:func:`class_capacity`: the median `cost_per_hour` per unit of its
    up hosts)."""
    shortfall_penalty_per_unit_hour: float = 0.30
    """$ per unit-hour of peak demand above the reservation (served reactively, if at all). The critical
    fractile is 1 − price ÷ penalty: 0.9 at the reference price (cover the 90th percentile of the peak),
    higher on cheaper classes, lower on dear ones (the demo's GPU class: 0.67)."""
    window_hours: int = 4
    """Length of each reservation window: the horizon is cut into windows from its first hour, and each
    window's blocks are sized from that window's forecast (a block's host holds its largest window)."""
    ram_gib_per_unit: float = 4.0
    """GiB of RAM priced as one unit (one vcpu is one unit), as PlanOptions.demand_ram_gib_per_unit."""
    quantile_floor: float = 0.5
    """Reserve at least this quantile of the peak (interpolated between P10, P50 and P90); 0 disables."""
    block_vcpu: int = 16
    """Largest block in vcpu (a quarter of the demo's smallest general host)."""
    block_ram_gib: int = 128
    """Largest block in GiB of RAM (8 GiB per vcpu of a full block)."""
    horizon_hours: int = 24
    """Length of the window the reservations hold for, starting the hour after the history ends."""
    train_days: int = 14
    """Days of history the forecaster is fitted on."""
    time_limit_s: float = 30.0
    """Time limit of the sizing LP."""

    def validate(self) -> None:
        if self.reserve_price_per_unit_hour < 0 or self.shortfall_penalty_per_unit_hour < 0:
            raise ValueError("reservation prices must be ≥ 0")
        if self.window_hours < 1:
            raise ValueError(f"window_hours must be ≥ 1, got {self.window_hours}")
        if not 0 <= self.quantile_floor <= 1:
            raise ValueError(f"quantile_floor must be in [0, 1], got {self.quantile_floor}")
        if self.block_vcpu < 1 or self.block_ram_gib < 1 or self.horizon_hours < 1 or self.ram_gib_per_unit <= 0:
            raise ValueError("block_vcpu, block_ram_gib and horizon_hours must be ≥ 1, ram_gib_per_unit > 0")

    def replace(self, **changes: object) -> "ReservationOptions":
        """A copy with the given fields changed; None values are ignored (unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ReservationSizing:
    """What the sizing decided: the solver result and one row per group and window (see
    :func:`size_reservations`); window_start / window_end: the whole horizon."""

    result: SolveResult
    groups: pl.DataFrame
    window_start: datetime | None
    window_end: datetime | None
    note: str | None = None
    """Why the answer differs from the plain model's (a dropped floor), else None."""


@dataclass
class ReservedPlan:
    """A plan of real requests and reservation blocks, split into the exported tables."""

    plan: Plan
    requests: pl.DataFrame
    """Real requests and blocks (what inputs/requests.parquet holds), with the kind column."""
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    reservations: pl.DataFrame
    report: PlanReport

    @property
    def plan_json(self) -> dict:
        return self.report.to_dict()


# --- forecast → scenarios ---------------------------------------------------------------


def peak_scenarios(forecast: pl.DataFrame) -> pl.DataFrame:
    """Per (user_id, app_type, resource): the window's peak at P10, P50 and P90 (peak_p10 ≤ peak_p50 ≤ peak_p90).

    The peak of a percentile path (max over the hours of the hourly percentile) stands for the
    percentile of the peak; it is exact when forecast errors move the whole window together.
    """
    keys = ["user_id", "app_type", *(["window"] if "window" in forecast.columns else [])]
    long = pl.concat([
        forecast.select(*keys, pl.lit(resource).alias("resource"),
                        pl.col(f"{resource}_lo").alias("lo"), pl.col(resource).alias("mid"),
                        pl.col(f"{resource}_hi").alias("hi"))
        for resource in SIZED_RESOURCES])
    peaks = long.group_by(*keys, "resource").agg(
        pl.col("lo").max().clip(0.0), pl.col("mid").max().clip(0.0), pl.col("hi").max().clip(0.0))
    ordered = pl.concat_list("lo", "mid", "hi").list.sort()
    return peaks.select(
        *keys, "resource",
        *(ordered.list.get(i).alias(name) for i, name in enumerate(SCENARIO_COLUMNS)),
    ).sort(*keys, "resource")


def with_windows(forecast: pl.DataFrame, window_hours: int) -> pl.DataFrame:
    """The forecast with `window` (0, 1, …: window_hours-long windows from its first hour), window_start and
    window_end (the last window ends with the horizon)."""
    if forecast.height == 0:
        return forecast.with_columns(pl.lit(0, pl.Int64).alias("window"),
                                     pl.col("ts").alias("window_start"), pl.col("ts").alias("window_end"))
    first = forecast["ts"].min()
    end = forecast["ts"].max() + timedelta(hours=1)
    index = ((pl.col("ts") - pl.lit(first)).dt.total_hours() // window_hours).cast(pl.Int64)
    return forecast.with_columns(index.alias("window")).with_columns(
        (pl.lit(first) + pl.duration(hours=pl.col("window") * window_hours)).alias("window_start")
    ).with_columns(pl.min_horizontal(pl.col("window_start") + pl.duration(hours=window_hours), pl.lit(end))
                   .alias("window_end"))


def quantile_of_peak(level: float, suffix: str = "") -> pl.Expr:
    """The `level` quantile of the peak, linear between P10, P50 and P90 and flat outside them.

    Reads columns peak_p10<suffix>, peak_p50<suffix>, peak_p90<suffix>.
    """
    low, mid, high = SCENARIO_LEVELS
    p10, p50, p90 = (pl.col(f"{column}{suffix}") for column in SCENARIO_COLUMNS)
    if level <= low:
        return p10
    if level >= high:
        return p90
    if level <= mid:
        return p10 + (level - low) / (mid - low) * (p50 - p10)
    return p50 + (level - mid) / (high - mid) * (p90 - p50)


# --- the fleet's free capacity per class ---------------------------------------------------


def class_capacity(hosts: pl.DataFrame, ram_gib_per_unit: float = 4.0) -> pl.DataFrame:
    """Free vcpu (× overcommit) and RAM per host class over up hosts, whether the class has GPUs, and
    `unit_price`: the median over its hosts of cost_per_hour ÷ (vcpu + ram_gib ÷ ram_gib_per_unit) units
    (null when its hosts list no cost)."""
    units = capacity_expr("vcpu") + pl.col("ram_gib") / ram_gib_per_unit
    return (
        hosts.filter(pl.col("status") == "up")
        .group_by("host_class")
        .agg(free_expr("vcpu").sum().alias("vcpu"), free_expr("ram_gib").sum().alias("ram_gib"),
             (pl.col("gpu") > 0).any().alias("has_gpu"), free_expr("gpu").sum().alias("free_gpu"),
             (pl.col("cost_per_hour") / units).filter((units > 0) & (pl.col("cost_per_hour") > 0)).median()
             .alias("unit_price"))
        .sort("host_class")
    )


def gpu_groups(history: pl.DataFrame | None) -> pl.DataFrame:
    """(user_id, app_type) pairs whose history shows GPUs in use."""
    if history is None or "gpu" not in history.columns:
        return pl.DataFrame(schema={"user_id": pl.Utf8, "app_type": pl.Utf8})
    return history.filter(pl.col("gpu").fill_null(0) > 0).select("user_id", "app_type").unique()


def suitable_classes(app_type: str, uses_gpu: bool, classes: pl.DataFrame) -> list[str]:
    """Host classes a group may reserve on (module docstring); [] when the fleet has none for it."""
    with_gpu = classes.filter(pl.col("has_gpu"))["host_class"].to_list()
    if uses_gpu:
        return with_gpu
    named = [c for c in APP_HOST_CLASSES.get(app_type, ()) if c in classes["host_class"].to_list()
             and c not in with_gpu]
    return named or classes.filter(~pl.col("has_gpu"))["host_class"].to_list()


def forecast_window(forecast: pl.DataFrame) -> tuple[datetime | None, datetime | None]:
    """[first forecast hour, last forecast hour + 1 h): the window the reservations hold for."""
    if forecast.height == 0:
        return None, None
    bounds = forecast.select(pl.col("ts").min().alias("start"),
                             (pl.col("ts").max() + pl.duration(hours=1)).alias("end"))
    return bounds["start"][0], bounds["end"][0]


# --- sizing -----------------------------------------------------------------------------


def size_reservations(forecast: pl.DataFrame, hosts: pl.DataFrame | None, options: ReservationOptions,
                      history: pl.DataFrame | None = None) -> ReservationSizing:
    """Reserved vcpu and ram_gib per (user_id, app_type) and window of the forecast's horizon.

    The horizon is cut into windows of options.window_hours (:func:`with_windows`). `hosts` None sizes
    without a capacity limit, at options.reserve_price_per_unit_hour; with hosts each class is priced
    by its catalogue cost (:func:`class_capacity`). Rows of `groups`: user_id, app_type, window,
    window_start, window_end, uses_gpu, host_classes, the P10/P50/P90 peaks, the floor and the
    reserved amount per resource (``peak_p50_vcpu``, ``floor_vcpu``, ``reserved_vcpu``…). The windows
    of a group share one envelope in the class capacity (their blocks are held as the largest). When
    the floors do not fit the capacity, they are dropped and the sizing re-solved (said in ``note``).
    """
    options.validate()
    window_start, window_end = forecast_window(forecast)
    groups = group_peaks(with_windows(forecast, options.window_hours), history)
    if window_start is None:
        groups = groups.with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("window_start"),
                                     pl.lit(None, pl.Datetime("us", "UTC")).alias("window_end"))
    if hosts is None:
        classes = pl.DataFrame({"host_class": [ANY_CLASS], "vcpu": [math.inf], "ram_gib": [math.inf],
                                "has_gpu": [True], "free_gpu": [0], "unit_price": [None]},
                               schema_overrides={"unit_price": pl.Float64})
        class_lists = [[ANY_CLASS]] * groups.height
    else:
        classes = class_capacity(hosts, options.ram_gib_per_unit)
        class_lists = [suitable_classes(app, gpu, classes)
                       for app, gpu in zip(groups["app_type"].to_list(), groups["uses_gpu"].to_list())]
    groups = groups.with_columns(
        pl.Series("host_classes", class_lists, dtype=pl.List(pl.Utf8)),
        *((quantile_of_peak(options.quantile_floor, f"_{resource}") if options.quantile_floor > 0 else pl.lit(0.0))
          .alias(f"floor_{resource}") for resource in SIZED_RESOURCES))
    problem = sizing_problem(groups, classes, options, float(options.horizon_hours))
    solution = solve_reservations(problem)
    note = None
    if solution.result.status == PlanStatus.INFEASIBLE and problem.floor.any():
        solution = solve_reservations(dataclasses.replace(problem, floor=np.zeros_like(problem.floor)))
        note = (f"the {options.quantile_floor:g}-quantile floors exceed the free capacity of the host classes; "
                "sized without them")
    groups = groups.with_columns(
        *(pl.Series(f"{name}_{resource}", values[:, i])
          for name, values in (("reserved", solution.reserved), ("expected_idle", solution.expected_idle),
                               ("expected_shortfall", solution.expected_shortfall))
          for i, resource in enumerate(SIZED_RESOURCES)))
    return ReservationSizing(solution.result, groups, window_start, window_end, note)


WINDOW_KEYS: tuple[str, ...] = ("window", "window_start", "window_end")


def group_peaks(forecast: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
    """One row per group (and window, when the forecast has windows): peak_p10_vcpu … peak_p90_ram_gib and
    uses_gpu (GPU app type or GPUs in its history)."""
    windowed = "window" in forecast.columns
    scenarios = peak_scenarios(forecast)
    keys = ["user_id", "app_type", *(["window"] if windowed else [])]
    groups = scenarios.select(keys).unique()
    for resource in SIZED_RESOURCES:
        groups = groups.join(scenarios.filter(pl.col("resource") == resource).select(
            *keys, *(pl.col(c).alias(f"{c}_{resource}") for c in SCENARIO_COLUMNS)),
            on=keys, how="left")
    if windowed:
        bounds = forecast.select(WINDOW_KEYS).unique()
        groups = groups.join(bounds, on="window", how="left")
    with_gpus = gpu_groups(history).with_columns(pl.lit(True).alias("gpu_in_history"))
    return (groups.fill_null(0.0).join(with_gpus, on=["user_id", "app_type"], how="left")
            .with_columns((pl.col("gpu_in_history").fill_null(False) | pl.col("app_type").is_in(list(GPU_APP_TYPES)))
                          .alias("uses_gpu"))
            .drop("gpu_in_history").sort(keys))


def sizing_problem(groups: pl.DataFrame, classes: pl.DataFrame, options: ReservationOptions,
                   hours: float) -> ReservationProblem:
    """The plain arrays shardplan.models.reservations solves; RAM is priced per ram_gib_per_unit GiB. Rows of
    one (user_id, app_type) share an envelope; a row's hours are its window's (else `hours`)."""
    class_names = classes["host_class"].to_list()
    index = {name: i for i, name in enumerate(class_names)}
    suits = np.zeros((groups.height, len(class_names)), dtype=bool)
    for g, names in enumerate(groups["host_classes"].to_list()):
        suits[g, [index[n] for n in names]] = True
    peaks = np.stack([groups.select(f"{column}_{resource}" for column in SCENARIO_COLUMNS).to_numpy()
                      for resource in SIZED_RESOURCES], axis=1).astype(float)
    per_unit = np.array([1.0, 1.0 / options.ram_gib_per_unit])
    unit_price = classes["unit_price"].fill_null(options.reserve_price_per_unit_hour).to_numpy().astype(float)
    keys = groups.select(pl.concat_str("user_id", "app_type", separator="\x1f")).to_series().to_list()
    first: dict[str, int] = {}
    envelope = np.array([first.setdefault(k, len(first)) for k in keys], dtype=int)
    row_hours = None
    if "window_start" in groups.columns and groups["window_start"].null_count() == 0:
        row_hours = ((groups["window_end"] - groups["window_start"]).dt.total_seconds() / 3600).to_numpy()
    labels = [f"{u}/{a}" for u, a in zip(groups["user_id"].to_list(), groups["app_type"].to_list())]
    if "window" in groups.columns:
        labels = [f"{label}@{w}" for label, w in zip(labels, groups["window"].to_list())]
    return ReservationProblem(
        groups=tuple(labels),
        resources=SIZED_RESOURCES, peaks=peaks, probabilities=np.array(SWANSON_WEIGHTS),
        floor=groups.select(f"floor_{r}" for r in SIZED_RESOURCES).to_numpy().astype(float),
        classes=tuple(class_names), class_capacity=classes.select(SIZED_RESOURCES).to_numpy().astype(float),
        suits=suits, reserve_price=unit_price[:, None] * per_unit[None, :],
        shortfall_penalty=options.shortfall_penalty_per_unit_hour * per_unit, window_hours=hours,
        time_limit_s=options.time_limit_s, hours=row_hours, envelope_of=envelope)


# --- blocks -----------------------------------------------------------------------------


def reservation_blocks(sizing: ReservationSizing, hosts: pl.DataFrame, requests: pl.DataFrame | None,
                       plan_options: PlanOptions, options: ReservationOptions) -> pl.DataFrame:
    """Requests rows of kind ``reservation`` carrying each group's largest reserved amounts over its
    windows (the envelope the block's host holds), rounded up, with `block` and `blocks` (its index and
    the group's count: :func:`block_windows` reads them).

    A group's vcpu and RAM are split evenly over the fewest blocks within block_vcpu and
    block_ram_gib. Each block holds at least min_local_ram_gib_per_vcpu GiB per vcpu (invariant 4:
    a one-host block keeps all its RAM local). GPU groups' blocks carry ≥ 1 vcpu and GPUs at the
    group's requests' vcpu per GPU (else the GPU hosts'), of the model its requests ask for
    (else the model with the most free devices).
    """
    groups = sizing.groups
    if groups.height == 0:
        return empty_blocks()
    envelope = (window_totals(groups).group_by("user_id", "app_type", "uses_gpu")
                .agg(pl.col("vcpu_total").max(), pl.col("ram_total").max()))
    count = pl.max_horizontal(
        (pl.col("vcpu_total") + options.block_vcpu - 1) // options.block_vcpu,
        (pl.col("ram_total") + options.block_ram_gib - 1) // options.block_ram_gib,
    )
    gpu_terms = gpu_terms_per_group(groups.unique(["user_id", "app_type"], keep="first"), hosts, requests)
    blocks = (
        envelope.with_columns(count.alias("blocks"))
        .filter(pl.col("blocks") > 0)
        .with_columns(pl.int_ranges(0, "blocks").alias("block"))
        .explode("block")
        .with_columns(split_evenly("vcpu_total").alias("vcpu"), split_evenly("ram_total").alias("ram_gib"))
        .join(gpu_terms, on=["user_id", "app_type"], how="left")
        .with_columns(pl.when(pl.col("uses_gpu")).then(pl.col("vcpu").clip(1)).otherwise(pl.col("vcpu")).alias("vcpu"))
        .with_columns(
            pl.when(pl.col("uses_gpu"))
            .then((pl.col("vcpu") / pl.col("vcpu_per_gpu")).round(0).clip(1).cast(pl.Int64))
            .otherwise(0).alias("gpu"),
            local_ram(plan_options.min_local_ram_gib_per_vcpu),
        )
    )
    return blocks.select(
        pl.format("rsv-{}-{}-{}", "user_id", "app_type", pl.col("block") + 1).alias("request_id"),
        "user_id", "app_type", "vcpu", "ram_gib", pl.lit(0, pl.Int64).alias("storage_gib"), "gpu",
        pl.lit(0.0).alias("net_gbps"), pl.lit(None, pl.Utf8).alias("storage_type"),
        pl.when(pl.col("gpu") > 0).then(pl.col("gpu_model")).otherwise(None).alias("gpu_model"),
        pl.lit(1, pl.Int64).alias("priority"), pl.lit(1, pl.Int64).alias("max_shards"),
        pl.lit(1, pl.Int64).alias("replicas"), pl.lit("medium").alias("latency_class"),
        pl.lit(True).alias("evictable"),  # a hold of room, not a running VM
        pl.lit(RESERVATION_KIND).alias(KIND_COLUMN),
        pl.col("block").cast(pl.Int64), pl.col("blocks").cast(pl.Int64),
    ).sort("request_id")


def window_totals(groups: pl.DataFrame, sizing: ReservationSizing | None = None) -> pl.DataFrame:
    """Per group and window: vcpu_total and ram_total (the reserved amounts rounded up) and the window's
    bounds (a sizing without windows: one window, the sizing's)."""
    if "window_start" not in groups.columns:
        start = None if sizing is None else sizing.window_start
        end = None if sizing is None else sizing.window_end
        groups = groups.with_columns(pl.lit(start, pl.Datetime("us", "UTC")).alias("window_start"),
                                     pl.lit(end, pl.Datetime("us", "UTC")).alias("window_end"))
    return groups.select(
        "user_id", "app_type", "uses_gpu", "window_start", "window_end",
        (pl.col("reserved_vcpu") - 1e-6).ceil().clip(0).cast(pl.Int64).alias("vcpu_total"),
        (pl.col("reserved_ram_gib") - 1e-6).ceil().clip(0).cast(pl.Int64).alias("ram_total"))


def split_evenly(total: str) -> pl.Expr:
    """Block `block`'s share of `total` split evenly over `blocks` (the first ones take the remainder)."""
    return (pl.col(total) // pl.col("blocks") + (pl.col("block") < pl.col(total) % pl.col("blocks"))).cast(pl.Int64)


def local_ram(ratio: float) -> pl.Expr:
    """ram_gib raised to min_local_ram_gib_per_vcpu × vcpu (invariant 4 for a one-host block)."""
    return pl.max_horizontal("ram_gib", (pl.col("vcpu") * ratio - 1e-9).ceil().cast(pl.Int64)).alias("ram_gib")


def block_windows(sizing: ReservationSizing | None, blocks: pl.DataFrame, plan_options: PlanOptions) -> pl.DataFrame:
    """What each block holds in each window of the sizing: request_id, window_start, window_end, vcpu,
    ram_gib, gpu. A window's amounts are split over the group's blocks as the envelope is, so no window
    asks more of a block than its host holds (the split is monotone in the total); GPUs are whole
    devices, held in every window. A window where the block holds nothing has no row."""
    schema = {"request_id": pl.Utf8, "window_start": RESERVATIONS_SCHEMA["window_start"],
              "window_end": RESERVATIONS_SCHEMA["window_end"], "vcpu": pl.Int64, "ram_gib": pl.Int64, "gpu": pl.Int64}
    if sizing is None or blocks.height == 0 or "block" not in blocks.columns:
        return pl.DataFrame(schema=schema)
    totals = window_totals(sizing.groups, sizing)
    rows = (blocks.select("request_id", "user_id", "app_type", "block", "blocks", pl.col("vcpu").alias("env_vcpu"),
                          pl.col("ram_gib").alias("env_ram"), "gpu")
            .join(totals, on=["user_id", "app_type"], how="inner")
            .with_columns(split_evenly("vcpu_total").alias("vcpu"), split_evenly("ram_total").alias("ram_gib"))
            .with_columns(pl.when(pl.col("uses_gpu")).then(pl.col("vcpu").clip(1)).otherwise(pl.col("vcpu"))
                          .alias("vcpu"))
            .with_columns(local_ram(plan_options.min_local_ram_gib_per_vcpu))
            .with_columns(pl.min_horizontal("vcpu", "env_vcpu").alias("vcpu"),
                          pl.min_horizontal("ram_gib", "env_ram").alias("ram_gib"))
            .filter((pl.col("vcpu") > 0) | (pl.col("ram_gib") > 0) | (pl.col("gpu") > 0)))
    return rows.select(list(schema)).cast(schema).sort("request_id", "window_start")


def empty_blocks() -> pl.DataFrame:
    """A blocks table with no rows (the requests columns and kind)."""
    return pl.DataFrame(schema={**{c.name: c.polars_dtype for c in REQUEST_COLUMNS}, KIND_COLUMN: pl.Utf8})


def gpu_terms_per_group(groups: pl.DataFrame, hosts: pl.DataFrame, requests: pl.DataFrame | None) -> pl.DataFrame:
    """vcpu_per_gpu and gpu_model per group: from its GPU requests when it has some, else from the fleet."""
    gpu_hosts = hosts.filter((pl.col("gpu") > 0) & (pl.col("status") == "up"))
    fleet_ratio = float(gpu_hosts["vcpu"].sum() / gpu_hosts["gpu"].sum()) if gpu_hosts.height else 1.0
    free_models = (gpu_hosts.group_by("gpu_model").agg((pl.col("gpu") - pl.col("used_gpu")).clip(0).sum().alias("free"))
                   .sort("free", "gpu_model", descending=[True, False]))
    fleet_model = free_models["gpu_model"][0] if free_models.height else None
    keys = groups.select("user_id", "app_type")
    if requests is not None and requests.height:
        asked = requests.filter(pl.col("gpu") > 0).group_by("user_id", "app_type").agg(
            (pl.col("vcpu").sum() / pl.col("gpu").sum()).alias("vcpu_per_gpu"),
            pl.col("gpu_model").drop_nulls().mode().sort().first().alias("gpu_model"))
        keys = keys.join(asked, on=["user_id", "app_type"], how="left")
    else:
        keys = keys.with_columns(pl.lit(None, pl.Float64).alias("vcpu_per_gpu"),
                                 pl.lit(None, pl.Utf8).alias("gpu_model"))
    return keys.with_columns(pl.col("vcpu_per_gpu").fill_null(fleet_ratio).clip(1e-9),
                             pl.col("gpu_model").fill_null(pl.lit(fleet_model, pl.Utf8)))


def with_blocks(requests: pl.DataFrame, blocks: pl.DataFrame) -> pl.DataFrame:
    """The real requests (kind ``request``) followed by the blocks, in the requests columns plus kind."""
    clash = blocks.join(requests.select("request_id"), on="request_id", how="semi")
    if clash.height:
        raise ValueError(f"reservation block id {clash['request_id'][0]!r} is already a request id")
    columns = [c.name for c in REQUEST_COLUMNS]
    blocks = blocks.with_columns(pl.lit(c.default, dtype=c.polars_dtype).alias(c.name) for c in REQUEST_COLUMNS
                                 if c.name not in blocks.columns and not c.required)
    real = requests.select(*columns, pl.lit(REQUEST_KIND).alias(KIND_COLUMN))
    return pl.concat([real, blocks.select(*columns, KIND_COLUMN).cast(real.schema)], how="vertical")


# --- plan and split ---------------------------------------------------------------------


def plan_with_reservations(hosts: pl.DataFrame, requests: pl.DataFrame, blocks: pl.DataFrame,
                           options: PlanOptions, sizing: ReservationSizing | None = None,
                           progress: Callable[[str], None] | None = None,
                           budget: SearchBudget | None = None, current=None,
                           cells: tuple[int, str | None, int | None] = (1, None, None)) -> ReservedPlan:
    """Plan the real requests and the blocks together, then split the blocks out (:func:`split_reservations`);
    `current`: what runs now (re-planning); `cells`: partitions, Dask address and workers (above one
    partition the blocks are dealt to the cells like the requests: shardplan.planner.partition)."""
    combined = with_blocks(requests, blocks)
    k, address, workers = cells
    if k > 1:
        from shardplan.planner.partition import plan_partitioned

        result = plan_partitioned(hosts, combined, options, k, address=address, workers=workers, progress=progress,
                                  budget=budget, current=current)
    else:
        result = plan(hosts, combined, options, progress=progress, budget=budget, current=current)
    return split_reservations(result, combined, sizing, block_windows(sizing, blocks, options))


def split_reservations(result: Plan, requests: pl.DataFrame, sizing: ReservationSizing | None,
                       windows: pl.DataFrame | None = None) -> ReservedPlan:
    """Placed blocks: status reserved, their parts → reservations rows, one per block and window (`windows`:
    :func:`block_windows`; a block without window rows, or on several hosts, holds its envelope for the
    sizing's whole horizon); unplaced blocks keep a reason."""
    is_block = pl.col(KIND_COLUMN) == RESERVATION_KIND
    blocks = requests.filter(is_block) if KIND_COLUMN in requests.columns else empty_blocks()
    block_ids = blocks["request_id"]
    in_blocks = pl.col("request_id").is_in(block_ids.implode())
    parts = (result.shards.filter(in_blocks)
             .group_by("request_id", "host_id", maintain_order=True).agg(pl.col(r).sum() for r in RESOURCES)
             .filter(pl.any_horizontal(pl.col(r) > 0 for r in RESOURCES)))
    window_start = sizing.window_start if sizing is not None else None
    window_end = sizing.window_end if sizing is not None else None
    held = (
        parts.join(blocks.select("request_id", "user_id", "app_type"), on="request_id", how="left")
        .with_columns(pl.len().over("request_id").alias("_hosts"),
                      pl.int_range(pl.len()).over("request_id").alias("_part"))
        .select(
            "request_id", "_hosts",
            pl.when(pl.col("_hosts") > 1).then(pl.format("{}-h{}", "request_id", pl.col("_part") + 1))
            .otherwise(pl.col("request_id")).alias("reservation_id"),
            "host_id", "user_id", "app_type", *RESOURCES,
            pl.lit(window_start, RESERVATIONS_SCHEMA["window_start"]).alias("window_start"),
            pl.lit(window_end, RESERVATIONS_SCHEMA["window_end"]).alias("window_end"))
    )
    if windows is not None and windows.height:
        windowed = held.filter((pl.col("_hosts") == 1)
                               & pl.col("request_id").is_in(windows["request_id"].implode()))
        by_window = (windowed.drop("window_start", "window_end", "vcpu", "ram_gib", "gpu")
                     .join(windows, on="request_id", how="inner"))
        held = pl.concat([held.join(windowed.select("request_id"), on="request_id", how="anti"),
                          by_window.select(held.columns)], how="vertical")
    reservations = (held.select(list(RESERVATIONS_SCHEMA))
                    .cast({name: dtype for name, dtype in RESERVATIONS_SCHEMA.items()})
                    .sort("reservation_id", "window_start"))
    requests_out = result.requests_out.with_columns(
        pl.when(in_blocks & (pl.col("status") == "placed")).then(pl.lit("reserved"))
        .otherwise(pl.col("status")).alias("status"),
        pl.when(in_blocks & (pl.col("status") == "unplaced"))
        .then(pl.format("reservation block not held: {}", pl.col("reason")))
        .otherwise(pl.col("reason")).alias("reason"))
    real = requests_out.filter(~in_blocks)["status"]
    held = int((requests_out.filter(in_blocks)["status"] == "reserved").sum())
    report = dataclasses.replace(
        result.report, placed=int((real == "placed").sum()), unplaced=int((real == "unplaced").sum()), reserved=held,
        reservation_blocks={"held": held, "not_held": int(blocks.height - held)},
        reservations=reservation_summary(sizing, blocks, requests_out, reservations))
    return ReservedPlan(result, requests, result.shards.filter(~in_blocks), requests_out, reservations, report)


def reservation_summary(sizing: ReservationSizing | None, blocks: pl.DataFrame, requests_out: pl.DataFrame,
                        reservations: pl.DataFrame) -> dict[str, object]:
    """plan.json's `reservations` entry: the sizing result and what the placement held (`reserved`: what the
    hosts hold at their peaks; `reserved_unit_hours`: Σ over blocks and windows of vcpu and ram_gib × hours)."""
    from shardplan.planner.report.export import reserved_peak

    held = requests_out.filter(pl.col("status") == "reserved").height
    peak = reserved_peak(reservations)
    return {
        "sizing": None if sizing is None else sizing.result.to_dict(),
        "note": None if sizing is None else sizing.note,
        "window_start": None if sizing is None or sizing.window_start is None else sizing.window_start.isoformat(),
        "window_end": None if sizing is None or sizing.window_end is None else sizing.window_end.isoformat(),
        "groups": 0 if sizing is None else sizing.groups.height,
        "blocks": blocks.height,
        "blocks_reserved": held,
        "blocks_unplaced": blocks.height - held,
        "window_hours": window_hours(sizing),
        "windows": 0 if sizing is None or "window" not in sizing.groups.columns else sizing.groups["window"].n_unique(),
        "reserved": {r: (float(peak[r].sum()) if r == "net_gbps" else int(peak[r].sum())) for r in RESOURCES},
        "reserved_unit_hours": reserved_hours(reservations),
        "asked": {r: int(blocks[r].sum()) for r in ("vcpu", "ram_gib", "gpu")},
    }


def window_hours(sizing: ReservationSizing | None) -> float | None:
    """Hours of the sizing's first window (None without windows)."""
    if sizing is None or "window_start" not in sizing.groups.columns or sizing.groups.height == 0:
        return None
    first = sizing.groups.sort("window").row(0, named=True)
    if first["window_start"] is None:
        return None
    return (first["window_end"] - first["window_start"]).total_seconds() / 3600


def reserved_hours(reservations: pl.DataFrame) -> dict[str, float]:
    """Σ amount × window hours per sized resource (rows without a window are not counted)."""
    hours = (pl.col("window_end") - pl.col("window_start")).dt.total_seconds() / 3600
    return {r: round(float(reservations.select((pl.col(r) * hours).sum()).item() or 0.0), 3) for r in SIZED_RESOURCES}


def group_outcome(sizing: ReservationSizing, blocks: pl.DataFrame, requests_out: pl.DataFrame) -> pl.DataFrame:
    """Per group: P50/P90 peaks and reserved amounts (the largest over its windows), blocks asked and blocks
    held (for the nightly summary)."""
    held = (blocks.join(requests_out.select("request_id", "status"), on="request_id", how="left")
            .group_by("user_id", "app_type")
            .agg(pl.len().alias("blocks"), (pl.col("status") == "reserved").sum().alias("held"),
                 pl.col("vcpu").filter(pl.col("status") == "reserved").sum().alias("held_vcpu"),
                 pl.col("ram_gib").filter(pl.col("status") == "reserved").sum().alias("held_ram_gib")))
    columns = ("peak_p50_vcpu", "peak_p90_vcpu", "reserved_vcpu", "peak_p50_ram_gib", "peak_p90_ram_gib",
               "reserved_ram_gib")
    return (sizing.groups.group_by("user_id", "app_type").agg(pl.col(c).max() for c in columns)
            .join(held, on=["user_id", "app_type"], how="left")
            .with_columns(pl.col("blocks", "held", "held_vcpu", "held_ram_gib").fill_null(0))
            .sort("reserved_vcpu", "user_id", "app_type", descending=[True, False, False]))
