"""The cost function that reads the catalogue (issue 14): what each of its terms buys, measured side by side.

Every plan of one fleet runs in this one process, and every plan must pass the checker. Sections:

- **activation**: fleets with powered-down hosts of several classes and prices (the generator's
  POWERED_DOWN_SHARE). The hourly cost of the hosts a plan switches on, per unit of placed
  priority-weighted demand, for sharded FFD (hosts in table order, price-blind), whole-VM FFD, the engine
  run price-blind (every host at the fleet's mean cost_per_hour, in the objective and the candidate
  score alike; its plan is then priced at the real prices) and the engine as shipped. Targets: the engine
  ≤ 0.85× FFD and ≤ 0.95× price-blind, at equal or higher placed demand.
- **pond**: use-priced remote memory (the shipped default: a request's untouched GiB may sit remotely at
  near-zero traffic, touched GiB within its class's slowdown cap) against flat pricing (every remote GiB at
  one rate, none for latency class low) and against use pricing told nothing is untouched (PRICINGS), on
  the same fleets and on the same fleets with less DRAM (every
  host's ram_gib and used_ram_gib × f for f in DRAM_FACTORS). Figures: placed priority-weighted demand at
  equal DRAM, the least DRAM at which each pricing still places what flat pricing places on the full fleet,
  and the modelled slowdown of the placed requests. Targets (Pond's envelope): ≥ 7% more demand at equal
  DRAM or ≥ 7% less DRAM for the same demand, with slowdown ≤ 5% for ≥ 95% of placed requests.
- **needs**: the same fleets with performance needs stated (latency class low asks for a host at least as
  fast as the fleet's median cpu_score; db asks for NVMe-class IOPS). Every placed request must sit on
  qualifying hosts (invariant 10, checked here per part from the plan), and the cost of honouring the needs
  is the placed demand with them against the same run without them.

    python benchmarks/cost_model.py [--time-limit 30] [--fleets demo,1,2] [--sections activation,needs]

Writes benchmarks/results/cost_model.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402
from benchmarks.sharding_gain import figures, loaded_hosts  # noqa: E402
from shardplan.data.generator import POWERED_DOWN_SHARE, demo_fleet, generate_fleet  # noqa: E402
from shardplan.forecasting.demo_history import demo_history  # noqa: E402
from shardplan.forecasting.untouched import with_untouched  # noqa: E402
from shardplan.planner.engine import Plan, plan, plan_ffd  # noqa: E402
from shardplan.planner.validate.options import PlanOptions  # noqa: E402

SEEDED_HOSTS, SEEDED_REQUESTS = 200, 400
NEED_IOPS = 1_000_000.0
"""min_storage_iops asked by db requests in the needs section: more than one NVMe device (400,000) gives,
so only multi-device NVMe hosts qualify."""


def fleets(names: list[str], powered_down: float):
    for name in names:
        if name == "demo":  # its untouched memory predicted from its history, as the nightly does
            hosts, requests = demo_fleet()
            yield "demo", hosts, with_untouched(requests, demo_history(requests=requests))[0]
        else:
            yield f"seed {name}", *generate_fleet(SEEDED_HOSTS, SEEDED_REQUESTS, seed=int(name),
                                                  powered_down=powered_down)


def price_blind(hosts: pl.DataFrame) -> pl.DataFrame:
    """Every host at the fleet's mean cost_per_hour: the engine then minimises how many hosts it switches
    on, not what they cost."""
    return hosts.with_columns(pl.lit(float(hosts["cost_per_hour"].mean())).alias("cost_per_hour"))


def priced(result: Plan, hosts: pl.DataFrame) -> dict:
    """`figures` of a plan, at the prices of `hosts` (a price-blind plan is paid at the real prices)."""
    got = figures(dataclasses.replace(result, hosts=hosts))
    got["switched_on_per_demand"] = (round(got["newly_active_cost_per_hour"] / got["weighted_demand"], 6)
                                     if got["weighted_demand"] else None)
    got["switched_on"] = len(switched_on(result, hosts))
    return got


def switched_on(result: Plan, hosts: pl.DataFrame) -> set[str]:
    return set(result.shards["host_id"].to_list()) - loaded_hosts(hosts)


def activation(name: str, hosts: pl.DataFrame, requests: pl.DataFrame, base: PlanOptions) -> dict:
    runs = {
        "ffd-sharded": plan_ffd(hosts, requests, base, sharded=True),
        "ffd-whole": plan_ffd(hosts, requests, base.replace(mode="whole"), sharded=False),
        "price-blind": plan(price_blind(hosts), requests, base),
        "shardplan": plan(hosts, requests, base),
    }
    got = {method: priced(result, hosts) for method, result in runs.items()}
    dark = hosts.filter((pl.col("status") == "up") & ~pl.col("host_id").is_in(list(loaded_hosts(hosts))))
    engine = got["shardplan"]
    ratios = {}
    for anchor in ("ffd-sharded", "ffd-whole", "price-blind"):
        a = got[anchor]
        ratios[anchor] = {
            "cost_per_demand_ratio": (engine["switched_on_per_demand"] / a["switched_on_per_demand"]
                                      if a["switched_on_per_demand"] else None),
            "demand_ratio": engine["weighted_demand"] / a["weighted_demand"] if a["weighted_demand"] else None,
        }
    classes = (dark.group_by("host_class").agg(pl.len().alias("hosts"), pl.col("cost_per_hour").min().alias("min"),
                                               pl.col("cost_per_hour").max().alias("max")).sort("host_class"))
    return {"fleet": name, "hosts": hosts.height, "requests": requests.height, "powered_down": dark.height,
            "powered_down_classes": classes.to_dicts(), "plans": got, "ratios": ratios}


DRAM_FACTORS = (1.0, 0.95, 0.9, 0.85)
SAME_DEMAND = 0.995
"""A plan places 'the same demand' when it places at least this share of the reference (search noise)."""


def less_dram(hosts: pl.DataFrame, factor: float) -> pl.DataFrame:
    """Every host with `factor` of its DRAM, the load on it scaled alike (smaller DIMMs, same fill)."""
    if factor == 1.0:
        return hosts
    return hosts.with_columns((pl.col("ram_gib") * factor).floor().cast(pl.Int64),
                              (pl.col("used_ram_gib") * factor).floor().cast(pl.Int64))


def slowdowns(result: Plan) -> dict:
    placed = result.requests_out.filter(pl.col("status") == "placed")
    slow = placed["slowdown"].fill_null(0.0)
    return {"remote_gib": int(placed["remote_ram_gib"].fill_null(0).sum()),
            "with_remote": int((placed["remote_ram_gib"].fill_null(0) > 0).sum()),
            "share_slowdown_le_5pct": float((slow <= 0.05 + 1e-12).mean()) if placed.height else None,
            "slowdown_p95": float(slow.quantile(0.95)) if placed.height else None,
            "slowdown_max": float(slow.max()) if placed.height else None}


PRICINGS = ("flat", "use, none known untouched", "use")
"""flat: every remote GiB at one rate, none for class low, no cap (the rule before use pricing); use with
untouched_ram_gib 0 for every request: the same slowdown caps, but every GiB counted as touched (what the
untouched prediction is worth); use: as shipped."""


def pond(name: str, hosts: pl.DataFrame, requests: pl.DataFrame, base: PlanOptions) -> dict:
    runs: dict[str, dict[float, dict]] = {pricing: {} for pricing in PRICINGS}
    blind = requests.with_columns(untouched_ram_gib=pl.lit(0, dtype=pl.Int64))
    reference = None
    for factor in DRAM_FACTORS:
        fleet = less_dram(hosts, factor)
        for pricing in PRICINGS:
            result = plan(fleet, blind if pricing == "use, none known untouched" else requests,
                          base.replace(remote_memory_pricing=pricing.split(",")[0]))
            runs[pricing][factor] = {**priced(result, fleet), **slowdowns(result), "dram_gib": int(fleet["ram_gib"].sum())}
        if reference is None:
            reference = runs["flat"][factor]["weighted_demand"]
        if all(run[factor]["weighted_demand"] < SAME_DEMAND * reference for run in runs.values()):
            break  # neither pricing holds the reference demand with less DRAM
    least = {pricing: min((f for f, got in run.items() if got["weighted_demand"] >= SAME_DEMAND * reference),
                          default=None) for pricing, run in runs.items()}
    full = {pricing: run[1.0] for pricing, run in runs.items()}
    return {"fleet": name, "reference_demand": reference, "runs": {p: {str(f): g for f, g in run.items()}
                                                                   for p, run in runs.items()},
            "plans": {f"{p} f={f}": g for p, run in runs.items() for f, g in run.items()},
            "demand_ratio_at_equal_dram": full["use"]["weighted_demand"] / full["flat"]["weighted_demand"],
            "demand_ratio_vs_none_known": (full["use"]["weighted_demand"]
                                           / full["use, none known untouched"]["weighted_demand"]),
            "least_dram_factor": least,
            "dram_saving": (None if None in (least["use"], least["flat"]) else 1 - least["use"] / least["flat"]),
            "use_share_slowdown_le_5pct": full["use"]["share_slowdown_le_5pct"]}


def with_needs(hosts: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """Latency class low asks for the fleet's median cpu_score or better; db asks for NEED_IOPS."""
    median = float(hosts.filter(pl.col("status") == "up")["cpu_score"].median())
    return requests.with_columns(
        min_cpu_score=pl.when(pl.col("latency_class") == "low").then(median).otherwise(0.0),
        min_storage_iops=pl.when((pl.col("app_type") == "db") & (pl.col("storage_gib") > 0))
        .then(NEED_IOPS).otherwise(0.0))


