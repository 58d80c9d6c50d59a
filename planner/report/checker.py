"""The plan invariants of DESIGN.md (1–10 and, re-planning, 11), checked on the exported tables.

One function per invariant; each returns every violation it finds (not the first),
computed with polars joins and group-bys over the shards. Amounts are compared with
a relative tolerance of 1e-6 because net_gbps is a float.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shardplan.models.problem import SKEW_DEN
from shardplan.planner.replan import below_needs, moved_requests, must_move
from shardplan.planner.report.export import (
    INPUT_CURRENT_FILE,
    PLAN_FILE,
    REQUESTS_OUT_FILE,
    SHARDS_FILE,
    PlanDir,
    cast_to_schema,
    conform_inputs,
    empty_reservations,
    read_plan_dir,
)
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import (
    CURRENT_SCHEMA,
    HOST_COLUMNS,
    REQUEST_COLUMNS,
    REQUEST_STATUSES,
    REQUESTS_OUT_OPTIONAL,
    REQUESTS_OUT_SCHEMA,
    RESERVATIONS_SCHEMA,
    RESOURCES,
    SHARDS_SCHEMA,
    STORAGE_TIERS,
    capacity_expr,
)

TOLERANCE = 1e-6
"""Relative tolerance (against max(1, |bound|)) for comparing amounts."""

COMPUTE_RESOURCES = ("vcpu", "ram_gib", "gpu")
"""Resources whose hosts count towards max_shards (invariant 3)."""

INVARIANTS: dict[int, str] = {
    1: "parts add up to the demand",
    2: "hosts within capacity",
    3: "at most max_shards hosts",
    4: "local RAM per vcpu and remote-memory traffic",
    5: "GPUs of the requested model beside a vcpu",
    6: "storage copies on distinct racks and tiers",
    7: "one zone per request",
    8: "no shards on hosts that are not up",
    9: "request statuses and references",
    10: "performance needs: cpu_score and storage_iops",
    11: "what runs is kept placed, within the move budget",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which one (1..9), for which request and host, with the amounts."""

    invariant: int
    request_id: str | None
    host_id: str | None
    message: str

    def __str__(self) -> str:
        where = ", ".join(part for part in (
            f"request {self.request_id}" if self.request_id is not None else "",
            f"host {self.host_id}" if self.host_id is not None else "") if part)
        return f"invariant {self.invariant} ({INVARIANTS[self.invariant]}){': ' + where if where else ''}: {self.message}"


@dataclass(frozen=True)
class _PlanTables:
    """The tables of one plan in schema types, plus the per (request, host) load of its shards."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    reservations: pl.DataFrame
    load: pl.DataFrame  # request_id, host_id, sums of the resources, remote_ram_gib, remote_gbps, shards
    remote_caps: pl.DataFrame  # request_id, remote_cap: the most GiB each request may hold remotely
    min_local_ram_gib_per_vcpu: float
    remote_memory_gbps_per_gib: float
    remote_memory_pricing: str = "flat"
    max_ram_skew: float | None = None     # None: a plan.json from before the cap
    current: pl.DataFrame | None = None   # what ran (re-planning)
    max_moves: int = -1
    whole: bool = False
    lifetimes: pl.DataFrame | None = None   # request_id, ends_at: admitted requests that leave (shardplan admit)

    @property
    def status(self) -> pl.DataFrame:
        """request_id → status of its first row in requests_out."""
        return self.requests_out.unique("request_id", keep="first", maintain_order=True).select("request_id", "status")


def _within(actual: pl.Expr, bound: pl.Expr) -> pl.Expr:
    """actual ≤ bound, up to the tolerance."""
    return actual <= bound + TOLERANCE * pl.max_horizontal(bound.abs(), pl.lit(1.0))


def _close(actual: pl.Expr, expected: pl.Expr) -> pl.Expr:
    return (actual - expected).abs() <= TOLERANCE * pl.max_horizontal(expected.abs(), pl.lit(1.0))


def _amount(value: float | int | None) -> str:
    if value is None:
        return "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _option(options: Mapping | PlanOptions | None, name: str) -> float:
    if isinstance(options, PlanOptions):
        return float(getattr(options, name))
    value = (options or {}).get(name)
    return float(getattr(PlanOptions(), name) if value is None else value)


def _skew(options: Mapping | PlanOptions | None) -> float | None:
    """The plan's max_ram_skew; a plan.json from before the option existed had no cap."""
    if isinstance(options, PlanOptions):
        return options.max_ram_skew
    value = (options or {}).get("max_ram_skew")
    return None if value is None else float(value)


