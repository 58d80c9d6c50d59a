"""`shardplan explain`: where each part of a request went and why, or why it stayed unplaced.

Works from a plan directory alone: the filter counts are those the solver saw (`filters.parquet`); the
candidate hosts come from the filters re-run on `inputs/` with the options recorded in `plan.json`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from shardplan.models.problem import COST_UNITS_PER_DOLLAR
from shardplan.plandir import FILTERS_FILE, cast_to_schema, read_plan_dir
from shardplan.planner.search.candidates import (
    Fleet,
    build_fleet,
    find_candidates,
    modelled_slowdown,
    remote_memory,
    speed_deficit,
    speed_prices,
)
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import FILTERS_SCHEMA


@dataclass(frozen=True)
class Explanation:
    """A request's outcome with its parts (placed) or the filter counts that ruled hosts out."""

    request: dict
    outcome: dict
    parts: pl.DataFrame
    filters: pl.DataFrame
    candidates: int
    candidate_hosts: pl.DataFrame
    residual: pl.DataFrame  # per resource: candidate hosts whose capacity left after the plan is short
    running: dict | None = None  # re-planning: was it running, did it stay or move, and why
    remote: dict | None = None   # placed with remote memory: how much, where, its rule's price and slowdown
    terms: list[str] = dataclasses.field(default_factory=list)  # the speed and hot-spot terms, in words


def _options(plan: dict) -> PlanOptions:
    return PlanOptions.recorded(plan.get("options"))


def explain_request(plan_dir: str | Path, request_id: str) -> Explanation:
    plan_dir = Path(plan_dir)
    read = read_plan_dir(plan_dir)
    hosts, requests = read.hosts, read.requests
    outcome = read.requests_out.filter(pl.col("request_id") == request_id)
    if outcome.height == 0:
        raise KeyError(request_id)
    options = _options(read.plan)
    index = requests.with_row_index("_i").filter(pl.col("request_id") == request_id)["_i"][0]
    fleet = build_fleet(hosts)
    one = requests.slice(int(index), 1)
    shards = read.shards.filter(pl.col("request_id") == request_id)
    # the hosts its parts are on were candidates of the model even when ranked below top_k (the search
    # before the model sees every host that passes the filters, and the model keeps the hosts it used)
    position = {h: i for i, h in enumerate(fleet.host_ids)}
    candidates = find_candidates(fleet, one, options, must_include=[{position[h] for h in shards["host_id"].to_list()}])
    host_tags = hosts.select("host_id", "host_class", "zone", "rack", "storage_type", "gpu_model", "cost_per_hour",
                             "status")
    parts = shards.join(host_tags, on="host_id", how="left").sort("shard")
    cand_hosts = np.union1d(candidates.compute[0], candidates.storage[0]).astype(int)
    candidate_hosts = host_tags.with_row_index("_h").filter(pl.col("_h").is_in(cand_hosts.tolist())).drop("_h")
    residual = _residual_shortfall(read.hosts_out, one.row(0, named=True), candidate_hosts["host_id"].to_list())
    stored = plan_dir / FILTERS_FILE
    # the counts the solver saw; a plan directory of an older version has none: the filters' counts on this request
    filters = (cast_to_schema(pl.read_parquet(stored), FILTERS_SCHEMA, str(stored))
               .filter(pl.col("request_id") == request_id) if stored.exists() else candidates.reasons)
    return Explanation(one.row(0, named=True), outcome.row(0, named=True), parts,
                       filters.drop("request_id").sort(["role", "hosts"], descending=[False, True]),
                       len(candidates.compute[0]), candidate_hosts, residual, _running(read, request_id),
                       _remote(one, shards, options),
                       _term_lines(one, shards, fleet, position, read.hosts_out, options))


