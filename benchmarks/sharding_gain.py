"""Sharding gain: sharded CP-SAT vs whole-VM CP-SAT vs first-fit decreasing, on the demo and seeded fleets.

For each fleet all plans run in this one process and every plan must pass the checker. Figures:
priority-weighted vcpu placed, priority-weighted demand placed (the objective's measure: priority ×
(vcpu + RAM GiB / 4 + 8 × GPU)), RAM placed, hourly cost of active hosts, cost per placed vcpu, the
solver's status/gap. Targets (issue 2): sharded places ≥ 25% more weighted demand than FFD and ≥ 10%
more than whole-VM CP-SAT, at no more cost per placed vcpu. The gains are given in both measures.

    python benchmarks/sharding_gain.py [--time-limit 60] [--fleets demo,1,2,3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402
from shardplan.data.generator import DEMO_HOSTS, DEMO_REQUESTS, DEMO_SEED, DEMO_ZONES, demo_fleet, generate_fleet  # noqa: E402
from shardplan.planner.engine import Plan, demand_units, plan, plan_ffd, unplaced_priority  # noqa: E402
from shardplan.planner.report.checker import check_plan  # noqa: E402
from shardplan.planner.validate.options import PlanOptions  # noqa: E402


def loaded_hosts(hosts: pl.DataFrame) -> set[str]:
    """Hosts that run existing load (active whatever the plan does)."""
    return set(hosts.filter((pl.col("used_vcpu") + pl.col("used_ram_gib") + pl.col("used_storage_gib")
                             + pl.col("used_gpu") > 0) | (pl.col("used_net_gbps") > 0))["host_id"].to_list())


def figures(result: Plan) -> dict:
    """Placed demand and cost of one plan (active = existing load or any shard)."""
    placed = result.requests_out.filter(pl.col("status") == "placed").select("request_id")
    requests = result.requests.join(placed, on="request_id")
    hosts = result.hosts
    used_hosts = set(result.shards["host_id"].to_list())
    loaded = loaded_hosts(hosts)
    active = used_hosts | loaded
    cost = float(hosts.filter(pl.col("host_id").is_in(list(active)))["cost_per_hour"].sum())
    new_cost = float(hosts.filter(pl.col("host_id").is_in(list(used_hosts - loaded)))["cost_per_hour"].sum())
    vcpu = int(requests["vcpu"].sum())
    demand = float((demand_units(requests, result.options) * unplaced_priority(requests, result.options)).sum())
    violations = check_plan(result.hosts, result.requests, result.shards, result.requests_out, result.options.to_dict())
    return {
        "placed": requests.height,
        "weighted_vcpu": int((requests["vcpu"] * requests["priority"]).sum()),
        "weighted_demand": round(demand, 1),
        "vcpu": vcpu,
        "ram_gib": int(requests["ram_gib"].sum()),
        "gpu": int(requests["gpu"].sum()),
        "active_cost_per_hour": round(cost, 3),
        "newly_active_cost_per_hour": round(new_cost, 3),
        "cost_per_placed_vcpu": round(cost / vcpu, 5) if vcpu else None,
        "status": result.plan_json["status"],
        "solver": result.plan_json["solver"],
        **phase_gains(result.plan_json),
        "gap": result.plan_json.get("gap"),
        "wall_s": result.plan_json["wall_s"],
        "violations": len(violations),
    }


def phase_gains(plan_json: dict) -> dict:
    """CP-SAT's status and what each search phase took off the objective ($/h-equivalent and % of where it
    started): ruin and recreate from the warm start, CP-SAT from the hint, LNS from CP-SAT's plan."""
    def drop(stats: dict | None) -> tuple[float | None, float | None]:
        if not stats:
            return None, None
        start, final = stats["start_objective"], stats["final_objective"]
        return round((start - final) / 1000, 1), round(100 * (start - final) / start, 4) if start else 0.0

    cp_sat = plan_json.get("cp_sat") or {}
    recreate, lns = drop(plan_json.get("ruin_recreate")), drop(plan_json.get("lns"))
    return {"cp_sat_status": cp_sat.get("status"), "cp_sat_objective": cp_sat.get("objective"),
            "ruin_recreate_gain": recreate[0], "ruin_recreate_gain_pct": recreate[1],
            "lns_gain": lns[0], "lns_gain_pct": lns[1],
            "lns_moves": (plan_json.get("lns") or {}).get("moves"), "lns_improved": (plan_json.get("lns") or {}).get("improved")}


