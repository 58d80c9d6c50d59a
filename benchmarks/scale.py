"""Scale: plan seeded fleets of 500, 1,000 and 2,000 hosts with 2.5 requests per host.

Each size runs in its own subprocess so its peak memory (max RSS) is its own. Figures: wall time
of the whole plan (candidates, FFD, CP-SAT/LNS, LP bound, checker), peak memory, status, gap,
placed requests against FFD in the same run. Target (issue 2): 2,000 hosts × 5,000 requests in
≤ 300 s on 2 cores with ≤ 4 GiB peak memory and a reported gap.

    python benchmarks/scale.py [--sizes 500,1000,2000] [--time-limit 150]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402


def run_one(n_hosts: int, time_limit: float, seed: int, deterministic: bool = False) -> dict:
    """In this process: generate, plan, check; report figures (called in a child process)."""
    from planner.checker import check_plan
    from planner.engine import plan
    from planner.fleet import generate_fleet
    from planner.options import PlanOptions

    hosts, requests = generate_fleet(n_hosts, int(2.5 * n_hosts), seed=seed)
    stages: dict[str, float] = {}
    last = [time.perf_counter(), None]

    def stage(name: str) -> None:
        now = time.perf_counter()
        if last[1] is not None:
            stages[last[1]] = round(now - last[0], 2)
        last[0], last[1] = now, name

    start = time.perf_counter()
    options = PlanOptions(time_limit_s=time_limit, workers=2, seed=0, deterministic=deterministic)
    result = plan(hosts, requests, options, progress=stage)
    stage("check")
    violations = check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict())
    stage("end")
    wall = time.perf_counter() - start
    j = result.plan_json
    return {"hosts": n_hosts, "requests": requests.height, "wall_s": round(wall, 1), "stages_s": stages,
            "status": j["status"], "solver": j["solver"], "objective": j["objective"], "best_bound": j["best_bound"],
            "gap": j["gap"], "placed": j["placed"], "ffd_placed": j["baseline_ffd"]["placed"],
            "ffd_objective": j["baseline_ffd"]["objective"], "pairs": j["candidates"]["pairs"],
            "lns": j.get("lns"), "ruin_recreate": j.get("ruin_recreate"), "violations": len(violations)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--time-limit", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--deterministic", action="store_true",
                        help="CP-SAT deterministic time (reproducible, wall time varies); default: wall-clock limits")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        figures = run_one(args.child, args.time_limit, args.seed, args.deterministic)
        figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(figures))
        return 0
    rows, report = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        child = subprocess.run([sys.executable, __file__, "--child", str(size), "--time-limit", str(args.time_limit),
                                "--seed", str(args.seed)] + (["--deterministic"] if args.deterministic else []),
                               capture_output=True, text=True, cwd=ROOT)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        report.append(figures)
        rows.append((figures["hosts"], figures["requests"], figures["pairs"], figures["wall_s"], figures["peak_rss_mib"],
                     figures["status"], figures["gap"], figures["placed"], figures["ffd_placed"],
                     (figures["objective"] / figures["ffd_objective"] - 1) * 100, figures["solver"], figures["violations"]))
        print(f"{size} hosts done in {figures['wall_s']} s", file=sys.stderr)
    print_table(f"Scale (time limit {args.time_limit:g} s, 2 workers; target 2,000 × 5,000 ≤ 300 s, ≤ 4 GiB)",
                ["hosts", "requests", "pairs", "wall s", "peak MiB", "status", "gap", "placed", "FFD placed",
                 "objective % vs FFD", "solver", "violations"], rows, digits=3)
    path = write_json_atomic(results_path("scale"), {"time_limit_s": args.time_limit, "deterministic": args.deterministic,
                                                      "runs": report})
    print(f"wrote {path}")
    return 1 if any(r["violations"] for r in report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