def _term_lines(one: pl.DataFrame, shards: pl.DataFrame, fleet: Fleet, position: dict[str, int],
                hosts_out: pl.DataFrame, options: PlanOptions) -> list[str]:
    """The speed and hot-spot terms as they touch this request: what its parts' slower hosts cost it (by the
    planner's own rule, candidates.speed_prices and speed_deficit), and which of its hosts the plan leaves
    past the hot-spot threshold (vcpu or RAM, after the whole plan)."""
    lines = []
    request = one.row(0, named=True)
    compute = shards.filter(pl.col("vcpu") > 0)
    price = speed_prices(one, options)[0] / COST_UNITS_PER_DOLLAR
    if price and compute.height and fleet.up.any():
        deficit = speed_deficit(fleet)
        at = [position[h] for h in compute["host_id"].to_list()]
        cost = price * float(sum(v * deficit[h] for v, h in zip(compute["vcpu"].to_list(), at)))
        scores = ", ".join(f"{s:g}" for s in sorted({float(fleet.cpu_score[h]) for h in at}))
        best = float(fleet.cpu_score[fleet.up].max())
        lines.append(f"speed: vcpu on hosts of cpu_score {scores} (fastest up host {best:g}): {cost:.3f} $/h "
                     f"at {price:g} $/h per vcpu per unit of score ({request['latency_class']})")
    mine = hosts_out.filter(pl.col("host_id").is_in(shards["host_id"].unique().to_list()))
    for resource in ("vcpu", "ram_gib"):
        hot = mine.filter(pl.col(f"{resource}_capacity") > 0).filter(
            pl.col(f"{resource}_used") > options.hot_spot_threshold * pl.col(f"{resource}_capacity"))
        for row in hot.iter_rows(named=True):
            share = row[f"{resource}_used"] / row[f"{resource}_capacity"]
            lines.append(f"hot spot: {row['host_id']} {resource} at {100 * share:.0f}% after the plan (threshold "
                         f"{100 * options.hot_spot_threshold:.0f}%; {options.hot_spot_price:g} $/h when the plan "
                         f"put it there)")
    return lines


def _remote(one: pl.DataFrame, shards: pl.DataFrame, options: PlanOptions) -> dict | None:
    """The request's remote memory by the rule the plan was made with (options.remote_memory_pricing)."""
    memory_parts = shards.filter((pl.col("vcpu") == 0) & (pl.col("ram_gib") > 0))
    if memory_parts.height == 0:
        return None
    held = int(memory_parts["ram_gib"].sum())
    rule = remote_memory(one, options)
    ram = int(one["ram_gib"][0])
    return {"gib": held, "hosts": memory_parts["host_id"].to_list(), "pricing": options.remote_memory_pricing,
            "untouched": int(rule.untouched[0]), "touched": rule.touched(0, held), "cap": int(rule.cap[0]),
            "mbps_per_gib": rule.rate(0, held), "slowdown": modelled_slowdown(rule, 0, held, ram, options)}


def _running(read, request_id: str) -> dict | None:
    """Re-planning (inputs/current.parquet present): where the request ran, and whether it stayed, moved
    (its moves.parquet rows and their reason) or was dropped; None for a fresh packing."""
    if read.current is None:
        return None
    was = read.current.filter(pl.col("request_id") == request_id).sort("shard")
    if was.height == 0:
        return {"running": False}
    moves = None if read.moves is None else read.moves.filter(pl.col("request_id") == request_id)
    if moves is None or moves.height == 0:
        return {"running": True, "stayed": True, "hosts": sorted(set(was["host_id"].to_list()))}
    return {"running": True, "stayed": False, "kind": moves["kind"][0], "reason": moves["reason"][0],
            "moves": moves.select("shard", "from_host", "to_host", "vcpu", "ram_gib", "storage_gib", "gpu")}


def _residual_shortfall(hosts_out: pl.DataFrame, request: dict, host_ids: list[str]) -> pl.DataFrame:
    """For each resource, how many candidate hosts have less left after the plan than an even share
    (demand / max_shards) of the request: the capacity that ruled it out once others were placed."""
    hosts_out = hosts_out.filter(pl.col("host_id").is_in(host_ids))
    rows = []
    for resource in ("vcpu", "ram_gib", "gpu", "net_gbps", "storage_gib"):
        demand = request[resource]
        if not demand:
            continue
        share = demand if resource == "storage_gib" else demand / request["max_shards"]
        left = hosts_out[f"{resource}_capacity"] - hosts_out[f"{resource}_used"] - hosts_out[f"{resource}_reserved"]
        rows.append((resource, float(share), int((left < share).sum()), hosts_out.height))
    return pl.DataFrame(rows, schema={"resource": pl.Utf8, "needed_per_host": pl.Float64, "hosts_short": pl.Int64,
                                      "candidates": pl.Int64}, orient="row")


