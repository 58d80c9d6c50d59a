"""What changed between two plan directories: parts that moved, appeared or vanished,
requests that lost or gained a placement, and what it did to cost and utilisation.

A part is the load of one (request, role, replica) on one host. Parts of the same
(request, role, replica) that left one host and arrived on another are paired as
moves, largest first; the rest are added or removed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.table import Table

from shardplan.planner.report.export import PlanDir, read_plan_dir
from shardplan.schema import RESOURCES

PART_KEY = ("request_id", "role", "replica")
"""What identifies a part across plans, besides the host it sits on."""

CHANGE_KINDS = ("moved", "added", "removed", "resized", "newly_unplaced", "newly_placed")

_PART_COLUMNS: dict[str, pl.DataType] = {
    "kind": pl.Utf8,
    "request_id": pl.Utf8,
    "role": pl.Utf8,
    "replica": pl.Int64,
    "from_host": pl.Utf8,
    "to_host": pl.Utf8,
    **{resource: (pl.Float64 if resource == "net_gbps" else pl.Int64) for resource in RESOURCES},
    "hosts_cost_delta": pl.Float64,
    "reason": pl.Utf8,
}


@dataclass(frozen=True)
class PlanDiff:
    """Changes from plan A to plan B; deltas are B − A (a negative cost delta is a saving)."""

    parts: pl.DataFrame
    """One row per moved, added, removed or resized part (columns of `_PART_COLUMNS`); amounts are B's (A's if removed)."""
    newly_unplaced: pl.DataFrame
    """request_id, reason (B's): placed in A, not placed in B."""
    newly_placed: pl.DataFrame
    """request_id, n_hosts: placed in B, not placed in A."""
    utilisation: pl.DataFrame
    """resource, used/capacity/utilisation in A and B, utilisation_delta."""
    active_hosts_cost_a: float
    active_hosts_cost_b: float
    requests_cost_a: float
    requests_cost_b: float
    active_hosts_a: int
    active_hosts_b: int
    plan_a: str
    plan_b: str
    placed_demand_a: float = 0.0   # priority × (vcpu + ram_gib / 4 + 8 × gpu) of placed real requests
    placed_demand_b: float = 0.0
    by_reason: pl.DataFrame | None = None
    """reason, parts, requests, moved GiB, hosts' cost delta: the part changes grouped by why."""
    incremental: bool = False      # B is an edit of what ran (its moves.parquet gives the reasons)

    @property
    def active_hosts_cost_delta(self) -> float:
        return self.active_hosts_cost_b - self.active_hosts_cost_a

    @property
    def requests_cost_delta(self) -> float:
        return self.requests_cost_b - self.requests_cost_a

    def of_kind(self, kind: str) -> pl.DataFrame:
        """The parts of one change kind (moved, added, removed, resized)."""
        return self.parts.filter(pl.col("kind") == kind)

    @property
    def moved(self) -> pl.DataFrame:
        return self.of_kind("moved")

    @property
    def added(self) -> pl.DataFrame:
        return self.of_kind("added")

    @property
    def removed(self) -> pl.DataFrame:
        return self.of_kind("removed")

    @property
    def is_empty(self) -> bool:
        return self.parts.height == 0 and self.newly_unplaced.height == 0 and self.newly_placed.height == 0

    def to_frame(self) -> pl.DataFrame:
        """Every change as one table: part changes, then requests newly unplaced and newly placed."""
        unplaced = self.newly_unplaced.select(pl.lit("newly_unplaced").alias("kind"), "request_id", "reason")
        placed = self.newly_placed.select(pl.lit("newly_placed").alias("kind"), "request_id",
                                          pl.format("placed on {} host(s)", "n_hosts").alias("reason"))
        return pl.concat([self.parts, unplaced, placed], how="diagonal_relaxed").select(list(_PART_COLUMNS))

    def summary(self) -> dict:
        """Counts and cost deltas, as plain numbers."""
        return {
            "plan_a": self.plan_a,
            "plan_b": self.plan_b,
            **{kind: self.of_kind(kind).height for kind in ("moved", "added", "removed", "resized")},
            "newly_unplaced": self.newly_unplaced.height,
            "newly_placed": self.newly_placed.height,
            "active_hosts_a": self.active_hosts_a,
            "active_hosts_b": self.active_hosts_b,
            "active_hosts_cost_a": self.active_hosts_cost_a,
            "active_hosts_cost_b": self.active_hosts_cost_b,
            "active_hosts_cost_delta": self.active_hosts_cost_delta,
            "requests_cost_a": self.requests_cost_a,
            "requests_cost_b": self.requests_cost_b,
            "requests_cost_delta": self.requests_cost_delta,
            "placed_demand_a": self.placed_demand_a,
            "placed_demand_b": self.placed_demand_b,
            "placed_demand_delta": self.placed_demand_b - self.placed_demand_a,
            "incremental": self.incremental,
        }

    def to_json(self) -> str:
        """Summary, part changes, request changes and utilisation as JSON text."""
        return json.dumps({
            "summary": self.summary(),
            "parts": self.parts.to_dicts(),
            "newly_unplaced": self.newly_unplaced.to_dicts(),
            "newly_placed": self.newly_placed.to_dicts(),
            "utilisation": self.utilisation.to_dicts(),
            "by_reason": [] if self.by_reason is None else self.by_reason.to_dicts(),
        }, indent=2)


def _parts(plan: PlanDir) -> pl.DataFrame:
    return (plan.shards.group_by(*PART_KEY, "host_id")
            .agg(*[pl.col(resource).sum() for resource in RESOURCES]))


def _host_costs(plan: PlanDir) -> pl.DataFrame:
    """host_id, status, active, cost_per_hour of the active host (0 when inactive)."""
    return (plan.hosts.select("host_id", "status", "cost_per_hour")
            .join(plan.hosts_out.select("host_id", "active"), on="host_id", how="left")
            .with_columns(pl.col("active").fill_null(False))
            .with_columns(pl.when(pl.col("active")).then(pl.col("cost_per_hour")).otherwise(0.0).alias("active_cost")))


def _size(prefix: str = "") -> pl.Expr:
    """Order parts by size so the largest departures pair with the largest arrivals."""
    return pl.sum_horizontal(pl.col(f"{prefix}vcpu"), pl.col(f"{prefix}ram_gib"), pl.col(f"{prefix}storage_gib"),
                             pl.col(f"{prefix}gpu"))


def _pair_parts(parts_a: pl.DataFrame, parts_b: pl.DataFrame) -> pl.DataFrame:
    """kind, key, from_host, to_host and amounts of every part that differs between A and B."""
    key = list(PART_KEY)
    both = parts_a.join(parts_b, on=[*key, "host_id"], how="inner", suffix="_b")
    resized = (both.filter(pl.any_horizontal([pl.col(r) != pl.col(f"{r}_b") for r in RESOURCES]))
               .select(pl.lit("resized").alias("kind"), *key, pl.col("host_id").alias("from_host"),
                       pl.col("host_id").alias("to_host"), *[pl.col(f"{r}_b").alias(r) for r in RESOURCES]))

    def ranked(side: pl.DataFrame) -> pl.DataFrame:
        return (side.sort([*key, _size(), "host_id"], descending=[False] * len(key) + [True, False])
                .with_columns(pl.int_range(pl.len()).over(key).alias("rank")))

    left = ranked(parts_a.join(parts_b, on=[*key, "host_id"], how="anti"))
    arrived = ranked(parts_b.join(parts_a, on=[*key, "host_id"], how="anti"))
    paired = left.join(arrived, on=[*key, "rank"], how="full", coalesce=True, suffix="_b")
    changes = paired.select(
        pl.when(pl.col("host_id").is_null()).then(pl.lit("added"))
        .when(pl.col("host_id_b").is_null()).then(pl.lit("removed"))
        .otherwise(pl.lit("moved")).alias("kind"),
        *key,
        pl.col("host_id").alias("from_host"),
        pl.col("host_id_b").alias("to_host"),
        *[pl.coalesce(f"{r}_b", r).alias(r) for r in RESOURCES],
    )
    return pl.concat([changes, resized], how="vertical_relaxed")


def _explain(changes: pl.DataFrame, costs_a: pl.DataFrame, costs_b: pl.DataFrame,
             requests_a: pl.DataFrame, requests_b: pl.DataFrame) -> pl.DataFrame:
    """Add the active-cost delta of the hosts involved and why the part changed."""
    costs = (costs_a.select("host_id", pl.col("active").alias("active_a"), pl.col("active_cost").alias("cost_a"))
             .join(costs_b.select("host_id", pl.col("active").alias("active_b"), pl.col("active_cost").alias("cost_b"),
                                  pl.col("status").alias("status_b")), on="host_id", how="full", coalesce=True)
             .with_columns(pl.col("active_a", "active_b").fill_null(False), pl.col("cost_a", "cost_b").fill_null(0.0),
                           (pl.col("cost_b").fill_null(0.0) - pl.col("cost_a").fill_null(0.0)).alias("cost_delta")))

    def side(host: str) -> pl.DataFrame:
        return costs.select(pl.col("host_id").alias(host),
                            *[pl.col(c).alias(f"{host}_{c}") for c in ("active_a", "active_b", "status_b", "cost_delta")])

    status_a = requests_a.unique("request_id", keep="first").select("request_id", pl.col("status").alias("status_a"))
    status_b = requests_b.unique("request_id", keep="first").select("request_id", pl.col("status").alias("status_b"))
    explained = (changes.join(side("from_host"), on="from_host", how="left")
                 .join(side("to_host"), on="to_host", how="left")
                 .join(status_a, on="request_id", how="left").join(status_b, on="request_id", how="left"))
    moved_hosts = pl.col("from_host") != pl.col("to_host")
    hosts_cost_delta = (pl.col("from_host_cost_delta").fill_null(0.0)
                        + pl.when(moved_hosts | pl.col("from_host").is_null())
                        .then(pl.col("to_host_cost_delta").fill_null(0.0)).otherwise(0.0))
    reason = (
        pl.when((pl.col("kind") == "removed") & (pl.col("status_b") != "placed").fill_null(True))
        .then(pl.format("request {} in plan B", pl.col("status_b").fill_null("absent")))
        .when((pl.col("kind") == "added") & (pl.col("status_a") != "placed").fill_null(True))
        .then(pl.lit("request newly placed"))
        .when(pl.col("kind") == "resized").then(pl.lit("request split differently on this host"))
        .when(pl.col("from_host").is_not_null() & (pl.col("from_host_status_b") != "up").fill_null(False))
        .then(pl.format("host {} is {} in plan B", "from_host", "from_host_status_b"))
        .when(pl.col("from_host").is_not_null() & pl.col("from_host_status_b").is_null())
        .then(pl.format("host {} is gone in plan B", "from_host"))
        .when(pl.col("from_host").is_not_null() & pl.col("from_host_active_a").fill_null(False)
              & ~pl.col("from_host_active_b").fill_null(False))
        .then(pl.format("consolidation: host {} switched off", "from_host"))
        .when(pl.col("to_host").is_not_null() & ~pl.col("to_host_active_a").fill_null(False))
        .then(pl.format("spread onto newly active host {}", "to_host"))
        .otherwise(pl.lit("rebalanced"))
    )
    return (explained.with_columns(hosts_cost_delta.alias("hosts_cost_delta"), reason.alias("reason"))
            .select(list(_PART_COLUMNS)).cast(_PART_COLUMNS)
            .sort("kind", "request_id", "role", "replica", "from_host", "to_host", nulls_last=True))


def _utilisation(plan_a: PlanDir, plan_b: PlanDir) -> pl.DataFrame:
    def fleet(plan: PlanDir, suffix: str) -> pl.DataFrame:
        totals = plan.hosts_out.select(*[pl.col(f"{r}_used").sum().cast(pl.Float64).alias(f"{r}_used") for r in RESOURCES],
                                       *[pl.col(f"{r}_capacity").sum().cast(pl.Float64).alias(f"{r}_capacity")
                                         for r in RESOURCES])
        return pl.DataFrame({
            "resource": list(RESOURCES),
            f"used_{suffix}": [totals[f"{r}_used"][0] for r in RESOURCES],
            f"capacity_{suffix}": [totals[f"{r}_capacity"][0] for r in RESOURCES],
        }).with_columns(pl.when(pl.col(f"capacity_{suffix}") > 0)
                        .then(pl.col(f"used_{suffix}") / pl.col(f"capacity_{suffix}")).otherwise(0.0)
                        .alias(f"utilisation_{suffix}"))

    return (fleet(plan_a, "a").join(fleet(plan_b, "b"), on="resource", how="inner", maintain_order="left")
            .with_columns((pl.col("utilisation_b") - pl.col("utilisation_a")).alias("utilisation_delta")))


def _planner_reasons(parts: pl.DataFrame, moves: pl.DataFrame | None) -> pl.DataFrame:
    """An incremental plan B knows why each running request moved (moves.parquet): its kind and reason
    replace the guess for that request's moved, removed and resized parts."""
    if moves is None or moves.height == 0:
        return parts
    why = moves.unique("request_id", keep="first").select("request_id", pl.format("{}: {}", "kind", "reason")
                                                           .alias("planner_reason"))
    return (parts.join(why, on="request_id", how="left")
            .with_columns(pl.when(pl.col("planner_reason").is_not_null() & (pl.col("kind") != "added"))
                          .then(pl.col("planner_reason")).otherwise(pl.col("reason")).alias("reason"))
            .drop("planner_reason"))


def group_by_reason(parts: pl.DataFrame) -> pl.DataFrame:
    """Part changes per reason: parts, requests, GiB of RAM and storage that changed host, hosts' Δ$/h."""
    return (parts.group_by("reason").agg(pl.len().alias("parts"), pl.col("request_id").n_unique().alias("requests"),
                                         (pl.col("ram_gib") + pl.col("storage_gib")).sum().alias("gib"),
                                         pl.col("hosts_cost_delta").sum().alias("hosts_cost_delta"))
            .sort(["parts", "reason"], descending=[True, False]))


def demand_weight() -> pl.Expr:
    """A request's priority-weighted demand: priority × (vcpu + ram_gib / 4 + 8 × gpu)."""
    return pl.col("priority") * (pl.col("vcpu") + pl.col("ram_gib") / 4 + 8 * pl.col("gpu"))


def weighted_demand(requests: pl.DataFrame, requests_out: pl.DataFrame) -> float:
    """Priority-weighted demand placed: the demand_weight of the requests placed."""
    placed = requests.join(requests_out.filter(pl.col("status") == "placed").select("request_id"), on="request_id")
    if placed.height == 0:
        return 0.0
    return float(placed.select(demand_weight().sum()).item())


def active_cost(hosts: pl.DataFrame, shards: pl.DataFrame) -> float:
    """Hourly cost of the hosts that hold a shard or existing load."""
    loaded = hosts.filter(pl.sum_horizontal(pl.col("^used_.*$")) > 0)["host_id"].to_list()
    active = set(shards["host_id"].to_list()) | set(loaded)
    return float(hosts.filter(pl.col("host_id").is_in(list(active)))["cost_per_hour"].sum())


def placed_demand(plan: PlanDir) -> float:
    """A plan directory's priority-weighted demand placed (real requests: blocks are reserved, not placed)."""
    return weighted_demand(plan.requests, plan.requests_out)


def diff_plans(dir_a: str | Path | PlanDir, dir_b: str | Path | PlanDir, moved_only: bool | None = None) -> PlanDiff:
    """What changed from plan A to plan B, part by part and in cost and utilisation. When B is an edit of
    what ran (its moves.parquet) the planner's reasons are used, and by default (`moved_only`) only the
    running requests' changes are listed: what moved and why, not the new requests' placements."""
    plan_a = dir_a if isinstance(dir_a, PlanDir) else read_plan_dir(dir_a)
    plan_b = dir_b if isinstance(dir_b, PlanDir) else read_plan_dir(dir_b)
    costs_a, costs_b = _host_costs(plan_a), _host_costs(plan_b)
    parts = _explain(_pair_parts(_parts(plan_a), _parts(plan_b)), costs_a, costs_b,
                     plan_a.requests_out, plan_b.requests_out)
    incremental = plan_b.moves is not None
    parts = _planner_reasons(parts, plan_b.moves)
    if moved_only if moved_only is not None else incremental:
        running = plan_a.shards.select("request_id").unique()
        parts = parts.join(running, on="request_id", how="semi")

    placed_a = plan_a.requests_out.filter(pl.col("status") == "placed").select("request_id").unique()
    placed_b = plan_b.requests_out.filter(pl.col("status") == "placed").select("request_id", "n_hosts").unique("request_id")
    reasons_b = plan_b.requests_out.unique("request_id", keep="first").select("request_id", "status", "reason")
    newly_unplaced = (placed_a.join(placed_b, on="request_id", how="anti")
                      .join(reasons_b, on="request_id", how="left")
                      .select("request_id", pl.coalesce("reason", pl.format("{} in plan B", pl.col("status")),
                                                        pl.lit("absent from plan B")).alias("reason"))
                      .sort("request_id"))
    newly_placed = placed_b.join(placed_a, on="request_id", how="anti").sort("request_id")

    def total(frame: pl.DataFrame, column: str) -> float:
        return float(frame.get_column(column).sum() or 0.0)

    return PlanDiff(
        parts=parts,
        newly_unplaced=newly_unplaced,
        newly_placed=newly_placed,
        utilisation=_utilisation(plan_a, plan_b),
        active_hosts_cost_a=total(costs_a, "active_cost"),
        active_hosts_cost_b=total(costs_b, "active_cost"),
        requests_cost_a=total(plan_a.requests_out, "cost_per_hour"),
        requests_cost_b=total(plan_b.requests_out, "cost_per_hour"),
        active_hosts_a=int(costs_a.get_column("active").sum()),
        active_hosts_b=int(costs_b.get_column("active").sum()),
        plan_a=str(plan_a.path) if plan_a.path else "A",
        plan_b=str(plan_b.path) if plan_b.path else "B",
        placed_demand_a=placed_demand(plan_a),
        placed_demand_b=placed_demand(plan_b),
        by_reason=group_by_reason(parts),
        incremental=incremental,
    )


def _money(value: float) -> str:
    return f"{value:+.2f}" if value else "0.00"


def render_diff(diff: PlanDiff) -> Table:
    """A rich table of every change, with the cost summary as its caption."""
    table = Table(title=f"Plan diff {diff.plan_a} → {diff.plan_b}", show_lines=False)
    for header, justify in (("change", "left"), ("request", "left"), ("role", "left"), ("replica", "right"),
                            ("from", "left"), ("to", "left"), ("vcpu", "right"), ("ram GiB", "right"),
                            ("storage GiB", "right"), ("net Gbps", "right"), ("gpu", "right"),
                            ("hosts Δ$/h", "right"), ("why", "left")):
        table.add_column(header, justify=justify)
    for row in diff.to_frame().iter_rows(named=True):
        amounts = [("" if row[r] is None else f"{row[r]:g}") for r in RESOURCES]
        replica = "" if row["replica"] is None else str(row["replica"])
        cost = "" if row["hosts_cost_delta"] is None else _money(row["hosts_cost_delta"])
        table.add_row(row["kind"], row["request_id"], row["role"] or "", replica, row["from_host"] or "",
                      row["to_host"] or "", *amounts, cost, row["reason"] or "")
    summary = diff.summary()
    table.caption = (f"{summary['moved']} moved, {summary['added']} added, {summary['removed']} removed, "
                     f"{summary['resized']} resized; {summary['newly_unplaced']} newly unplaced, "
                     f"{summary['newly_placed']} newly placed; "
                     f"active hosts {diff.active_hosts_a} → {diff.active_hosts_b}, "
                     f"cost {diff.active_hosts_cost_a:.2f} → {diff.active_hosts_cost_b:.2f} $/h "
                     f"({_money(diff.active_hosts_cost_delta)})")
    return table


def render_reasons(diff: PlanDiff) -> Table:
    """The part changes grouped by why they happened."""
    table = Table(title="Changes by reason" + (" (the planner's, from moves.parquet)" if diff.incremental else ""))
    for header in ("reason", "parts", "requests", "GiB moved", "hosts Δ$/h"):
        table.add_column(header, justify="left" if header == "reason" else "right")
    for row in (diff.by_reason if diff.by_reason is not None else pl.DataFrame()).iter_rows(named=True):
        table.add_row(row["reason"] or "", str(row["parts"]), str(row["requests"]), str(row["gib"]),
                      _money(row["hosts_cost_delta"] or 0.0))
    return table


def render_summary(diff: PlanDiff) -> Table:
    """A rich table of cost and fleet utilisation in A and B."""
    table = Table(title="Cost and utilisation")
    for header in ("figure", "plan A", "plan B", "Δ"):
        table.add_column(header, justify="left" if header == "figure" else "right")
    table.add_row("active hosts", str(diff.active_hosts_a), str(diff.active_hosts_b),
                  f"{diff.active_hosts_b - diff.active_hosts_a:+d}")
    table.add_row("active hosts $/h", f"{diff.active_hosts_cost_a:.2f}", f"{diff.active_hosts_cost_b:.2f}",
                  _money(diff.active_hosts_cost_delta))
    table.add_row("requests $/h", f"{diff.requests_cost_a:.2f}", f"{diff.requests_cost_b:.2f}",
                  _money(diff.requests_cost_delta))
    table.add_row("placed priority-weighted demand", f"{diff.placed_demand_a:,.0f}", f"{diff.placed_demand_b:,.0f}",
                  f"{diff.placed_demand_b - diff.placed_demand_a:+,.0f}")
    for row in diff.utilisation.iter_rows(named=True):
        table.add_row(f"{row['resource']} used/capacity", f"{row['utilisation_a']:.1%}", f"{row['utilisation_b']:.1%}",
                      f"{row['utilisation_delta'] * 100:+.1f} pp")
    return table
