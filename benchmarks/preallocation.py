"""Pre-allocation replay: reserve for the next window from the forecast, then replay the demand that came.

On the public traces (Bitbrains Rnd hourly, Azure V1 CPU sample; shardplan.forecasting.traces loaders),
at rolling daily origins each method reserves per (user_id, app_type) group and resource
(vcpu = cores used, ram_gib) for the next 24 hours, seeing only the hours before the origin:

- reactive: no reservation (hit rate 0, slack 0: every demand-hour is placed on arrival);
- static headroom: last week's peak × 1.2;
- forecast + sizing: the forecaster's 24-hour forecast → P10/P50/P90 peak scenarios →
  shardplan.models.reservations with the nightly's ReservationOptions (shardplan.planner.reservations.size_reservations,
  no capacity limit), for each forecaster compared;
- forecast + sizing, 4-h slots: the same, one reservation per 4-hour window (the nightly's default,
  ReservationOptions.window_hours);
- oracle peak: the window's actual peak (perfect foresight), the least slack any flat
  reservation with 100 % hit rate can have.

Figures, pooled over groups, hours and origins: hit rate = Σ min(demand, reserved) / Σ demand
(demand-hours served from a reservation); slack = Σ (reserved − served) / Σ reserved (reserved
capacity-hours left idle). Target (issue 13): hit ≥ 95 % with slack ≤ 25 % on Azure and ≤ 35 % on Bitbrains, beating static
headroom on both. Views: per VM (the loaders' groups: one VM per user), with Prophet on a seeded
sample of VMs (all methods are reported on the same sample), and pooled per application type
(every VM of a type in one group). A group's hours without samples are unknown and skipped; a
reserved group with no sample in the whole window counts as idle for all of it.

The views marked "through admit" take the product's path instead of the arithmetic: each method's
reservation becomes the nightly's blocks (reservation_blocks), planned by the engine on a fleet
roomy enough that capacity never decides (replay_fleet), and each hour every group's demand of that
hour arrives as one request (whole vcpu and GiB, leaving an hour later) admitted by
shardplan.planner.admit: served = what the admissions took from the blocks, reserved = what the
placed blocks held in each window (whole units: block amounts are rounded up).

    python benchmarks/preallocation.py [--origins 10] [--prophet-sample 24] [--admit-sample 24]
                                       [--traces bitbrains,azure]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, require_shared_dir, results_path, write_json_atomic  # noqa: E402
from shardplan.forecasting.backtest import BacktestSettings, rolling_origins  # noqa: E402
from shardplan.forecasting.forecasters import Forecaster, get_forecaster  # noqa: E402
from shardplan.forecasting.history import SERIES_KEYS, demand_long, demand_wide, hourly_demand  # noqa: E402
from shardplan.forecasting.traces import load_azure_cpu, load_bitbrains  # noqa: E402
from shardplan.models.problem import PlanStatus, SolveResult  # noqa: E402
from shardplan.planner.admit import Ledger, admit  # noqa: E402
from shardplan.planner.nightly import NIGHTLY_FORECASTER  # noqa: E402
from shardplan.planner.reservations import (  # noqa: E402
    SIZED_RESOURCES,
    ReservationOptions,
    ReservationSizing,
    plan_with_reservations,
    reservation_blocks,
    size_reservations,
)
from shardplan.planner.validate.inputs import check_hosts, validate_table  # noqa: E402
from shardplan.planner.validate.options import PlanOptions  # noqa: E402
from shardplan.schema import HOST_COLUMNS, REQUEST_COLUMNS  # noqa: E402

HORIZON_HOURS = 24
TRAIN_DAYS = 14
STATIC_LOOKBACK_HOURS = 168
STATIC_HEADROOM = 0.2
SLOT_HOURS = 4
TARGET_HIT = 0.95
TARGET_SLACK = {"azure": 0.25, "bitbrains": 0.35}
"""Slack targets per trace (issue 13): perfect foresight with 4-hour windows leaves about 23 % per VM."""
SAMPLE_SEED = 11
KEYS = list(SERIES_KEYS)
TIE = 0.005  # hit rates within half a point of static headroom's count as level with it
STATIC = "static headroom (last week's peak + 20%)"
REACTIVE = "reactive (no reservation)"


def load_trace(name: str, shared: Path) -> pl.DataFrame:
    """Hourly demand (user_id, app_type, ts, vcpu, ram_gib) of one trace."""
    usage = shared / "datasets" / "vm-usage"
    if name == "bitbrains":
        return hourly_demand(load_bitbrains(usage / "bitbrains-rnd", "hourly"))
    if name == "azure":
        return hourly_demand(load_azure_cpu(usage / "azure-v1-cpu-sample"))
    raise ValueError(f"unknown trace {name!r} (expected bitbrains or azure)")


def pooled(demand: pl.DataFrame) -> pl.DataFrame:
    """Every VM of an application type in one group (user_id 'pool')."""
    return (demand.group_by("app_type", "ts").agg(pl.col(r).sum() for r in SIZED_RESOURCES)
            .select(pl.lit("pool").alias("user_id"), "app_type", "ts", *SIZED_RESOURCES).sort(*KEYS, "ts"))


def sample_groups(demand: pl.DataFrame, size: int) -> pl.DataFrame:
    """A seeded sample of `size` groups (all of them when there are fewer)."""
    groups = demand.select(KEYS).unique().sort(KEYS)
    chosen = groups.sample(min(size, groups.height), seed=SAMPLE_SEED)
    return demand.join(chosen, on=KEYS, how="semi")


# --- reservations per method (columns user_id, app_type, slot, vcpu, ram_gib) ------------------


def forecast_reservations(train: pl.DataFrame, forecaster: Forecaster,
                          variants: dict[str, tuple[ReservationOptions, int]]) -> dict[str, pl.DataFrame]:
    """Forecast the next window from `train` alone, then size a reservation per group and slot for each
    variant (label → sizing options and slot length)."""
    forecast = demand_wide(forecaster.fit_predict(demand_long(train), HORIZON_HOURS)
                           .with_columns(pl.lit(forecaster.name).alias("model")))
    origin = train["ts"].max() + timedelta(hours=1)
    reserved = {}
    for label, (options, slot_hours) in variants.items():
        # slots are independent groups of the sizing (no capacity limit couples them)
        slotted = forecast.with_columns(pl.format("{}@{}", "app_type", slot_of(origin, slot_hours)).alias("app_type"))
        sizing = size_reservations(slotted, None, options.replace(horizon_hours=slot_hours, window_hours=slot_hours))
        reserved[label] = sizing.groups.select(
            "user_id", pl.col("app_type").str.split("@").list.get(0).alias("app_type"),
            pl.col("app_type").str.split("@").list.get(1).cast(pl.Int64).alias("slot"),
            pl.col("reserved_vcpu").alias("vcpu"), pl.col("reserved_ram_gib").alias("ram_gib"))
    return reserved


def sizing_variants(options: ReservationOptions) -> dict[str, tuple[ReservationOptions, int]]:
    """The nightly's prices (critical fractile 0.9) over 24 h and over 4-h slots, and fractile 0.5 over 24 h."""
    fractile = 1 - options.reserve_price_per_unit_hour / options.shortfall_penalty_per_unit_hour
    median = options.replace(shortfall_penalty_per_unit_hour=2 * options.reserve_price_per_unit_hour)
    return {f"24 h, fractile {fractile:.2f}": (options, HORIZON_HOURS),
            f"{SLOT_HOURS}-h slots, fractile {fractile:.2f}": (options, SLOT_HOURS),
            "24 h, fractile 0.50": (median, HORIZON_HOURS)}