def needs_met(result: Plan, hosts: pl.DataFrame, requests: pl.DataFrame) -> tuple[int, int]:
    """(placed requests with a stated need, of them on qualifying hosts in every part and copy)."""
    shards = (result.shards.join(hosts.select("host_id", "cpu_score", "storage_iops"), on="host_id")
              .join(requests.select("request_id", "min_cpu_score", "min_storage_iops"), on="request_id"))
    stated = shards.filter((pl.col("min_cpu_score") > 0) | (pl.col("min_storage_iops") > 0))
    bad = stated.filter(((pl.col("vcpu") > 0) & (pl.col("cpu_score") < pl.col("min_cpu_score") - 1e-9))
                        | ((pl.col("storage_gib") > 0) & (pl.col("storage_iops") < pl.col("min_storage_iops") - 1e-9)))
    asked = stated["request_id"].n_unique()
    return asked, asked - bad["request_id"].n_unique()


def needs(name: str, hosts: pl.DataFrame, requests: pl.DataFrame, base: PlanOptions) -> dict:
    stated = with_needs(hosts, requests)
    without, with_ = plan(hosts, requests, base), plan(hosts, stated, base)
    asked, met = needs_met(with_, hosts, stated)
    free, bound = priced(without, hosts), priced(with_, hosts)
    count = int(((stated["min_cpu_score"] > 0) | (stated["min_storage_iops"] > 0)).sum())
    return {"fleet": name, "requests_with_needs": count, "placed_with_needs": asked, "on_qualifying_hosts": met,
            "share_met": met / asked if asked else None, "plans": {"without needs": free, "with needs": bound},
            "demand_cost": 1 - bound["weighted_demand"] / free["weighted_demand"] if free["weighted_demand"] else None}