def _pricing(options: Mapping | PlanOptions | None) -> str:
    """How the plan priced remote memory; a plan.json from before the option existed priced it flat."""
    if isinstance(options, PlanOptions):
        return options.remote_memory_pricing
    return str((options or {}).get("remote_memory_pricing", "flat"))


def remote_caps(requests: pl.DataFrame, options, pricing: str) -> pl.DataFrame:
    """Per request (DESIGN.md, remote memory): the GiB it may hold remotely at the untouched rate
    (`untouched`) and in all (`remote_cap`). Flat: every class but low may hold all its RAM remotely, none
    untouched. Use: up to untouched_ram_gib untouched; past it at most max_slowdown ÷
    remote_slowdown_per_share of its RAM touched and remote."""
    untouched = pl.col("untouched_ram_gib") if "untouched_ram_gib" in requests.columns else pl.lit(0)
    table = requests.select("request_id", "ram_gib", "latency_class",
                            pl.min_horizontal(untouched.fill_null(0), "ram_gib").cast(pl.Int64).alias("untouched"))
    if pricing == "flat":
        return table.with_columns(untouched=pl.lit(0, dtype=pl.Int64),
                                  remote_cap=pl.when(pl.col("latency_class") == "low").then(0).otherwise("ram_gib"))
    per_share = _option(options, "remote_slowdown_per_share")
    share = pl.col("latency_class").replace_strict(
        {c: _option(options, f"max_slowdown_{c}") / per_share for c in ("low", "medium", "tolerant")},
        return_dtype=pl.Float64)
    return table.with_columns(remote_cap=pl.min_horizontal(
        pl.col("untouched") + (share * pl.col("ram_gib") + 1e-9).floor().cast(pl.Int64), "ram_gib"))


def _remote_rule(load: pl.DataFrame, caps: pl.DataFrame, options, pricing: str) -> pl.DataFrame:
    """Per request: remote GiB in all, `remote_caps`' rule, and the Gbit/s each remote GiB costs (use
    pricing: the untouched rate while all of it fits the untouched GiB, else the touched rate)."""
    touched_rate = _option(options, "remote_memory_gbps_per_gib")
    held = load.group_by("request_id").agg(pl.col("remote_ram_gib").sum().alias("request_remote_gib"))
    untouched_rate = _option(options, "untouched_remote_gbps_per_gib") if pricing == "use" else touched_rate
    return (held.join(caps, on="request_id", how="left")
            .with_columns(remote_rate=pl.when(pl.col("request_remote_gib") <= pl.col("untouched"))
                          .then(pl.lit(untouched_rate)).otherwise(pl.lit(touched_rate)))
            .select("request_id", "request_remote_gib", "untouched", "remote_cap", "remote_rate"))


def _fractional_gpus(shards: pl.DataFrame) -> list["Violation"]:
    """Invariant 5 before the cast to integers: GPUs are whole devices."""
    if "gpu" not in shards.columns or not shards.schema["gpu"].is_float():
        return []
    fractional = shards.filter(pl.col("gpu") != pl.col("gpu").floor())
    return [Violation(5, row["request_id"], row["host_id"], f"gpu {_amount(row['gpu'])} is not a whole device")
            for row in fractional.iter_rows(named=True)]