def no_reservations() -> pl.DataFrame:
    """Reactive placement reserves nothing."""
    return pl.DataFrame(schema={**{k: pl.Utf8 for k in KEYS}, "slot": pl.Int64,
                                **{r: pl.Float64 for r in SIZED_RESOURCES}})


def slot_of(origin, slot_hours: int) -> pl.Expr:
    """Index of the slot of the window an hour `ts` falls in."""
    return ((pl.col("ts") - pl.lit(origin)).dt.total_hours() // slot_hours).cast(pl.Int64).alias("slot")


def static_reservations(train: pl.DataFrame) -> pl.DataFrame:
    """Last week's peak per group × (1 + headroom), one reservation for the window."""
    since = train["ts"].max() - timedelta(hours=STATIC_LOOKBACK_HOURS - 1)
    return (train.filter(pl.col("ts") >= since).group_by(KEYS)
            .agg((pl.col(r).max() * (1 + STATIC_HEADROOM)).alias(r) for r in SIZED_RESOURCES)
            .with_columns(pl.lit(0, pl.Int64).alias("slot")))


def oracle_reservations(window: pl.DataFrame, origin, slot_hours: int) -> pl.DataFrame:
    """The window's actual peak per group (and slot): perfect foresight."""
    return (window.with_columns(slot_of(origin, slot_hours))
            .group_by(*KEYS, "slot").agg(pl.col(r).max() for r in SIZED_RESOURCES))


# --- replay -----------------------------------------------------------------------------------


def replay(reserved: pl.DataFrame, window: pl.DataFrame, origin, slot_hours: int) -> dict[str, dict[str, float]]:
    """Σ demand, Σ served from the reservation and Σ reserved capacity-hours per resource over the window."""
    hours = pl.DataFrame({"ts": [origin + timedelta(hours=h) for h in range(HORIZON_HOURS)]},
                         schema={"ts": window.schema["ts"]}).with_columns(slot_of(origin, slot_hours))
    groups = pl.concat([reserved.select(KEYS), window.select(KEYS)]).unique()
    seen = window.select(KEYS).unique().with_columns(pl.lit(True).alias("seen"))
    grid = (groups.join(hours, how="cross")
            .join(window.select(*KEYS, "ts", *(pl.col(r).alias(f"demand_{r}") for r in SIZED_RESOURCES)),
                  on=[*KEYS, "ts"], how="left")
            .join(seen, on=KEYS, how="left")
            .join(reserved.select(*KEYS, "slot", *(pl.col(r).alias(f"reserved_{r}") for r in SIZED_RESOURCES)),
                  on=[*KEYS, "slot"], how="left")
            # an unsampled hour of a group seen in the window is unknown: skip it; a group never seen idles
            .filter(pl.col("seen").is_null() | pl.col(f"demand_{SIZED_RESOURCES[0]}").is_not_null())
            .with_columns(pl.col("^demand_.*$", "^reserved_.*$").fill_null(0.0)))
    sums = grid.select(
        *(pl.col(f"demand_{r}").sum().alias(f"{r}.demand") for r in SIZED_RESOURCES),
        *(pl.min_horizontal(f"demand_{r}", f"reserved_{r}").sum().alias(f"{r}.served") for r in SIZED_RESOURCES),
        *(pl.col(f"reserved_{r}").sum().alias(f"{r}.reserved") for r in SIZED_RESOURCES),
    ).row(0, named=True)
    return {r: {part: float(sums[f"{r}.{part}"]) for part in ("demand", "served", "reserved")}
            for r in SIZED_RESOURCES}


# --- the same replay through the product's path: a plan holding blocks, requests admitted hour by hour ----------


ADMIT_HOST_VCPU = 128
ADMIT_HOST_RAM_GIB = 1024
ADMIT_MAX_SHARDS = 64
ADMIT_PLAN = PlanOptions(time_limit_s=3.0, lp_bound=False, workers=1, remote_memory_pricing="flat")
"""The plan that holds the blocks: the engine as the nightly runs it, with a short limit (blocks only). The
replay's requests are latency-tolerant and remote memory is priced flat, so a group's demand of an hour may
spread over its blocks in any mix of vcpu and RAM: the replay measures the reservations, not the shapes."""


def replay_fleet(reserved: pl.DataFrame, window: pl.DataFrame) -> pl.DataFrame:
    """Enough identical hosts (128 vcpu, 1 TiB, 8 per rack) for every block and every hour's demand beside
    them, so that capacity never decides a hit or a miss: the replay measures the reservations."""
    peak_vcpu = float(window.group_by("ts").agg(pl.col("vcpu").sum())["vcpu"].max() or 0.0)
    peak_ram = float(window.group_by("ts").agg(pl.col("ram_gib").sum())["ram_gib"].max() or 0.0)
    held = reserved.group_by(KEYS).agg(pl.col("vcpu").max(), pl.col("ram_gib").max())
    need = max(2.0 * (float(held["vcpu"].sum()) + peak_vcpu) / ADMIT_HOST_VCPU,
               2.0 * (float(held["ram_gib"].sum()) + peak_ram) / ADMIT_HOST_RAM_GIB,
               reserved.height / 4 + 1)
    n = int(math.ceil(need)) + 2
    rows = [{"host_id": f"h{i:04d}", "rack": f"r{i // 8:03d}", "zone": "z1", "host_class": "general",
             "vcpu": ADMIT_HOST_VCPU, "ram_gib": ADMIT_HOST_RAM_GIB, "storage_gib": 1000, "storage_type": "ssd",
             "net_gbps": 100.0, "gpu": 0, "gpu_model": None, "cost_per_hour": 7.59} for i in range(n)]
    frame = pl.DataFrame(rows, schema_overrides={"gpu_model": pl.Utf8})
    return check_hosts(validate_table(frame, HOST_COLUMNS, "replay hosts", key="host_id"), "replay hosts")


def replay_sizing(reserved: pl.DataFrame, origin, slot_hours: int) -> ReservationSizing:
    """A method's reservation (user_id, app_type, slot, vcpu, ram_gib) as the sizing the nightly hands on."""
    start = pl.lit(origin) + pl.duration(hours=pl.col("slot") * slot_hours)
    groups = reserved.select(
        *KEYS, pl.lit(False).alias("uses_gpu"), pl.col("slot").alias("window"),
        start.dt.cast_time_unit("us").alias("window_start"),
        (start + pl.duration(hours=slot_hours)).dt.cast_time_unit("us").alias("window_end"),
        pl.col("vcpu").alias("reserved_vcpu"), pl.col("ram_gib").alias("reserved_ram_gib"))
    return ReservationSizing(SolveResult(PlanStatus.OPTIMAL, 0.0, 0.0, 0.0, 0.0, "replay"), groups, origin,
                             origin + timedelta(hours=HORIZON_HOURS))


def hour_arrivals(window: pl.DataFrame, ts, hour: int) -> pl.DataFrame:
    """One request per group sampled at `ts`: its demand of that hour in whole vcpu and GiB (at least the
    local RAM invariant 4 asks per vcpu), leaving an hour later."""
    rows = window.filter(pl.col("ts") == ts).select(
        *KEYS, (pl.col("vcpu") - 1e-9).ceil().clip(0).cast(pl.Int64).alias("vcpu"),
        (pl.col("ram_gib") - 1e-9).ceil().clip(0).cast(pl.Int64).alias("ram_gib"))
    rows = rows.with_columns(pl.max_horizontal("ram_gib", (pl.col("vcpu") * ADMIT_PLAN.min_local_ram_gib_per_vcpu
                                                           - 1e-9).ceil().cast(pl.Int64)).alias("ram_gib"))
    rows = rows.filter((pl.col("vcpu") > 0) | (pl.col("ram_gib") > 0))
    frame = rows.select(
        pl.format("{}|{}|{}", "user_id", "app_type", pl.lit(hour)).alias("request_id"), *KEYS, "vcpu", "ram_gib",
        pl.lit(0).alias("storage_gib"), pl.lit(0.0).alias("net_gbps"), pl.lit(0).alias("gpu"),
        pl.lit(ADMIT_MAX_SHARDS).alias("max_shards"), pl.lit("tolerant").alias("latency_class"))
    if frame.height == 0:
        return frame
    return validate_table(frame, REQUEST_COLUMNS, "replay arrivals", key="request_id")


def admit_replay(reserved: pl.DataFrame, window: pl.DataFrame, origin, slot_hours: int) -> dict[str, dict[str, float]]:
    """Plan the method's blocks (engine), then admit each hour's demand through shardplan.planner.admit; Σ
    demand, Σ served from the blocks and Σ reserved capacity-hours per resource (what the placed blocks
    held in each window), in whole vcpu and GiB."""
    hosts = replay_fleet(reserved, window)
    sizing = replay_sizing(reserved, origin, slot_hours)
    blocks = reservation_blocks(sizing, hosts, None, ADMIT_PLAN, ReservationOptions())
    planned = plan_with_reservations(hosts, empty_requests(), blocks, ADMIT_PLAN, sizing)
    rows = planned.reservations
    hours = (pl.col("window_end") - pl.col("window_start")).dt.total_seconds() / 3600
    totals = {r: {"demand": 0.0, "served": 0.0,
                  "reserved": float(rows.select((pl.col(r) * hours).sum()).item() or 0.0),
                  "blocks_not_held": planned.plan_json["reservations"]["blocks_unplaced"]}
              for r in SIZED_RESOURCES}
    ledger = Ledger(hosts, planned.requests, planned.shards, planned.requests_out, rows, planned.plan_json)
    for hour in range(HORIZON_HOURS):
        ts = origin + timedelta(hours=hour)
        arrivals = hour_arrivals(window, ts, hour)
        if arrivals.height == 0:
            continue
        ledger, summary = admit(ledger, arrivals, ts, ends=[ts + timedelta(hours=1)] * arrivals.height,
                                options=ADMIT_PLAN)
        for r in SIZED_RESOURCES:
            totals[r]["demand"] += summary.asked[r]
            totals[r]["served"] += summary.from_reservations[r]
        totals.setdefault("outcomes", {})
        for outcome, count in summary.outcomes.items():
            totals["outcomes"][outcome] = totals["outcomes"].get(outcome, 0) + count
    return totals


def empty_requests() -> pl.DataFrame:
    return pl.DataFrame(schema={c.name: c.polars_dtype for c in REQUEST_COLUMNS})


def add_up(total: dict, method: str, sums: dict[str, dict[str, float]]) -> None:
    for resource, parts in sums.items():
        bucket = total.setdefault(method, {}).setdefault(resource, {"demand": 0.0, "served": 0.0, "reserved": 0.0})
        for part, value in parts.items():
            bucket[part] = bucket.get(part, 0) + value


def rates(parts: dict[str, float]) -> dict[str, float | None]:
    """hit rate, slack and reserved capacity-hours per demand-hour."""
    demand, served, reserved = parts["demand"], parts["served"], parts["reserved"]
    return {"hit_rate": served / demand if demand else None,
            "slack": (reserved - served) / reserved if reserved else 0.0,
            "reserved_per_demand": reserved / demand if demand else None}


# --- one view of one trace ---------------------------------------------------------------------


def run_view(demand: pl.DataFrame, forecasters: list[str], origins: list, options: ReservationOptions,
             timing: dict[str, float], through_admit: bool = False) -> dict[str, dict]:
    """Every method on every origin of one set of groups; returns sums per method and resource. Through admit:
    each method's reservation is planned as blocks and the hours' demand admitted into the plan
    (:func:`admit_replay`; the fractile-0.5 variant and the reactive row are left to the arithmetic views)."""
    total: dict[str, dict] = {}
    models = {name: get_forecaster(name) for name in forecasters}

    def count(method: str, reserved: pl.DataFrame, window: pl.DataFrame, origin, slot_hours: int) -> None:
        if through_admit:
            started = time.perf_counter()
            sums = admit_replay(reserved, window, origin, slot_hours)
            outcomes = sums.pop("outcomes", {})
            add_up(total, method, sums)
            for outcome, n in outcomes.items():
                bucket = total[method].setdefault("outcomes", {})
                bucket[outcome] = bucket.get(outcome, 0) + n
            timing["admit path"] = timing.get("admit path", 0.0) + time.perf_counter() - started
        else:
            add_up(total, method, replay(reserved, window, origin, slot_hours))

    try:
        for origin in origins:
            train = demand.filter(pl.col("ts") >= origin - timedelta(days=TRAIN_DAYS), pl.col("ts") < origin)
            window = demand.filter(pl.col("ts") >= origin, pl.col("ts") < origin + timedelta(hours=HORIZON_HOURS))
            if not through_admit:
                add_up(total, REACTIVE, replay(no_reservations(), window, origin, HORIZON_HOURS))
            count(STATIC, static_reservations(train), window, origin, HORIZON_HOURS)
            variants = sizing_variants(options)
            if through_admit:
                variants = {k: v for k, v in variants.items() if "0.50" not in k}
            for name, model in models.items():
                started = time.perf_counter()
                sized = forecast_reservations(train, model, variants)
                timing[name] = timing.get(name, 0.0) + time.perf_counter() - started
                for label, reserved in sized.items():
                    count(f"{name}: {label}", reserved, window, origin, variants[label][1])
            count("oracle peak, 24 h (perfect foresight)", oracle_reservations(window, origin, HORIZON_HOURS),
                  window, origin, HORIZON_HOURS)
            count(f"oracle peak, {SLOT_HOURS}-h slots (perfect foresight)",
                  oracle_reservations(window, origin, SLOT_HOURS), window, origin, SLOT_HOURS)
    finally:
        for model in models.values():
            model.close()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="bitbrains,azure")
    parser.add_argument("--origins", type=int, default=10, help="daily origins per trace, spread over the trace")
    parser.add_argument("--forecasters", default=NIGHTLY_FORECASTER,
                        help="forecasters run on every VM")
    parser.add_argument("--prophet-sample", type=int, default=24,
                        help="VMs per trace on which Prophet runs beside the others (0: skip Prophet per VM)")
    parser.add_argument("--admit-sample", type=int, default=24,
                        help="VMs per trace replayed through shardplan admit, beside the pooled app types "
                             "(0: no admit-path views)")
    args = parser.parse_args(argv)
    shared = require_shared_dir()
    options = ReservationOptions()
    fast = [n.strip() for n in args.forecasters.split(",") if n.strip()]
    report: dict[str, object] = {
        "horizon_hours": HORIZON_HOURS, "train_days": TRAIN_DAYS, "slot_hours": SLOT_HOURS,
        "static_headroom": STATIC_HEADROOM, "static_lookback_hours": STATIC_LOOKBACK_HOURS,
        "targets": {"hit_rate_min": TARGET_HIT, "slack_max": TARGET_SLACK},
        "reservation_options": options.to_dict(), "traces": {}}
    rows = []
    begun = time.perf_counter()
    for trace in [t.strip() for t in args.traces.split(",") if t.strip()]:
        demand = load_trace(trace, shared)
        origins = rolling_origins(demand.select("ts"), BacktestSettings(  # only the hours matter
            train_days=TRAIN_DAYS, horizon_hours=HORIZON_HOURS, step_hours=24, max_origins=args.origins))
        views = {
            "per VM": (demand, fast, False),
            "pooled per app type": (pooled(demand), [*fast, "prophet"], False),
        }
        if args.prophet_sample > 0:
            views[f"per VM, sample of {args.prophet_sample}"] = (sample_groups(demand, args.prophet_sample),
                                                                 [*fast, "prophet"], False)
        if args.admit_sample > 0:
            views["pooled per app type, through admit"] = (pooled(demand), fast, True)
            views[f"per VM, sample of {args.admit_sample}, through admit"] = (
                sample_groups(demand, args.admit_sample), fast, True)
        trace_report = {"origins": [o.isoformat() for o in origins], "groups": demand.select(KEYS).n_unique(),
                        "views": {}}
        for view, (groups, forecasters, through_admit) in views.items():
            timing: dict[str, float] = {}
            started = time.perf_counter()
            total = run_view(groups, forecasters, origins, options, timing, through_admit)
            figures = {method: {r: ({**rates(parts), **parts} if r in SIZED_RESOURCES else parts)
                                for r, parts in by_resource.items()}
                       for method, by_resource in total.items()}
            static = figures[STATIC]
            for method, by_resource in figures.items():
                vcpu, ram = by_resource["vcpu"], by_resource["ram_gib"]
                meets = all(f["hit_rate"] is not None and f["hit_rate"] >= TARGET_HIT and f["slack"] <= TARGET_SLACK[trace]
                            for f in (vcpu, ram))
                pairs = ((vcpu, static["vcpu"]), (ram, static["ram_gib"]))
                hit_beats = all(f["hit_rate"] is not None and f["hit_rate"] > s["hit_rate"] for f, s in pairs)
                hit_ties = all(f["hit_rate"] is not None and f["hit_rate"] >= s["hit_rate"] - TIE for f, s in pairs)
                slack_beats = all(f["slack"] < s["slack"] for f, s in pairs)
                by_resource["meets_target"] = meets
                by_resource["hit_vs_static"] = "higher" if hit_beats else ("within 0.5 pt" if hit_ties else "lower")
                by_resource["slack_below_static"] = slack_beats
                rows.append((trace, view, method, vcpu["hit_rate"], vcpu["slack"], ram["hit_rate"], ram["slack"],
                             "yes" if meets else "no", by_resource["hit_vs_static"], "yes" if slack_beats else "no"))
            trace_report["views"][view] = {"groups": groups.select(KEYS).n_unique(), "methods": figures,
                                           "forecast_and_sizing_s": timing,
                                           "wall_s": round(time.perf_counter() - started, 1)}
        report["traces"][trace] = trace_report
    report["wall_s"] = round(time.perf_counter() - begun, 1)
    print_table(f"Pre-allocation replay: {args.origins} daily origins per trace, {HORIZON_HOURS} h windows "
                f"(target hit ≥ {TARGET_HIT:.0%}, slack ≤ {TARGET_SLACK['azure']:.0%} Azure, "
                f"≤ {TARGET_SLACK['bitbrains']:.0%} Bitbrains)",
                ["trace", "view", "method", "vcpu hit", "vcpu slack", "RAM hit", "RAM slack", "target met",
                 "hit vs static", "slack < static"], rows, console=Console(width=190), digits=3)
    path = write_json_atomic(results_path("preallocation"), report)
    print(f"wrote {path} in {report['wall_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