SECTIONS = {"activation": activation, "pond": pond, "needs": needs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--fleets", default="demo,1,2")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--powered-down", type=float, default=POWERED_DOWN_SHARE,
                        help="share of each host class powered down in the seeded fleets (the demo has its own)")
    parser.add_argument("--results", default="cost_model", help="name of the results file (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv)
    base = PlanOptions(time_limit_s=args.time_limit, workers=args.workers, seed=0)
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {sorted(SECTIONS)}")
    report: dict[str, list] = {s: [] for s in sections}
    start = time.perf_counter()
    for name, hosts, requests in fleets(args.fleets.split(","), args.powered_down):
        for section in sections:
            report[section].append(SECTIONS[section](name, hosts, requests, base))
    if "activation" in report:
        print_table("Price-aware activation: the hourly cost of the hosts a plan switches on, per placed "
                    "priority-weighted demand unit (real prices; every plan checked)",
                    ["fleet", "method", "prio×demand", "switched on", "their $/h", "$/h per 1,000 units", "violations"],
                    [(r["fleet"], m, g["weighted_demand"], g["switched_on"], g["newly_active_cost_per_hour"],
                      1000 * (g["switched_on_per_demand"] or 0), g["violations"])
                     for r in report["activation"] for m, g in r["plans"].items()], digits=4)
        print_table("shardplan against each anchor (target: cost per demand ≤ 0.85× FFD and ≤ 0.95× price-blind, "
                    "demand ≥ 1.0×)",
                    ["fleet", "anchor", "cost per demand ×", "demand ×"],
                    [(r["fleet"], a, x["cost_per_demand_ratio"], x["demand_ratio"])
                     for r in report["activation"] for a, x in r["ratios"].items()], digits=4)
    if "pond" in report:
        print_table("Remote memory priced by use against flat pricing, by DRAM (every host's RAM × f; every plan "
                    "checked)",
                    ["fleet", "pricing", "f", "DRAM GiB", "prio×demand", "remote GiB", "with remote",
                     "slowdown ≤ 5%", "p95", "max", "violations"],
                    [(r["fleet"], p, float(f), g["dram_gib"], g["weighted_demand"], g["remote_gib"], g["with_remote"],
                      g["share_slowdown_le_5pct"], g["slowdown_p95"], g["slowdown_max"], g["violations"])
                     for r in report["pond"] for p, run in r["runs"].items() for f, g in run.items()], digits=4)
        print_table("Pond's envelope (targets: ≥ 1.07× demand at equal DRAM, or ≥ 7% less DRAM for the same demand; "
                    "slowdown ≤ 5% for ≥ 95% of placed requests)",
                    ["fleet", "demand × flat, equal DRAM", "× none known untouched", "least DRAM f, flat",
                     "least DRAM f, use", "DRAM saved", "use: slowdown ≤ 5%"],
                    [(r["fleet"], r["demand_ratio_at_equal_dram"], r["demand_ratio_vs_none_known"],
                      r["least_dram_factor"]["flat"], r["least_dram_factor"]["use"], r["dram_saving"],
                      r["use_share_slowdown_le_5pct"])
                     for r in report["pond"]], digits=4)
    if "needs" in report:
        print_table("Performance needs: placed requests with a stated need on qualifying hosts, and what honouring "
                    "them costs in placed demand",
                    ["fleet", "with needs", "placed", "on qualifying hosts", "demand without", "demand with", "cost %",
                     "violations"],
                    [(r["fleet"], r["requests_with_needs"], r["placed_with_needs"], r["on_qualifying_hosts"],
                      r["plans"]["without needs"]["weighted_demand"], r["plans"]["with needs"]["weighted_demand"],
                      100 * (r["demand_cost"] or 0), r["plans"]["with needs"]["violations"])
                     for r in report["needs"]], digits=4)
    path = write_json_atomic(results_path(args.results), {"time_limit_s": args.time_limit, "workers": args.workers,
                                                          "powered_down": args.powered_down, "wall_s": round(time.perf_counter() - start, 1), **report})
    print(f"wrote {path}")
    violations = [g["violations"] for rows in report.values() for r in rows for g in r["plans"].values()]
    unmet = [r for r in report.get("needs", []) if r["share_met"] not in (None, 1.0)]
    return 1 if any(violations) or unmet else 0


if __name__ == "__main__":
    raise SystemExit(main())
