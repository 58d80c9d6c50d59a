"""Choose shardplan's router options on data the routing benchmark does not score: the 15 Nextflow (nf-core)
executions of WfCommons, each on the 2-, 3- and 4-part VMs of benchmarks/routing.py with live load (Alibaba 2018,
other host windows than the benchmark's). For each (data_s_per_gib, locality_slack) the median makespan and remote
GiB against round-robin's; the chosen pair is the one with the lowest median makespan ratio among those whose
median remote-GiB ratio is ≤ 0.5, else the lowest remote ratio.

    python benchmarks/routing_tune.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, require_shared_dir, results_path, write_json_atomic  # noqa: E402
from benchmarks.routing import plan_vms  # noqa: E402

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
SLACKS = (0.02, 0.1, 0.25)


def main() -> int:
    from shardplan.executors.routing.load import alibaba_2018_load
    from shardplan.executors.routing.simulate import route
    from shardplan.executors.routing.tasks import validate_tasks, wfcommons_runs, wfcommons_tasks

    datasets = require_shared_dir() / "datasets"
    with tempfile.TemporaryDirectory(prefix="shardplan-tune-") as scratch:
        vms = plan_vms(Path(scratch))
    runs = wfcommons_runs(datasets).filter(pl.col("runtime_system") != "Makeflow")
    cases = []
    for k, row in enumerate(runs.iter_rows(named=True)):
        vm = vms[(2, 3, 4)[k % 3]]
        tasks = validate_tasks(wfcommons_tasks(datasets, row["instance"]), row["instance"], vm.max_part_vcpu, 0)
        loads = alibaba_2018_load(datasets, len(vm.parts), offset=k + 9, start_s=5400.0 * k + 200000.0)
        rr = route(vm, tasks, "round_robin", loads)
        cases.append((vm, tasks, loads, rr))
    rows = []
    for weight in WEIGHTS:
        for slack in SLACKS:
            span, remote = [], []
            for vm, tasks, loads, rr in cases:
                from shardplan.executors.routing.policies import get_policy
                from shardplan.executors.routing.simulate import Simulation

                ours = Simulation(vm, tasks, get_policy("shardplan", vm, data_s_per_gib=weight,
                                                        locality_slack=slack), loads).run()
                span.append(ours.makespan_s / rr.makespan_s)
                if rr.remote_gib > 0:
                    remote.append(ours.remote_gib / rr.remote_gib)
            rows.append({"data_s_per_gib": weight, "locality_slack": slack, "makespan_ratio": float(np.median(span)),
                         "remote_ratio": float(np.median(remote)) if remote else None})
    fine = [r for r in rows if r["remote_ratio"] is not None and r["remote_ratio"] <= 0.5]
    chosen = min(fine, key=lambda r: r["makespan_ratio"]) if fine else min(rows, key=lambda r: r["remote_ratio"] or 9)
    print_table("shardplan router options on the Nextflow runs (medians against round-robin)",
                ("data_s_per_gib", "locality_slack", "makespan ratio", "remote GiB ratio"),
                [[r["data_s_per_gib"], r["locality_slack"], r["makespan_ratio"], r["remote_ratio"]] for r in rows],
                digits=3)
    print(f"chosen: {chosen}")
    write_json_atomic(results_path("routing_tune"), {"runs": len(cases), "grid": rows, "chosen": chosen})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