def _prepare(hosts, requests, shards, requests_out, options, reservations, current=None,
             lifetimes=None) -> _PlanTables:
    if shards.width == 0:  # a plan that placed nothing may hand over a frame without columns
        shards = pl.DataFrame(schema=SHARDS_SCHEMA)
    shards = shards.with_columns(pl.col("gpu").round(0)) if shards.schema.get("gpu", pl.Int64).is_float() else shards
    shards = cast_to_schema(shards, SHARDS_SCHEMA, SHARDS_FILE)
    remote_rate = _option(options, "remote_memory_gbps_per_gib")
    pricing = _pricing(options)
    requests = conform_inputs(requests, REQUEST_COLUMNS, "requests")
    load = (shards.group_by("request_id", "host_id")
            .agg(*[pl.col(r).sum() for r in RESOURCES], pl.len().alias("shards"))
            .with_columns(pl.when(pl.col("vcpu") == 0).then(pl.col("ram_gib")).otherwise(0).alias("remote_ram_gib")))
    caps = remote_caps(requests, options, pricing)
    load = load.join(_remote_rule(load, caps, options, pricing), on="request_id", how="left").with_columns(
        (pl.col("remote_ram_gib") * pl.col("remote_rate").fill_null(remote_rate)).alias("remote_gbps"))
    return _PlanTables(
        hosts=conform_inputs(hosts, HOST_COLUMNS, "hosts"),
        requests=requests,
        shards=shards,
        requests_out=cast_to_schema(requests_out, REQUESTS_OUT_SCHEMA, REQUESTS_OUT_FILE, REQUESTS_OUT_OPTIONAL),
        reservations=(empty_reservations() if reservations is None
                      else cast_to_schema(reservations, RESERVATIONS_SCHEMA, "reservations")),
        load=load,
        remote_caps=caps.select("request_id", "remote_cap"),
        min_local_ram_gib_per_vcpu=_option(options, "min_local_ram_gib_per_vcpu"),
        remote_memory_gbps_per_gib=remote_rate,
        remote_memory_pricing=pricing,
        max_ram_skew=_skew(options),
        current=None if current is None else cast_to_schema(current, CURRENT_SCHEMA, INPUT_CURRENT_FILE),
        max_moves=int(_option(options, "max_moves")),
        whole=(options.mode if isinstance(options, PlanOptions) else (options or {}).get("mode")) == "whole",
        lifetimes=None if lifetimes is None else lifetimes.select(
            "request_id", pl.col("ends_at").cast(RESERVATIONS_SCHEMA["window_end"])),
    )


def check_demand(plan: _PlanTables) -> list[Violation]:
    """Invariant 1: a placed request's shards add up to its demand; storage once per replica index."""
    shards, requests = plan.shards.lazy(), plan.requests.lazy()
    negative = shards.filter(pl.any_horizontal([pl.col(r) < 0 for r in RESOURCES]))
    totals = plan.load.lazy().group_by("request_id").agg(
        *[pl.col(r).sum().alias(f"{r}_shards") for r in ("vcpu", "ram_gib", "gpu", "net_gbps")],
        pl.col("remote_gbps").sum())
    placed = (plan.status.lazy().filter(pl.col("status") == "placed").join(requests, on="request_id", how="inner")
              .join(totals, on="request_id", how="left")
              .with_columns(pl.col("vcpu_shards", "ram_gib_shards", "gpu_shards", "net_gbps_shards", "remote_gbps")
                            .fill_null(0))
              .with_columns((pl.col("net_gbps_shards") - pl.col("remote_gbps")).alias("own_net_gbps")))
    wrong = placed.filter(pl.any_horizontal([pl.col(f"{r}_shards") != pl.col(r) for r in ("vcpu", "ram_gib", "gpu")])
                          | ~_close(pl.col("own_net_gbps"), pl.col("net_gbps")))
    expected = (placed.select("request_id", "storage_gib", pl.int_ranges(0, "replicas").alias("replica"))
                .explode("replica").with_columns(pl.col("replica").cast(pl.Int64)))
    copies = (shards.join(placed.select("request_id"), on="request_id", how="semi")
              .group_by("request_id", "replica").agg(pl.col("storage_gib").sum().alias("copy_gib")))
    per_copy = (expected.join(copies, on=["request_id", "replica"], how="left")
                .with_columns(pl.col("copy_gib").fill_null(0))
                .filter(pl.col("copy_gib") != pl.col("storage_gib")))
    out_of_range = (shards.join(requests.select("request_id", "replicas"), on="request_id", how="inner")
                    .filter((pl.col("replica") < 0) | (pl.col("replica") >= pl.col("replicas")))
                    .group_by("request_id", "host_id", "replica", "replicas").agg(pl.len().alias("shards")))
    negative, wrong, per_copy, out_of_range = pl.collect_all([negative, wrong, per_copy, out_of_range])

    found = [Violation(1, row["request_id"], row["host_id"], f"shard {row['shard']}: " + ", ".join(
                 f"{r} {_amount(row[r])} < 0" for r in RESOURCES if row[r] < 0))
             for row in negative.iter_rows(named=True)]
    for row in wrong.iter_rows(named=True):
        found += [Violation(1, row["request_id"], None, f"{r} {row[f'{r}_shards']} over its shards ≠ demand {row[r]}")
                  for r in ("vcpu", "ram_gib", "gpu") if row[f"{r}_shards"] != row[r]]
        if abs(row["own_net_gbps"] - row["net_gbps"]) > TOLERANCE * max(abs(row["net_gbps"]), 1.0):
            found.append(Violation(1, row["request_id"], None,
                                   f"net_gbps {_amount(row['own_net_gbps'])} of its own over its shards "
                                   f"(total {_amount(row['net_gbps_shards'])} − remote-memory traffic "
                                   f"{_amount(row['remote_gbps'])}) ≠ demand {_amount(row['net_gbps'])}"))
    found += [Violation(1, row["request_id"], None,
                        f"storage_gib {row['copy_gib']} of replica {row['replica']} ≠ demand {row['storage_gib']}")
              for row in per_copy.iter_rows(named=True)]
    found += [Violation(1, row["request_id"], row["host_id"],
                        f"replica index {row['replica']} outside 0..{row['replicas'] - 1} "
                        f"({row['shards']} shard(s))")
              for row in out_of_range.iter_rows(named=True)]
    return found


