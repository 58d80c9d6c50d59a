"""What-if on the demo: drain one rack, fail zone 2, web demand +30%, add 10 GPU hosts.

The base is the demo planned from scratch; each scenario edits the base's inputs and is planned as an
edit of its placement (`shardplan whatif`), in a plan directory of its own that must pass the checker.
Printed: the comparison (placed requests and priority-weighted demand, running requests now unplaced,
moves mandatory / voluntary, moved GiB, hosts freed, active cost) and the moves each scenario caused,
by kind and reason; JSON in benchmarks/results/whatif.json.

    python benchmarks/whatif.py [--time-limit 30]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402
from shardplan.data.generator import demo_fleet  # noqa: E402
from shardplan.plandir import read_plan_dir  # noqa: E402
from shardplan.planner.engine import plan  # noqa: E402
from shardplan.planner.report.checker import check_plan_dir  # noqa: E402
from shardplan.planner.report.export import write_plan_dir  # noqa: E402
from shardplan.planner.validate.options import PlanOptions  # noqa: E402
from shardplan.planner.whatif import base_options, read_scenarios, run_whatif  # noqa: E402


def scenario_file(hosts: pl.DataFrame, folder: Path) -> Path:
    """The four scenarios of the issue; the rack drained is the up rack holding most hosts of zone 1."""
    rack = (hosts.filter((pl.col("status") == "up") & (pl.col("zone") == "z1")).group_by("rack").len()
            .sort(["len", "rack"], descending=[True, False])["rack"][0])
    path = folder / "scenarios.toml"
    path.write_text(f'''[[scenario]]
name = "drain one rack"
drain_racks = ["{rack}"]

[[scenario]]
name = "fail zone 2"
fail_zones = ["z2"]

[[scenario]]
name = "web demand +30%"
[[scenario.demand]]
app_type = "web"
factor = 1.3

[[scenario]]
name = "add 10 GPU hosts"
[[scenario.add_hosts]]
class = "gpu"
count = 10
''')
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per plan (base and each scenario)")
    args = parser.parse_args(argv)
    hosts, requests = demo_fleet()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = plan(hosts, requests, PlanOptions(time_limit_s=args.time_limit))
        write_plan_dir(folder / "base", hosts=hosts, requests=requests, shards=base.shards,
                       requests_out=base.requests_out, plan_json=base.plan_json)
        base_dir = read_plan_dir(folder / "base")
        scenarios = read_scenarios(scenario_file(hosts, folder), base_dir, base_options(base_dir))
        began = time.perf_counter()
        table = run_whatif(folder / "base", scenarios, folder / "out", args.time_limit * len(scenarios), began)
        moves = []
        checked = {}
        for scenario in scenarios:
            out = folder / "out" / scenario.slug
            checked[scenario.name] = len(check_plan_dir(out))
            kinds = pl.read_parquet(out / "moves.parquet").group_by("kind", "reason").agg(
                pl.col("request_id").n_unique().alias("requests"), pl.len().alias("parts"),
                (pl.col("ram_gib") + pl.col("storage_gib")).sum().alias("gib"))
            moves += [{"scenario": scenario.name, **row} for row in kinds.sort(
                ["requests", "reason"], descending=[True, False]).head(8).iter_rows(named=True)]
    print_table("What-if on the demo (Δ: scenario − base; every scenario planned as an edit of the base)",
                ["scenario", "placed", "unplaced", "prio-weighted demand", "Δ demand", "running now unplaced",
                 "moves mandatory", "moves voluntary", "evicted", "lost", "moved GiB", "hosts freed", "active $/h",
                 "Δ $/h", "wall s", "violations"],
                [[r["scenario"], r["placed"], r["unplaced"], r["placed_demand"], r["placed_demand_delta"],
                  r["newly_unplaced_running"], r["moves_mandatory"], r["moves_voluntary"], r["evicted"], r["lost"],
                  r["moved_gib"], r["hosts_freed"], r["active_cost"], r["active_cost_delta"], r["wall_s"],
                  checked.get(r["scenario"], 0)] for r in table.iter_rows(named=True)])
    print_table("The moves each scenario caused (largest reasons first, 8 per scenario)",
                ["scenario", "kind", "reason", "requests", "parts", "GiB"],
                [[m["scenario"], m["kind"], m["reason"], m["requests"], m["parts"], m["gib"]] for m in moves])
    write_json_atomic(results_path("whatif"), {"time_limit_s": args.time_limit, "comparison": table.to_dicts(),
                                               "moves": moves, "violations": checked})


if __name__ == "__main__":
    main()
