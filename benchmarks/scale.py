"""Scale: plan seeded fleets through the CLI, `shardplan plan --time-limit T`, and time the whole command.

For each size (hosts, 2.5 requests per host) and each time limit, the inputs are written as Parquet
and `shardplan plan` runs in its own process: its wall time is measured from outside (process start
to exit, so reading, search, bound, check and export all count) and its peak memory is the child's
max RSS. Figures beside it: status, gap, placed requests against first-fit decreasing in the same
run, whether the wall-clock cap fired, and `shardplan check` on the written plan. Targets (issue 10):
wall ≤ 1.1 × T + 5 s and peak memory ≤ 4 GiB at 2,000 hosts × 5,000 requests with T = 120 and 240.

    python benchmarks/scale.py [--sizes 500,1000,2000] [--time-limits 120,240] [--deterministic]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402


def run_one(n_hosts: int, time_limit: float, seed: int, deterministic: bool, workdir: Path) -> dict:
    """Generate the fleet, run the CLI on it in a child process, read back its plan."""
    from shardplan.data.generator import generate_fleet
    from shardplan.planner.report.checker import check_plan_dir

    hosts, requests = generate_fleet(n_hosts, int(2.5 * n_hosts), seed=seed)
    folder = workdir / f"{n_hosts}-{time_limit:g}"
    folder.mkdir(parents=True)
    hosts.write_parquet(folder / "hosts.parquet")
    requests.write_parquet(folder / "requests.parquet")
    env = {**os.environ, "SHARDPLAN_DETERMINISTIC": "1" if deterministic else "0"}
    command = [sys.executable, "-m", "shardplan", "plan", "--hosts", str(folder / "hosts.parquet"),
               "--requests", str(folder / "requests.parquet"), "--out", str(folder / "plan"),
               "--time-limit", f"{time_limit:g}", "--workers", "2", "--seed", "0", "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if child.returncode != 0:
        raise RuntimeError(f"shardplan plan exited {child.returncode}: {child.stderr[-3000:]}")
    plan_json = json.loads((folder / "plan" / "plan.json").read_text())
    violations = check_plan_dir(folder / "plan")
    budget = plan_json["budget"]
    return {"hosts": n_hosts, "requests": requests.height, "time_limit_s": time_limit, "deterministic": deterministic,
            "wall_s": round(wall, 1), "limit_s": round(1.1 * time_limit + 5, 1), "within_limit": wall <= 1.1 * time_limit + 5,
            # max RSS of all children so far; sizes run in increasing order, so the largest is this one's
            "peak_rss_mib": round(max(peak, before) / 1024, 1),
            "status": plan_json["status"], "solver": plan_json["solver"], "objective": plan_json["objective"],
            "best_bound": plan_json["best_bound"], "gap": plan_json["gap"], "placed": plan_json["placed"],
            "ffd_placed": plan_json["baseline_ffd"]["placed"], "ffd_objective": plan_json["baseline_ffd"]["objective"],
            "pairs": plan_json["candidates"]["pairs"], "cap_fired": budget["wall_clock_cap_fired"],
            "phases": budget["phases"], "violations": len(violations)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--time-limits", default="120,240")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic budgets (reproducible; the wall clock only caps); default: wall-clock limits")
    args = parser.parse_args(argv)
    rows, report = [], []
    with tempfile.TemporaryDirectory(prefix="shardplan-scale-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            for limit in (float(t) for t in args.time_limits.split(",")):
                figures = run_one(size, limit, args.seed, args.deterministic, Path(tmp))
                report.append(figures)
                rows.append((figures["hosts"], figures["requests"], figures["time_limit_s"], figures["wall_s"],
                             figures["limit_s"], "yes" if figures["within_limit"] else "NO", figures["peak_rss_mib"],
                             figures["status"], figures["gap"], figures["placed"], figures["ffd_placed"],
                             (figures["objective"] / figures["ffd_objective"] - 1) * 100, figures["cap_fired"],
                             figures["solver"], figures["violations"]))
                print(f"{size} hosts, T = {limit:g} s: {figures['wall_s']} s", file=sys.stderr)
    mode = "deterministic" if args.deterministic else "wall-clock"
    print_table(f"Scale through `shardplan plan` ({mode} budgets, 2 workers; target wall ≤ 1.1 T + 5 s, ≤ 4 GiB)",
                ["hosts", "requests", "T s", "wall s", "1.1T+5", "within", "peak MiB", "status", "gap", "placed",
                 "FFD placed", "objective % vs FFD", "cap fired", "solver", "violations"], rows, digits=3)
    name = "scale_deterministic" if args.deterministic else "scale"
    path = write_json_atomic(results_path(name), {"time_limits_s": args.time_limits, "deterministic": args.deterministic,
                                                  "runs": report})
    print(f"wrote {path}")
    return 1 if any(r["violations"] or not r["within_limit"] for r in report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
