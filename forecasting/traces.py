"""Loaders that turn the public traces in ../shared/datasets into the `history` table.

Each loader reads files from a folder the caller names (never copied into the
repo) and returns the history columns of DESIGN.md: ts (UTC), vm_id, user_id,
app_type, vcpu, ram_gib, cpu_util. No trace carries owner or application labels,
so every loader says below how it maps VMs to users and application types.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl

KIB_PER_GIB = 1024 * 1024
# Azure V1 publishes relative time only; this anchor (a Monday) makes weekdays stable.
AZURE_TRACE_START = datetime(2016, 11, 14, tzinfo=timezone.utc)

HISTORY_ORDER = ("ts", "vm_id", "user_id", "app_type", "vcpu", "ram_gib", "ram_alloc_gib", "cpu_util")


def bitbrains_app_type() -> pl.Expr:
    """Application type of a Bitbrains VM from its size (the trace has no labels).

    ≥ 8 GiB per core → db (memory-heavy); ≥ 8 cores → analytics; 1 core → web;
    otherwise batch (the trace's financial reporting runs).
    """
    gib_per_core = pl.col("ram_alloc_gib") / pl.col("cores").clip(1)
    return (
        pl.when(gib_per_core >= 8).then(pl.lit("db"))
        .when(pl.col("cores") >= 8).then(pl.lit("analytics"))
        .when(pl.col("cores") <= 1).then(pl.lit("web"))
        .otherwise(pl.lit("batch"))
    )


KBPS_TO_GBPS = 8 * 1024 / 1e9
"""KB/s (1024 bytes) to Gbit/s."""


def load_bitbrains(folder: str | Path, resolution: str = "hourly") -> pl.DataFrame:
    """Bitbrains GWA-T-12 Rnd as history: `resolution` "hourly" (500 VMs, ~91 days) or "5min" (60 VMs, August).

    Users: every VM is its own user ``rnd-<vm_id>`` (Bitbrains hosts one customer's
    application per VM and publishes no customer id), so a (user_id, app_type)
    series is one VM. App type: :func:`bitbrains_app_type` on the VM's modal size.
    vcpu = provisioned cores, cpu_util = CPU MHz used / MHz provisioned (clipped to 1;
    a few hours exceed it by turbo), ram_gib = memory used (the hypervisor's measure), ram_alloc_gib =
    memory provisioned (what shardplan.forecasting.untouched reads the untouched share from). Hourly: net_gbps =
    network received + transmitted (the trace's KB/s, 1 KB = 1024 bytes). Disk throughput is not storage capacity,
    so storage_gib stays absent (not forecast); so does gpu.
    """
    folder = Path(folder)
    sizes = pl.read_csv(folder / "vms.csv").select(
        "vm_id", pl.col("cpu_cores").alias("cores"), (pl.col("mem_capacity_kb") / KIB_PER_GIB).alias("ram_alloc_gib"),
    )
    labels = sizes.select(
        "vm_id", pl.format("rnd-{}", pl.col("vm_id").cast(pl.Utf8).str.zfill(3)).alias("user_id"),
        bitbrains_app_type().alias("app_type"), "ram_alloc_gib",
    )
    if resolution == "hourly":
        raw = pl.read_csv(folder / "usage_hourly.csv.gz")
        network = {"net_rx_kbps_mean", "net_tx_kbps_mean"} <= set(raw.columns)
        usage = raw.select(
            "vm_id", pl.col("hour_start").alias("epoch_s"), "cpu_cores", "cpu_capacity_mhz",
            pl.col("cpu_usage_mhz_mean").alias("cpu_usage_mhz"), pl.col("mem_usage_kb_mean").alias("mem_usage_kb"),
            *([(pl.col("net_rx_kbps_mean") + pl.col("net_tx_kbps_mean")).alias("net_kbps")] if network else []),
        )
    elif resolution == "5min":
        usage = pl.read_csv(folder / "usage_5min_2013-08_60vms.csv.gz").select(
            "vm_id", pl.col("timestamp").alias("epoch_s"), "cpu_cores", "cpu_capacity_mhz", "cpu_usage_mhz",
            "mem_usage_kb",
        )
    else:
        raise ValueError(f"unknown Bitbrains resolution {resolution!r} (expected hourly or 5min)")
    history = usage.filter(pl.col("cpu_capacity_mhz") > 0).join(labels, on="vm_id").select(
        pl.from_epoch("epoch_s", time_unit="s").dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias("ts"),
        pl.format("rnd-{}", pl.col("vm_id")).alias("vm_id"),
        "user_id", "app_type",
        pl.col("cpu_cores").cast(pl.Float64).alias("vcpu"),
        (pl.col("mem_usage_kb") / KIB_PER_GIB).alias("ram_gib"),
        "ram_alloc_gib",  # the VM's modal provisioned memory (vms.csv)
        (pl.col("cpu_usage_mhz") / pl.col("cpu_capacity_mhz")).clip(0.0, 1.0).alias("cpu_util"),
        *([(pl.col("net_kbps") * KBPS_TO_GBPS).alias("net_gbps")] if "net_kbps" in usage.columns else []),
    )
    return history.sort("user_id", "ts")


def azure_sizes(arrivals_folder: str | Path | None, vm_ids: pl.Series, seed: int = 0) -> pl.DataFrame:
    """A size (vcpu, ram_gib) per Azure CPU-sample VM, which the sample does not publish.

    With the arrivals folder, sizes are drawn (seeded, per VM) from the V1 flavour mix
    weighted by request counts; without it every VM gets the commonest flavour, 1 vCPU / 1.75 GiB.
    """
    vms = pl.DataFrame({"vm_id": vm_ids.unique().sort()})
    if arrivals_folder is None:
        return vms.with_columns(pl.lit(1.0).alias("vcpu"), pl.lit(1.75).alias("ram_gib"))
    mix = (
        pl.read_csv(Path(arrivals_folder) / "requests_grouped.csv.gz", columns=["vcpus", "mem_gb", "count"])
        .group_by("vcpus", "mem_gb").agg(pl.col("count").sum())
        .sort("vcpus", "mem_gb")
        .with_columns((pl.col("count").cum_sum() / pl.col("count").sum()).alias("upper"))
    )
    draws = vms.with_columns(
        (pl.col("vm_id").cast(pl.Utf8).hash(seed) % 1_000_000 / 1_000_000).alias("u")
    ).sort("u")
    sized = draws.join_asof(mix.select("upper", "vcpus", "mem_gb").sort("upper"), left_on="u", right_on="upper",
                            strategy="forward")
    return sized.select(
        "vm_id", pl.col("vcpus").fill_null(mix["vcpus"][-1]).cast(pl.Float64).alias("vcpu"),
        pl.col("mem_gb").fill_null(mix["mem_gb"][-1]).cast(pl.Float64).alias("ram_gib"),
    )


def azure_app_type() -> pl.Expr:
    """App type of an Azure CPU-sample VM from the packager's periodicity label (the sample has no category).

    24 h → web (interactive, daily cycle); 8 h → batch; 1 h → cache; unlabelled
    (random100) → general.
    """
    label = pl.col("periodicity_h_label").cast(pl.Utf8)
    return (
        pl.when(label.str.contains("24")).then(pl.lit("web"))
        .when(label == "8").then(pl.lit("batch"))
        .when(label == "1").then(pl.lit("cache"))
        .otherwise(pl.lit("general"))
    )


def load_azure_cpu(folder: str | Path, arrivals_folder: str | Path | None = None,
                   start: datetime = AZURE_TRACE_START, seed: int = 0) -> pl.DataFrame:
    """Azure V1 CPU sample (177 VMs, 5-minute average CPU %, ~28 days) as history.

    Users: every VM is its own user ``az-<vm_id>`` (the sample drops subscription
    ids). App type: :func:`azure_app_type`. Sizes: :func:`azure_sizes`. ram_gib is
    the allocated memory (the sample measures no memory). ts = `start` + step × 5 min
    (the trace's clock is relative).
    """
    folder = Path(folder)
    vms = pl.read_csv(folder / "vms.csv", schema_overrides={"periodicity_h_label": pl.Utf8}).unique("vm_id")
    usage = pl.read_csv(folder / "cpu_5min.csv.gz", columns=["vm_id", "step", "avg_cpu_pct"])
    sizes = azure_sizes(arrivals_folder, vms["vm_id"], seed)
    labels = vms.select("vm_id", azure_app_type().alias("app_type")).join(sizes, on="vm_id")
    history = usage.join(labels, on="vm_id").select(
        (pl.lit(start) + pl.duration(seconds=pl.col("step") * 300)).dt.cast_time_unit("us").alias("ts"),
        pl.format("az-{}", pl.col("vm_id")).alias("vm_id"),
        pl.format("az-{}", pl.col("vm_id")).alias("user_id"),
        "app_type", "vcpu", "ram_gib",
        (pl.col("avg_cpu_pct") / 100).clip(0.0, 1.0).alias("cpu_util"),
    )
    return history.sort("user_id", "ts")


def flavour_app_type() -> pl.Expr:
    """App type of an Azure V1 request from its flavour: ≥ 7 GB per vCPU → db; 8+ vCPU → analytics;
    1 vCPU → web; otherwise batch."""
    return (
        pl.when(pl.col("mem_gb") / pl.col("vcpus") >= 7).then(pl.lit("db"))
        .when(pl.col("vcpus") >= 8).then(pl.lit("analytics"))
        .when(pl.col("vcpus") <= 1).then(pl.lit("web"))
        .otherwise(pl.lit("batch"))
    )


def load_azure_arrivals(folder: str | Path, mode: str = "arriving", users: int = 40,
                        start: datetime = AZURE_TRACE_START) -> pl.DataFrame:
    """Azure V1 VM arrivals (30 days, 5-minute bins) as hourly history.

    Each row of the grouped file (identical VMs of one tenant batch) becomes one
    "VM" ``b<batch>-<flavour>-<bin>`` whose vcpu and ram_gib are the group's totals.
    mode "arriving": one row at its arrival hour, so demand = capacity requested per
    hour (all 30 days). mode "running": one row per hour it runs, from its arrival
    for the middle of its lifetime bin (censored ones to the end); only the last
    ~9.2 days carry lifetimes, and VMs that arrived earlier are unknown, so that
    series starts empty. Hours without requests get a zero row (vm_id ``idle-…``), since there
    absence means zero demand.
    Users: batch ids do not persist tenants across bins, so batch b is assigned
    to user ``az-t<b mod users>`` (an arbitrary, documented split of the fleet).
    App type: :func:`flavour_app_type`.
    """
    folder = Path(folder)
    requests = pl.read_csv(folder / "requests_grouped.csv.gz",
                           schema_overrides={"duration_bin": pl.Int64, "duration_censored": pl.Int64})
    if mode == "running":
        bins = pl.read_csv(folder / "duration_bins.csv")
        horizon_s = requests["bin_end_s"].max()
        requests = requests.filter(pl.col("duration_known") == 1).join(bins, on="duration_bin").with_columns(
            pl.when(pl.col("duration_censored") == 1).then(horizon_s - pl.col("bin_end_s"))
            .otherwise((pl.col("duration_lo_s") + pl.col("duration_hi_s")) / 2).alias("lifetime_s")
        )
    elif mode == "arriving":
        requests = requests.with_columns(pl.lit(1.0).alias("lifetime_s"), pl.lit(None, pl.Int64).alias("duration_bin"))
    else:
        raise ValueError(f"unknown arrivals mode {mode!r} (expected arriving or running)")
    arrival_hour = ((pl.col("bin_end_s") - 1) // 3600).cast(pl.Int64)
    hours_alive = (pl.col("lifetime_s") / 3600).ceil().clip(1).cast(pl.Int64)
    groups = requests.select(
        pl.format("b{}-{}-{}", "batch_id", "flavor", pl.col("duration_bin").fill_null(-1)).alias("vm_id"),
        pl.format("az-t{}", (pl.col("batch_id") % users).cast(pl.Utf8).str.zfill(2)).alias("user_id"),
        flavour_app_type().alias("app_type"),
        (pl.col("vcpus") * pl.col("count")).cast(pl.Float64).alias("vcpu"),
        (pl.col("mem_gb") * pl.col("count")).cast(pl.Float64).alias("ram_gib"),
        pl.int_ranges(arrival_hour, arrival_hour + hours_alive).alias("hour"),
    )
    last_hour = int(requests["bin_end_s"].max() - 1) // 3600
    rows = groups.explode("hour").filter(pl.col("hour") <= last_hour).drop_nulls("hour")
    # an hour without requests is zero demand here, not a gap: one zero row per series and hour says so
    first_hour = int(rows["hour"].min())
    idle = (
        rows.select("user_id", "app_type").unique()
        .join(pl.DataFrame({"hour": pl.int_range(first_hour, last_hour + 1, eager=True)}), how="cross")
        .with_columns(pl.format("idle-{}-{}", "user_id", "app_type").alias("vm_id"),
                      pl.lit(0.0).alias("vcpu"), pl.lit(0.0).alias("ram_gib"))
    )
    rows = pl.concat([rows, idle.select(rows.columns)])
    return rows.select(
        (pl.lit(start) + pl.duration(hours=pl.col("hour"))).dt.cast_time_unit("us").alias("ts"),
        "vm_id", "user_id", "app_type", "vcpu", "ram_gib", pl.lit(None, pl.Float64).alias("cpu_util"),
    ).sort("user_id", "ts")
