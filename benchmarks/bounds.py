"""Bounds at scale, side by side: the pool LP (HiGHS array API), the Lagrangian bound and the zone-aggregate
LP on the same placement problem, against the same plan (the warm start), each with its wall time.

For each size (hosts, 2.5 requests per host, the seeded generator of benchmarks/scale.py) the engine's own
stages build the problem: fleet, warm start, candidates (the model's top_k classes plus the warm start's
hosts). Each bound then runs alone with `--time-limit` seconds; gap = (plan − bound) / plan. Target
(issue 15): at 2,000 × 5,000 the reported gap ≤ 10%.

    python benchmarks/bounds.py [--sizes 500,2000] [--time-limit 30] [--seed 11] [--data DIR]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402


def fleet_tables(n_hosts: int, seed: int, data_dir: Path | None):
    """The seeded fleet of benchmarks/scale.py, kept in `data_dir` between runs when given."""
    import polars as pl

    from shardplan.data.generator import generate_fleet

    folder = None if data_dir is None else data_dir / f"{n_hosts}-seed{seed}"
    if folder is not None and (folder / "requests.parquet").exists():
        return pl.read_parquet(folder / "hosts.parquet"), pl.read_parquet(folder / "requests.parquet")
    hosts, requests = generate_fleet(n_hosts, int(2.5 * n_hosts), seed=seed)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        hosts.write_parquet(folder / "hosts.parquet")
        requests.write_parquet(folder / "requests.parquet")
    return hosts, requests


def staged_problem(hosts, requests, options):
    """The engine's own stages up to the model: fleet, warm start, candidates (the options' top_k classes plus the
    warm start's hosts) and the placement problem."""
    from shardplan.planner.engine import build_problem, warm_start
    from shardplan.planner.search.candidates import build_fleet, find_candidates

    fleet = build_fleet(hosts)
    start = warm_start(fleet, requests, options)
    candidates = find_candidates(fleet, requests, options, must_include=start.assignment.hosts_per_request())
    return fleet, start, candidates, build_problem(fleet, requests, candidates, options, start.order)


def measure(n_hosts: int, seed: int, limit: float, data_dir: Path | None) -> list[dict]:
    from shardplan.models.lagrangian import lagrangian_bound
    from shardplan.models.lp_bound import aggregate_bound
    from shardplan.models.pool_bound import pool_bound, request_classes
    from shardplan.models.problem import COST_UNITS_PER_DOLLAR, evaluate
    from shardplan.planner.engine import complete_candidates
    from shardplan.planner.search.candidates import host_pools
    from shardplan.planner.validate.options import PlanOptions

    hosts, requests = fleet_tables(n_hosts, seed, data_dir)
    fleet, start, candidates, problem = staged_problem(hosts, requests, PlanOptions())
    plan_value = evaluate(problem, start.assignment.reordered(start.order)).total
    began = time.perf_counter()
    pools = host_pools(fleet, requests, start.order, problem.free)
    pools_s = time.perf_counter() - began
    runs = {
        "pool LP (highspy)": lambda: pool_bound(problem, pools, limit),
        "Lagrangian": lambda: lagrangian_bound(problem, limit, upper=plan_value,
                                               complete=complete_candidates(candidates, requests, start.order)),
        "zone-aggregate LP (PuLP)": lambda: aggregate_bound(problem, limit),
    }
    rows = []
    for name, run in runs.items():
        began = time.perf_counter()
        result = run()
        wall = time.perf_counter() - began + (pools_s if name.startswith("pool") else 0.0)
        bound = result.best_bound
        rows.append({"hosts": n_hosts, "requests": requests.height, "bound": name, "solver": result.solver,
                     "status": str(result.status), "wall_s": round(wall, 2), "time_limit_s": limit,
                     "plan_objective": plan_value / COST_UNITS_PER_DOLLAR, "warm_start": start.heuristic,
                     "best_bound": None if bound is None else bound / COST_UNITS_PER_DOLLAR,
                     "gap": None if bound is None else round((plan_value - bound) / plan_value, 4),
                     "pools": pools.n_compute + pools.n_storage if name.startswith("pool") else None,
                     "request_classes": int(request_classes(problem, pools).max() + 1)
                     if name.startswith("pool") else None})
        print(f"{n_hosts} hosts, {name}: {rows[-1]['gap']} in {rows[-1]['wall_s']} s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per bound")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=None, help="folder that keeps the generated fleets between runs")
    args = parser.parse_args(argv)
    report = []
    for size in (int(s) for s in args.sizes.split(",")):
        report.extend(measure(size, args.seed, args.time_limit, args.data))
    print_table("Bounds on the same problem against the warm start's plan (gap = (plan − bound) / plan; "
                "target ≤ 10% at 2,000 × 5,000)",
                ["hosts", "requests", "bound", "status", "wall s", "plan $", "bound $", "gap", "pools",
                 "request classes"],
                [(r["hosts"], r["requests"], r["bound"], r["status"], r["wall_s"], r["plan_objective"],
                  r["best_bound"], r["gap"], r["pools"], r["request_classes"]) for r in report], digits=4)
    path = write_json_atomic(results_path("bounds"), {"time_limit_s": args.time_limit, "seed": args.seed,
                                                      "runs": report})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