def check_capacity(plan: _PlanTables) -> list[Violation]:
    """Invariant 2: existing load + shards + reservations ≤ capacity on every host (vcpu × overcommit), at
    every instant: a reservation row holds in its window (always, without one); a shard holds until its
    request's `ends_at` (admitted requests; always, without one). Load only drops between the rows' starts,
    so the instants checked are those starts and the time before them; the worst one is reported."""
    shards = plan.shards.select("request_id", "host_id", *RESOURCES)
    if plan.lifetimes is not None and plan.lifetimes.height:
        shards = shards.join(plan.lifetimes.select("request_id", "ends_at"), on="request_id", how="left")
    else:
        shards = shards.with_columns(pl.lit(None, RESERVATIONS_SCHEMA["window_end"]).alias("ends_at"))
    rows = plan.reservations
    instants = pl.concat([
        plan.hosts.select("host_id", pl.lit(None, RESERVATIONS_SCHEMA["window_start"]).alias("_at")),
        rows.filter(pl.col("window_start").is_not_null()).select("host_id", pl.col("window_start").alias("_at")),
    ]).unique()
    alive = (instants.join(shards, on="host_id", how="inner")
             .filter(pl.col("ends_at").is_null() | pl.col("_at").is_null() | (pl.col("_at") < pl.col("ends_at")))
             .group_by("host_id", "_at").agg(pl.col(r).sum().alias(f"shards_{r}") for r in RESOURCES))
    active = (instants.join(rows, on="host_id", how="inner")
              .filter(pl.col("window_start").is_null() | pl.col("window_end").is_null()
                      | (pl.col("_at").is_not_null() & (pl.col("window_start") <= pl.col("_at"))
                         & (pl.col("_at") < pl.col("window_end"))))
              .group_by("host_id", "_at").agg(pl.col(r).sum().alias(f"reserved_{r}") for r in RESOURCES))
    capacity = {r: capacity_expr(r).cast(pl.Float64) for r in RESOURCES}
    hosts = (instants.join(alive, on=["host_id", "_at"], how="left", nulls_equal=True)
             .join(active, on=["host_id", "_at"], how="left", nulls_equal=True)
             .join(plan.hosts, on="host_id", how="left")
             .with_columns(pl.col("^shards_.*$", "^reserved_.*$").fill_null(0))
             .with_columns(
                 *[capacity[r].alias(f"capacity_{r}") for r in RESOURCES],
                 *[(pl.col(f"used_{r}") + pl.col(f"shards_{r}") + pl.col(f"reserved_{r}")).alias(f"total_{r}")
                   for r in RESOURCES]))
    found: list[Violation] = []
    for r in RESOURCES:
        over = (hosts.filter(~_within(pl.col(f"total_{r}"), pl.col(f"capacity_{r}")))
                .sort(f"total_{r}", descending=True).unique("host_id", keep="first").sort("host_id"))
        for row in over.iter_rows(named=True):
            when = "" if row["_at"] is None or not rows.height else f" at {row['_at']:%Y-%m-%d %H:%M}"
            found.append(Violation(2, None, row["host_id"],
                                   f"{r} {_amount(row[f'total_{r}'])} > capacity {_amount(row[f'capacity_{r}'])} "
                                   f"(existing {_amount(row[f'used_{r}'])} + shards {_amount(row[f'shards_{r}'])}"
                                   f" + reserved {_amount(row[f'reserved_{r}'])}){when}"))
    unknown = plan.reservations.join(plan.hosts, on="host_id", how="anti")
    found += [Violation(2, None, row["host_id"], f"reservation {row['reservation_id']} is on an unknown host")
              for row in unknown.iter_rows(named=True)]
    return found


