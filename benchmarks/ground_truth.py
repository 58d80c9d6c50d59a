"""Where the gap lies on a small fleet: the engine's plan at short and long limits against CP-SAT alone over
every host for much longer, and the bounds each proves.

On seeded fleets small enough for one CP-SAT model over every (request, host) pair (40 hosts × 100 requests by
default, the generator of benchmarks/scale.py), side by side in one run:

- `shardplan plan --time-limit T` for each T (benchmarks/scale.py's run: its own process, wall-clock limits),
  objective and bound as plan.json reports them;
- the warm start (the best of the construction heuristics) and the pool LP over the same problem;
- CP-SAT alone on the full model (top_k large enough that every host that passes the filters is a candidate),
  hinted with the warm start, for `--cpsat-limit` seconds on `--workers` workers: its objective and bound.

If a long solve lands far below the engine's plan at the limits the scale runs use, the gap at scale is a search
problem as much as a bound problem (issue 15: "a bound that proves the plan at scale").

    python benchmarks/ground_truth.py [--hosts 40] [--seeds 11] [--limits 60,300] [--cpsat-limit 600] [--workers 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402


def long_solve(n_hosts: int, seed: int, limit: float, workers: int, data_dir: Path) -> dict:
    """Warm start, pool LP and CP-SAT alone over every host (hinted with the warm start), in $/h."""
    from benchmarks.bounds import fleet_tables, staged_problem
    from shardplan.models.placement import solve_placement
    from shardplan.models.pool_bound import pool_bound
    from shardplan.models.problem import COST_UNITS_PER_DOLLAR, evaluate
    from shardplan.planner.search.candidates import host_pools
    from shardplan.planner.validate.options import PlanOptions

    hosts, requests = fleet_tables(n_hosts, seed, data_dir)
    fleet, start, _, problem = staged_problem(hosts, requests, PlanOptions(top_k=hosts.height))
    hint = start.assignment.reordered(start.order)
    lp = pool_bound(problem, host_pools(fleet, requests, start.order, problem.free), 60)
    began = time.perf_counter()
    solution = solve_placement(dataclasses.replace(problem, time_limit_s=limit, wall_limit_s=limit,
                                                   deterministic=False, workers=workers), hint)
    result = solution.result
    return {"warm_start": evaluate(problem, hint).total / COST_UNITS_PER_DOLLAR, "warm_start_heuristic": start.heuristic,
            "pool_lp": lp.objective / COST_UNITS_PER_DOLLAR if lp.objective is not None else None,
            "cpsat_status": result.status.value, "cpsat_objective": result.objective / COST_UNITS_PER_DOLLAR,
            "cpsat_bound": result.best_bound / COST_UNITS_PER_DOLLAR, "cpsat_wall_s": round(time.perf_counter() - began, 1),
            "pairs": sum(len(c) for c in problem.compute_candidates)}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.scale import run_one

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--seeds", default="11")
    parser.add_argument("--limits", default="60,300", help="the engine's --time-limit values")
    parser.add_argument("--cpsat-limit", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="shardplan-truth-") as tmp:
        work = Path(tmp)
        for seed in [int(s) for s in args.seeds.split(",")]:
            truth = long_solve(args.hosts, seed, args.cpsat_limit, args.workers, work)
            engine = {}
            for limit in [float(t) for t in args.limits.split(",")]:
                run = run_one(args.hosts, limit, seed, False, work, data_dir=work)
                engine[f"{limit:g}"] = {k: run[k] for k in ("objective", "best_bound", "gap", "placed", "wall_s",
                                                           "solver", "violations")}
            rows.append({"hosts": args.hosts, "requests": int(2.5 * args.hosts), "seed": seed, **truth,
                         "engine": engine})
    table = []
    for r in rows:
        table.append([r["seed"], "warm start", r["warm_start"], r["pool_lp"], "", ""])
        for limit, e in r["engine"].items():
            table.append([r["seed"], f"engine T {limit} s", e["objective"], e["best_bound"], e["placed"], e["wall_s"]])
        table.append([r["seed"], f"CP-SAT alone, {args.cpsat_limit:g} s × {args.workers}", r["cpsat_objective"],
                      r["cpsat_bound"], "", r["cpsat_wall_s"]])
    print_table(f"{args.hosts} hosts × {int(2.5 * args.hosts)} requests: plans and bounds ($/h)",
                ("seed", "plan", "objective", "bound", "placed", "wall s"), table, digits=1)
    write_json_atomic(results_path("ground_truth"), {"cpsat_limit_s": args.cpsat_limit, "workers": args.workers,
                                                     "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