def fleets(names: list[str], powered_down: float | None = None):
    """The demo and seeded fleets; `powered_down`: that share of each host class powered down instead of the
    generator's (0 gives the fleets of the runs before powered-down hosts, every up host loaded)."""
    for name in names:
        if name == "demo":
            yield "demo", *(demo_fleet() if powered_down is None else
                            generate_fleet(DEMO_HOSTS, DEMO_REQUESTS, DEMO_SEED, DEMO_ZONES, powered_down))
        elif powered_down is None:
            yield f"seed {name}", *generate_fleet(200, 400, seed=int(name))
        else:
            yield f"seed {name}", *generate_fleet(200, 400, seed=int(name), powered_down=powered_down)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--fleets", default="demo,1,2,3")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--powered-down", type=float, default=None,
                        help="share of each host class powered down (default: the generator's; 0: the fleets of "
                             "the runs before powered-down hosts, comparable with them)")
    parser.add_argument("--deterministic", action="store_true",
                        help="CP-SAT deterministic time (reproducible, wall time varies); default: wall-clock limits")
    args = parser.parse_args(argv)
    base = PlanOptions(time_limit_s=args.time_limit, workers=args.workers, seed=0, deterministic=args.deterministic)
    rows, report = [], []
    for name, hosts, requests in fleets(args.fleets.split(","), args.powered_down):
        start = time.perf_counter()
        runs = {
            "ffd": plan_ffd(hosts, requests, base.replace(mode="whole"), sharded=False),
            "ffd-sharded": plan_ffd(hosts, requests, base, sharded=True),
            "whole cp-sat": plan(hosts, requests, base.replace(mode="whole")),
            "sharded cp-sat": plan(hosts, requests, base.replace(mode="sharded")),
        }
        got = {k: figures(v) for k, v in runs.items()}
        s, w, f = got["sharded cp-sat"], got["whole cp-sat"], got["ffd"]
        gain = {"vs_ffd": s["weighted_vcpu"] / f["weighted_vcpu"] - 1, "vs_whole": s["weighted_vcpu"] / w["weighted_vcpu"] - 1,
                "demand_vs_ffd": s["weighted_demand"] / f["weighted_demand"] - 1,
                "demand_vs_whole": s["weighted_demand"] / w["weighted_demand"] - 1,
                "cost_per_vcpu_ratio_vs_whole": s["cost_per_placed_vcpu"] / w["cost_per_placed_vcpu"],
                "cost_per_vcpu_ratio_vs_ffd": s["cost_per_placed_vcpu"] / f["cost_per_placed_vcpu"]}
        report.append({"fleet": name, "hosts": hosts.height, "requests": requests.height, "plans": got, "gain": gain,
                       "wall_s": round(time.perf_counter() - start, 1)})
        for method, g in got.items():
            rows.append((name, method, g["placed"], g["weighted_vcpu"], g["weighted_demand"], g["ram_gib"],
                         g["active_cost_per_hour"],
                         g["cost_per_placed_vcpu"], g["status"], g["gap"], g["wall_s"], g["violations"]))
    print_table("Sharding gain (same process, every plan checked)",
                ["fleet", "method", "placed", "prio×vcpu", "prio×demand", "RAM GiB", "active $/h", "$/h per vcpu", "status", "gap",
                 "wall s", "violations"], rows, digits=4)
    gains = [(r["fleet"], r["gain"]["vs_ffd"] * 100, r["gain"]["vs_whole"] * 100, r["gain"]["demand_vs_ffd"] * 100,
              r["gain"]["demand_vs_whole"] * 100, r["gain"]["cost_per_vcpu_ratio_vs_whole"],
              r["gain"]["cost_per_vcpu_ratio_vs_ffd"]) for r in report]
    print_table("Sharded CP-SAT gain in priority-weighted vcpu and demand placed (target ≥ 25% vs FFD, ≥ 10% vs whole)",
                ["fleet", "vcpu % vs FFD", "vcpu % vs whole", "demand % vs FFD", "demand % vs whole",
                 "cost/vcpu ratio vs whole", "cost/vcpu ratio vs FFD"], gains)
    print_table("Search phases per plan: CP-SAT's status (the warm start is its hint) and what ruin and recreate "
                "and LNS took off the objective",
                ["fleet", "method", "cp-sat status", "ruin-recreate −$/h", "%", "LNS −$/h", "%", "LNS moves", "improving"],
                [(r["fleet"], m, g["cp_sat_status"], g["ruin_recreate_gain"], g["ruin_recreate_gain_pct"], g["lns_gain"],
                  g["lns_gain_pct"], g["lns_moves"], g["lns_improved"]) for r in report for m, g in r["plans"].items()
                 if m.endswith("cp-sat")])
    previous = results_path("sharding_gain")
    if previous.exists():  # side by side with the last published run
        import json

        before = {(r["fleet"], m): g for r in json.loads(previous.read_text())["fleets"] for m, g in r["plans"].items()}
        print_table(f"Against the last published run ({previous.name}): priority-weighted demand placed and wall time",
                    ["fleet", "method", "prio×demand before", "now", "change %", "wall s before", "now"],
                    [(r["fleet"], m, before[(r["fleet"], m)]["weighted_demand"], g["weighted_demand"],
                      100 * (g["weighted_demand"] / before[(r["fleet"], m)]["weighted_demand"] - 1),
                      before[(r["fleet"], m)]["wall_s"], g["wall_s"])
                     for r in report for m, g in r["plans"].items() if (r["fleet"], m) in before], digits=4)
    path = write_json_atomic(results_path("sharding_gain"), {"time_limit_s": args.time_limit, "workers": args.workers,
                                                              "powered_down": args.powered_down,
                                                              "deterministic": args.deterministic,
                                                              "fleets": report})
    print(f"wrote {path}")
    return 1 if any(g["violations"] for r in report for g in r["plans"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