def check_span(plan: _PlanTables) -> list[Violation]:
    """Invariant 3: compute, memory and GPU parts span at most max_shards distinct hosts."""
    spans = (plan.load.filter(pl.any_horizontal([pl.col(r) > 0 for r in COMPUTE_RESOURCES]))
             .group_by("request_id").agg(pl.col("host_id").sort().alias("hosts"))
             .join(plan.requests.select("request_id", "max_shards"), on="request_id", how="inner")
             .filter(pl.col("hosts").list.len() > pl.col("max_shards")))
    return [Violation(3, row["request_id"], None,
                      f"compute, memory and GPU parts on {len(row['hosts'])} hosts > max_shards "
                      f"{row['max_shards']} ({', '.join(row['hosts'])})")
            for row in spans.iter_rows(named=True)]


def _skewed_parts(plan: _PlanTables) -> list[Violation]:
    """Invariant 4's cap: a part with vcpu holds at most max_ram_skew × its vcpu share of the request's RAM,
    rounded up (models.problem.part_ram_cap, in the same integers)."""
    if plan.max_ram_skew is None or plan.load.height == 0:
        return []
    num, den = int(round(plan.max_ram_skew * SKEW_DEN)), SKEW_DEN  # the planner's rounding of the option
    parts = (plan.load.filter(pl.col("vcpu") > 0)
             .join(plan.requests.select("request_id", pl.col("vcpu").alias("request_vcpu"),
                                        pl.col("ram_gib").alias("request_ram")), on="request_id", how="inner")
             .filter(pl.col("request_vcpu") > 0)
             .with_columns(cap=(num * pl.col("request_ram").cast(pl.Int64) * pl.col("vcpu").cast(pl.Int64)
                                + den * pl.col("request_vcpu").cast(pl.Int64) - 1)
                           // (den * pl.col("request_vcpu").cast(pl.Int64)))
             .filter(pl.col("ram_gib") > pl.col("cap")))
    return [Violation(4, row["request_id"], row["host_id"],
                      f"ram_gib {row['ram_gib']} beside vcpu {row['vcpu']} > ⌈{plan.max_ram_skew:g} × "
                      f"{row['request_ram']} GiB × {row['vcpu']} / {row['request_vcpu']} vcpu⌉ = {row['cap']}: RAM "
                      f"past max_ram_skew × its vcpu's share of the request's RAM must be a memory part")
            for row in parts.iter_rows(named=True)]


def check_local_memory(plan: _PlanTables) -> list[Violation]:
    """Invariant 4: local RAM per vcpu; remote memory within what the request's rule allows (flat: none for
    latency class low; use: its untouched GiB and the touched share of its class); remote traffic carried."""
    ratio = plan.min_local_ram_gib_per_vcpu
    load = plan.load.join(plan.requests.select("request_id", "latency_class"), on="request_id", how="left")
    short = load.filter((pl.col("vcpu") > 0) & ~_within(ratio * pl.col("vcpu"), pl.col("ram_gib").cast(pl.Float64)))
    found = [Violation(4, row["request_id"], row["host_id"],
                       f"ram_gib {row['ram_gib']} < {_amount(ratio)} × vcpu {row['vcpu']} = "
                       f"{_amount(ratio * row['vcpu'])} local RAM")
             for row in short.iter_rows(named=True)]
    found += _skewed_parts(plan)
    remote = load.filter(pl.col("remote_ram_gib") > 0)
    if plan.remote_memory_pricing == "flat":
        low = remote.filter(pl.col("latency_class") == "low")
        found += [Violation(4, row["request_id"], row["host_id"],
                            f"remote memory {row['remote_ram_gib']} GiB (ram without vcpu on this host) "
                            f"is not allowed for latency class low")
                  for row in low.iter_rows(named=True)]
    else:
        over = (remote.filter(pl.col("request_remote_gib") > pl.col("remote_cap"))
                .unique("request_id", keep="first", maintain_order=True))
        found += [Violation(4, row["request_id"], row["host_id"],
                            f"remote memory {row['request_remote_gib']} GiB in all > the {row['remote_cap']} GiB its "
                            f"latency class {row['latency_class']} may hold remotely ({row['untouched']} GiB untouched "
                            f"and the touched share its max slowdown allows)")
                  for row in over.iter_rows(named=True)]
    unpaid = remote.filter(~_within(pl.col("remote_gbps"), pl.col("net_gbps")))
    found += [Violation(4, row["request_id"], row["host_id"],
                        f"net_gbps {_amount(row['net_gbps'])} < remote-memory traffic {_amount(row['remote_rate'])} × "
                        f"{row['remote_ram_gib']} GiB = {_amount(row['remote_gbps'])}")
              for row in unpaid.iter_rows(named=True)]
    return found


def check_gpu(plan: _PlanTables) -> list[Violation]:
    """Invariant 5: GPUs of the requested model, on a host where the request has a vcpu."""
    gpu_load = (plan.load.filter(pl.col("gpu") > 0)
                .join(plan.hosts.select("host_id", pl.col("gpu_model").alias("host_gpu_model")), on="host_id", how="left")
                .join(plan.requests.select("request_id", "gpu_model"), on="request_id", how="left"))
    wrong_model = gpu_load.filter(pl.col("gpu_model").is_not_null()
                                  & (pl.col("host_gpu_model").is_null() | (pl.col("host_gpu_model") != pl.col("gpu_model"))))
    found = [Violation(5, row["request_id"], row["host_id"],
                       f"gpu {row['gpu']} of model {row['host_gpu_model']!r} ≠ requested model {row['gpu_model']!r}")
             for row in wrong_model.iter_rows(named=True)]
    alone = gpu_load.filter(pl.col("vcpu") == 0)
    found += [Violation(5, row["request_id"], row["host_id"], f"gpu {row['gpu']} on a host where the request has no vcpu")
              for row in alone.iter_rows(named=True)]
    return found


def _tier_rank(column: str) -> pl.Expr:
    return pl.col(column).replace_strict({tier: rank for rank, tier in enumerate(STORAGE_TIERS)},
                                         default=0, return_dtype=pl.Int64)


def check_storage(plan: _PlanTables) -> list[Violation]:
    """Invariant 6: different storage copies never share a rack; each on a tier ≥ the requested one."""
    storage = (plan.shards.filter(pl.col("storage_gib") > 0)
               .join(plan.hosts.select("host_id", "rack", pl.col("storage_type").alias("host_tier")),
                     on="host_id", how="inner"))
    shared = (storage.group_by("request_id", "rack")
              .agg(pl.col("replica").unique().sort().alias("replicas"), pl.col("host_id").unique().sort().alias("hosts"))
              .filter(pl.col("replicas").list.len() > 1))
    found = [Violation(6, row["request_id"], row["hosts"][0],
                       f"storage copies {', '.join(map(str, row['replicas']))} share rack {row['rack']} "
                       f"(hosts {', '.join(row['hosts'])})")
             for row in shared.iter_rows(named=True)]
    tiers = (storage.group_by("request_id", "host_id", "host_tier").agg(pl.col("storage_gib").sum())
             .join(plan.requests.select("request_id", "storage_type"), on="request_id", how="inner")
             .filter(_tier_rank("host_tier") < _tier_rank("storage_type")))
    found += [Violation(6, row["request_id"], row["host_id"],
                        f"storage_gib {row['storage_gib']} on tier {row['host_tier']} < requested {row['storage_type']}")
              for row in tiers.iter_rows(named=True)]
    return found


def check_zone(plan: _PlanTables) -> list[Violation]:
    """Invariant 7: all parts of a request lie in one zone."""
    zones = (plan.load.join(plan.hosts.select("host_id", "zone"), on="host_id", how="inner")
             .group_by("request_id", "zone").agg(pl.col("host_id").sort().alias("hosts"))
             .sort("request_id", "zone")
             .group_by("request_id", maintain_order=True).agg("zone", "hosts")
             .filter(pl.col("zone").list.len() > 1))
    return [Violation(7, row["request_id"], None,
                      f"parts in {len(row['zone'])} zones: " + "; ".join(
                          f"{zone} ({', '.join(hosts)})" for zone, hosts in zip(row["zone"], row["hosts"])))
            for row in zones.iter_rows(named=True)]


def check_host_status(plan: _PlanTables) -> list[Violation]:
    """Invariant 8: hosts that are not up receive no shards."""
    blocked = (plan.load.join(plan.hosts.select("host_id", "status"), on="host_id", how="inner")
               .filter(pl.col("status") != "up"))
    return [Violation(8, row["request_id"], row["host_id"], f"{row['shards']} shard(s) on a host that is {row['status']}")
            for row in blocked.iter_rows(named=True)]


def check_statuses(plan: _PlanTables) -> list[Violation]:
    """Invariant 9: unplaced means no shards and a reason; every request listed once; references exist."""
    listed = plan.requests_out.group_by("request_id").agg(pl.len().alias("rows"))
    missing = plan.requests.join(listed, on="request_id", how="anti")
    found = [Violation(9, row["request_id"], None, f"missing from {REQUESTS_OUT_FILE}")
             for row in missing.iter_rows(named=True)]
    found += [Violation(9, row["request_id"], None, f"listed {row['rows']} times in {REQUESTS_OUT_FILE}")
              for row in listed.filter(pl.col("rows") > 1).iter_rows(named=True)]
    found += [Violation(9, row["request_id"], None, f"listed in {REQUESTS_OUT_FILE} but not in the requests input")
              for row in listed.join(plan.requests, on="request_id", how="anti").iter_rows(named=True)]
    bad_status = plan.requests_out.filter(~pl.col("status").is_in(list(REQUEST_STATUSES)) | pl.col("status").is_null())
    found += [Violation(9, row["request_id"], None,
                        f"unknown status {row['status']!r} (expected one of {', '.join(REQUEST_STATUSES)})")
              for row in bad_status.iter_rows(named=True)]

    shard_counts = plan.shards.group_by("request_id").agg(pl.len().alias("shards"))
    statuses = (plan.requests_out.join(shard_counts, on="request_id", how="left")
                .with_columns(pl.col("shards").fill_null(0)))
    unplaced = statuses.filter(pl.col("status") == "unplaced")
    found += [Violation(9, row["request_id"], None, f"unplaced but has {row['shards']} shard(s)")
              for row in unplaced.filter(pl.col("shards") > 0).iter_rows(named=True)]
    no_reason = unplaced.filter(pl.col("reason").is_null() | (pl.col("reason").str.strip_chars() == ""))
    found += [Violation(9, row["request_id"], None, "unplaced without a reason")
              for row in no_reason.iter_rows(named=True)]
    found += [Violation(9, row["request_id"], None, "placed but has no shards")
              for row in statuses.filter((pl.col("status") == "placed") & (pl.col("shards") == 0)).iter_rows(named=True)]

    unknown_hosts = plan.load.join(plan.hosts, on="host_id", how="anti")
    found += [Violation(9, row["request_id"], row["host_id"], f"{row['shards']} shard(s) on a host not in the hosts input")
              for row in unknown_hosts.iter_rows(named=True)]
    unknown_requests = shard_counts.join(plan.requests, on="request_id", how="anti")
    found += [Violation(9, row["request_id"], None, f"{row['shards']} shard(s) of a request not in the requests input")
              for row in unknown_requests.iter_rows(named=True)]
    repeated = plan.shards.group_by("request_id", "shard").agg(pl.len().alias("rows")).filter(pl.col("rows") > 1)
    found += [Violation(9, row["request_id"], None, f"shard number {row['shard']} used by {row['rows']} rows")
              for row in repeated.iter_rows(named=True)]
    return found


def check_performance(plan: _PlanTables) -> list[Violation]:
    """Invariant 10: compute parts (vcpu > 0) on hosts whose cpu_score ≥ the request's min_cpu_score; storage
    copies on hosts whose storage_iops ≥ its min_storage_iops."""
    shards = (plan.shards.join(plan.requests.select("request_id", "min_cpu_score", "min_storage_iops"),
                               on="request_id", how="inner")
              .join(plan.hosts.select("host_id", "cpu_score", "storage_iops"), on="host_id", how="inner"))
    slow_cpu, slow_iops = below_needs(shards)
    found = [Violation(10, row["request_id"], row["host_id"], f"{row['vcpu']} vcpu on a host of cpu_score "
                       f"{row['cpu_score']:g} < min_cpu_score {row['min_cpu_score']:g}")
             for row in slow_cpu.iter_rows(named=True)]
    found += [Violation(10, row["request_id"], row["host_id"], f"storage copy {row['replica']} on a host of "
                        f"storage_iops {row['storage_iops']:g} < min_storage_iops {row['min_storage_iops']:g}")
              for row in slow_iops.iter_rows(named=True)]
    return found


def check_running(plan: _PlanTables) -> list[Violation]:
    """Invariant 11: a running request (in the current placement and tonight's requests) that is not
    evictable is placed, unless it must move (`shardplan.planner.replan.must_move`: a host no longer up
    or no longer able to hold its parts); voluntary disruptions (moved or dropped running requests that
    were free to stay) are at most max_moves when a budget is given."""
    if plan.current is None or plan.current.height == 0:
        return []
    tonight = plan.requests.select("request_id", "evictable")
    current = plan.current.join(tonight.select("request_id"), on="request_id", how="semi")
    forced = must_move(plan.hosts, plan.requests, current, whole=plan.whole,
                       min_local_ram_gib_per_vcpu=plan.min_local_ram_gib_per_vcpu, max_ram_skew=plan.max_ram_skew,
                       remote_cap=plan.remote_caps)
    placed = set(plan.requests_out.filter(pl.col("status") == "placed")["request_id"].to_list())
    evictable = dict(tonight.iter_rows())
    moved = moved_requests(current, plan.shards)
    found: list[Violation] = []
    voluntary = 0
    for request_id in sorted(set(current["request_id"].to_list())):
        if request_id in forced:
            continue
        if request_id not in placed and not evictable.get(request_id):
            found.append(Violation(11, request_id, None, "running, not evictable and free to stay, but left unplaced"))
        voluntary += request_id not in placed or request_id in moved
    if plan.max_moves >= 0 and voluntary > plan.max_moves:
        found.append(Violation(11, None, None, f"{voluntary} voluntary disruptions of running requests, over the "
                                               f"budget of {plan.max_moves} (max_moves)"))
    return found


CHECKS = (check_demand, check_capacity, check_span, check_local_memory, check_gpu,
          check_storage, check_zone, check_host_status, check_statuses, check_performance, check_running)
"""One check per invariant, in invariant order."""


def check_plan(hosts: pl.DataFrame, requests: pl.DataFrame, shards: pl.DataFrame, requests_out: pl.DataFrame,
               options: Mapping | PlanOptions | None = None,
               reservations: pl.DataFrame | None = None, current: pl.DataFrame | None = None,
               lifetimes: pl.DataFrame | None = None) -> list[Violation]:
    """Every violation of the invariants, sorted by invariant, request and host; [] for a valid plan.
    `current`: what ran when the plan was made (re-planning; invariant 11). `lifetimes`: request_id, ends_at
    of requests that leave (admissions.parquet): their shards hold room until then (invariant 2)."""
    found = _fractional_gpus(shards)
    plan = _prepare(hosts, requests, shards, requests_out, options, reservations, current, lifetimes)
    for check in CHECKS:
        found += check(plan)
    return sorted(found, key=lambda v: (v.invariant, v.request_id or "", v.host_id or "", v.message))


def check_plan_dir(path: str | Path | PlanDir) -> list[Violation]:
    """Check a plan directory against the options recorded in its plan.json (PlanOptions defaults otherwise)."""
    plan = path if isinstance(path, PlanDir) else read_plan_dir(path)
    options = plan.plan.get("options") or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"{PLAN_FILE}: 'options' must be an object, got {type(options).__name__}")
    return check_plan(plan.hosts, plan.requests, plan.shards, plan.requests_out, options, plan.reservations,
                      plan.current, admitted_lifetimes(plan))


def admitted_lifetimes(plan: PlanDir) -> pl.DataFrame | None:
    """request_id, ends_at of the requests admitted into the plan (admissions.parquet), None when none were."""
    from shardplan.plandir import ADMISSIONS_FILE

    path = None if plan.path is None else Path(plan.path) / ADMISSIONS_FILE
    if path is None or not path.is_file():
        return None
    admissions = pl.read_parquet(path, columns=["request_id", "ends_at", "released_at"])
    return admissions.filter(pl.col("released_at").is_null()).select("request_id", "ends_at")