def render_explanation(explanation: Explanation, console: Console) -> None:
    r, o = explanation.request, explanation.outcome
    console.print(f"[bold]{r['request_id']}[/] ({r['app_type']} of {r['user_id']}): vcpu {r['vcpu']}, ram {r['ram_gib']} GiB, "
                  f"storage {r['storage_gib']} GiB ×{r['replicas']} ({r['storage_type'] or 'any tier'}), gpu {r['gpu']} "
                  f"{r['gpu_model'] or ''}, net {r['net_gbps']} Gbit/s; max_shards {r['max_shards']}, "
                  f"latency {r['latency_class']}, priority {r['priority']}")
    _render_running(explanation.running, console)
    if o["status"] == "placed":
        console.print(f"[green]placed[/] on {o['n_hosts']} hosts, cost share ${o['cost_per_hour']:.3f}/h, "
                      f"spread penalty {o['spread_penalty']:.2f}")
        if explanation.remote is not None:
            console.print(remote_line(explanation.remote))
        for line in explanation.terms:
            console.print(line)
        table = Table(title="parts")
        for col in ("shard", "role", "replica", "host_id", "host_class", "zone", "rack", "vcpu", "ram_gib",
                    "storage_gib", "gpu", "net_gbps", "why this host"):
            table.add_column(col)
        for p in explanation.parts.iter_rows(named=True):
            why = _why(p)
            table.add_row(*(str(p[c]) for c in ("shard", "role", "replica", "host_id", "host_class", "zone", "rack",
                                                "vcpu", "ram_gib", "storage_gib", "gpu", "net_gbps")), why)
        console.print(table)
    elif o["status"] == "reserved":
        console.print(f"[cyan]reserved[/]: a pre-allocation block held on {o['n_hosts']} host(s) for "
                      f"{r['user_id']}/{r['app_type']} (see reservations.parquet)")
    else:
        console.print(f"[red]unplaced[/]: {o['reason']}")
    console.print(f"{explanation.candidates} compute candidates were offered to the solver")
    if o["status"] == "unplaced" and explanation.residual.height:
        short = Table(title="after the plan: candidate hosts without room for an even share of it")
        for col in ("resource", "needed per host", "hosts short", "of candidates"):
            short.add_column(col)
        for row in explanation.residual.iter_rows():
            short.add_row(row[0], f"{row[1]:g}", str(row[2]), str(row[3]))
        console.print(short)
    table = Table(title="hosts ruled out, per filter (first filter a host failed)")
    for col in ("role", "reason", "hosts"):
        table.add_column(col)
    for f in explanation.filters.iter_rows(named=True):
        table.add_row(f["role"], f["reason"], str(f["hosts"]))
    console.print(table)


def _render_running(running: dict | None, console: Console) -> None:
    if running is None:
        return
    if not running["running"]:
        console.print("not running before this plan (new tonight, or waiting)")
    elif running["stayed"]:
        console.print(f"[green]stayed[/] where it runs ({', '.join(running['hosts'])}): moving it would not pay "
                      "for its disruption (options disruption_cost, move_cost_per_gib, move_horizon_h)")
    else:
        console.print(f"[yellow]{running['kind']}[/]: {running['reason']}")
        table = Table(title="parts that moved")
        for col in ("shard", "from", "to", "vcpu", "ram_gib", "storage_gib", "gpu"):
            table.add_column(col)
        for row in running["moves"].iter_rows():
            table.add_row(*[("—" if v is None else str(v)) for v in row])
        console.print(table)


def remote_line(remote: dict) -> str:
    """'32 GiB remote on h2: 30 GiB predicted untouched, 2 touched; 50 Mbit/s per GiB; slowdown 1.75%'."""
    where = ", ".join(remote["hosts"])
    rate = f"{remote['mbps_per_gib']} Mbit/s per GiB ({remote['mbps_per_gib'] * remote['gib'] / 1000:g} Gbit/s)"
    if remote["pricing"] == "flat":
        return (f"{remote['gib']} GiB remote on {where}: flat pricing, every GiB counted as touched; {rate}; "
                f"modelled slowdown {100 * remote['slowdown']:.2f}%")
    if remote["touched"] == 0:
        what = f"within its {remote['untouched']} GiB predicted untouched"
    else:
        what = (f"{remote['untouched']} GiB predicted untouched, {remote['touched']} touched "
                f"(at most {remote['cap']} GiB remote for its class)")
    return f"{remote['gib']} GiB remote on {where}: {what}; {rate}; modelled slowdown {100 * remote['slowdown']:.2f}%"


def _why(part: dict) -> str:
    if part["role"] in ("storage", "replica"):
        return f"{part['storage_type']} tier, copy {part['replica']} on its own rack"
    bits = []
    if part["gpu"]:
        bits.append(f"{part['gpu']}× {part['gpu_model']}")
    if part["role"] == "memory":
        bits.append("remote memory (no vcpu here)")
    bits.append(f"${part['cost_per_hour']}/h host")
    return ", ".join(bits)
