"""Scale: plan seeded fleets through the CLI, `shardplan plan --time-limit T`, and time the whole command.

For each size (hosts, 2.5 requests per host), each time limit and each number of partitions, the inputs
are written as Parquet and `shardplan plan --partitions K` runs in its own process: its wall time is
measured from outside (process start to exit, so reading, the Dask cluster, the cells, search, bound,
check and export all count); memory is sampled every 0.2 s over the command's whole process tree (the
Dask workers included): the largest single process and the sum. K = 1 is the monolithic plan; FFD is
first-fit decreasing in the same run. Figures beside it: objective, placed priority-weighted demand
(the objective's unplaced weights of the placed requests) against FFD, gap and which bound gave it,
whether the wall-clock cap fired, and `shardplan check` on the written plan. Targets: wall ≤ 1.1 × T + 5 s
(issue 10); at 10,000 hosts × 25,000 requests ≤ 600 s and ≤ 8 GiB in all; at 2,000 × 5,000 partitioned
within 1.5% of the monolithic objective at ≤ 1/3 of its wall time; ≥ 5% more placed weighted demand
than FFD at every size (issue 15).

    python benchmarks/scale.py [--sizes 500,2000] [--time-limits 120] [--partitions 1,2,4,8]
                               [--dask-workers 2] [--deterministic] [--data DIR] [--name scale]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402


def sample_tree(pid: int, peak: dict[str, float], stop) -> None:
    """Poll the RSS of process `pid` and its descendants until `stop` is set: the largest single process
    and the largest sum seen (MiB)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total, single = 0.0, 0.0
        try:
            for proc in [root, *root.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                total += rss
                single = max(single, rss)
        except psutil.Error:
            break
        peak["total"], peak["single"] = max(peak["total"], total), max(peak["single"], single)
        stop.wait(0.2)


def placed_weight(plan_json: dict, requests) -> tuple[float, float]:
    """Placed priority-weighted demand of the plan and of FFD (solver units): every request's unplaced weight
    less what each left unplaced (requests no host can take count for neither)."""
    from shardplan.planner.engine import unplaced_weights
    from shardplan.planner.validate.options import PlanOptions

    options = PlanOptions.recorded(plan_json["options"])
    scale = 1000.0  # COST_UNITS_PER_DOLLAR: plan.json's terms are in $
    terms, ffd = plan_json["objective_terms"], plan_json["baseline_ffd"]
    reachable = float(unplaced_weights(requests, options).sum()) - terms["ruled_out_penalty_not_in_total"] * scale
    return reachable - terms["unplaced_penalty"] * scale, reachable - ffd["unplaced_penalty"] * scale


def run_one(n_hosts: int, time_limit: float, seed: int, deterministic: bool, workdir: Path, partitions: int = 1,
            dask_workers: int | None = None, data_dir: Path | None = None) -> dict:
    """Generate the fleet (once per size), run the CLI on it in a child process, read back its plan."""
    import threading

    from shardplan.data.generator import generate_fleet
    from shardplan.planner.report.checker import check_plan_dir

    data = (data_dir or workdir) / f"{n_hosts}-seed{seed}"
    if not (data / "requests.parquet").exists():  # generating 10,000 hosts takes minutes: --data keeps them
        hosts, requests = generate_fleet(n_hosts, int(2.5 * n_hosts), seed=seed)
        data.mkdir(parents=True, exist_ok=True)
        hosts.write_parquet(data / "hosts.parquet")
        requests.write_parquet(data / "requests.parquet")
    import polars as pl

    requests = pl.read_parquet(data / "requests.parquet")
    folder = workdir / f"{n_hosts}-{time_limit:g}-k{partitions}"
    env = {**os.environ, "SHARDPLAN_DETERMINISTIC": "1" if deterministic else "0"}
    command = [sys.executable, "-m", "shardplan", "plan", "--hosts", str(data / "hosts.parquet"),
               "--requests", str(data / "requests.parquet"), "--out", str(folder / "plan"),
               "--time-limit", f"{time_limit:g}", "--workers", "2", "--seed", "0", "--json",
               "--partitions", str(partitions)] + ([] if dask_workers is None else ["--dask-workers", str(dask_workers)])
    peak = {"total": 0.0, "single": 0.0}
    stop = threading.Event()
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    sampler = threading.Thread(target=sample_tree, args=(child.pid, peak, stop), daemon=True)
    sampler.start()
    _, stderr = child.communicate()
    wall = time.perf_counter() - began
    stop.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"shardplan plan exited {child.returncode}: {stderr[-3000:]}")
    plan_json = json.loads((folder / "plan" / "plan.json").read_text())
    violations = check_plan_dir(folder / "plan")
    budget = plan_json["budget"]
    placed_w, ffd_w = placed_weight(plan_json, requests)
    lp = plan_json.get("lp_relaxation") or {}
    parted = plan_json.get("partitioned") or {}
    return {"hosts": n_hosts, "requests": requests.height, "time_limit_s": time_limit, "deterministic": deterministic,
            "partitions": partitions, "dask_workers": parted.get("workers"),
            "wall_s": round(wall, 1), "limit_s": round(1.1 * time_limit + 5, 1), "within_limit": wall <= 1.1 * time_limit + 5,
            "peak_rss_mib_process": round(peak["single"], 1), "peak_rss_mib_total": round(peak["total"], 1),
            "status": plan_json["status"], "solver": plan_json["solver"], "objective": plan_json["objective"],
            "best_bound": plan_json["best_bound"], "gap": plan_json["gap"],
            "bound": lp.get("solver") if lp.get("best_bound") is not None else None, "placed": plan_json["placed"],
            "placed_weight": placed_w, "ffd_placed_weight": ffd_w,
            "placed_weight_vs_ffd_pct": round((placed_w / ffd_w - 1) * 100, 2) if ffd_w > 0 else None,
            "ffd_placed": plan_json["baseline_ffd"]["placed"], "ffd_objective": plan_json["baseline_ffd"]["objective"],
            "pairs": plan_json["candidates"]["pairs"], "cap_fired": budget["wall_clock_cap_fired"],
            "cells": parted.get("cells"), "merged_placed": parted.get("merged_placed"),
            "phases": budget["phases"], "violations": len(violations)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--time-limits", default="120")
    parser.add_argument("--partitions", default="1,2,4,8", help="K values; 1 is the monolithic plan")
    parser.add_argument("--dask-workers", type=int, default=None, help="default: one per core, at most K")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic budgets (reproducible; the wall clock only caps); default: wall-clock limits")
    parser.add_argument("--data", type=Path, default=None, help="folder that keeps the generated fleets between runs")
    parser.add_argument("--name", default=None, help="results file name (default scale, or scale_deterministic)")
    args = parser.parse_args(argv)
    rows, report = [], []
    with tempfile.TemporaryDirectory(prefix="shardplan-scale-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            for limit in (float(t) for t in args.time_limits.split(",")):
                for k in (int(p) for p in args.partitions.split(",")):
                    figures = run_one(size, limit, args.seed, args.deterministic, Path(tmp), k, args.dask_workers,
                                      args.data)
                    report.append(figures)
                    mono = next((r for r in report if r["hosts"] == size and r["time_limit_s"] == limit
                                 and r["partitions"] == 1), None)
                    vs_mono = None if mono is None else (figures["objective"] / mono["objective"] - 1) * 100
                    figures["objective_vs_monolithic_pct"] = None if vs_mono is None else round(vs_mono, 3)
                    rows.append((figures["hosts"], figures["requests"], k, figures["time_limit_s"], figures["wall_s"],
                                 "yes" if figures["within_limit"] else "NO", figures["peak_rss_mib_process"],
                                 figures["peak_rss_mib_total"], figures["objective"],
                                 (figures["objective"] / figures["ffd_objective"] - 1) * 100, vs_mono,
                                 figures["placed"], figures["ffd_placed"], figures["placed_weight_vs_ffd_pct"],
                                 figures["gap"], figures["bound"] or "—", figures["cap_fired"], figures["violations"]))
                    print(f"{size} hosts, T = {limit:g} s, K = {k}: {figures['wall_s']} s", file=sys.stderr)
    mode = "deterministic" if args.deterministic else "wall-clock"
    print_table(f"Scale through `shardplan plan --partitions K` ({mode} budgets; K = 1: monolithic; FFD in the same "
                f"run; target wall ≤ 1.1 T + 5 s)",
                ["hosts", "requests", "K", "T s", "wall s", "within", "peak MiB/proc", "peak MiB all", "objective $",
                 "obj % vs FFD", "obj % vs K=1", "placed", "FFD placed", "placed weight % vs FFD", "gap", "bound",
                 "cap fired", "violations"], rows, digits=3)
    name = args.name or ("scale_deterministic" if args.deterministic else "scale")
    path = write_json_atomic(results_path(name), {"time_limits_s": args.time_limits, "deterministic": args.deterministic,
                                                  "partitions": args.partitions, "runs": report})
    print(f"wrote {path}")
    return 1 if any(r["violations"] or not r["within_limit"] for r in report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
